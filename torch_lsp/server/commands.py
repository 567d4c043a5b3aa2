"""Training commands: ``torch-lsp.train``, ``.stopTraining``, ``.listRuns``, ``.metrics``.

The server only spawns processes and reads files (training/runner.py); torch is never imported
here. A run is followed by an asyncio task that polls the run folder: each record becomes a
``$/progress`` report (throttled) and a ``torchLsp/metrics`` notification, output lines go to
``window/logMessage``, and a failure becomes a message plus a diagnostic on the failing line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcInvalidParams
from pygls.uris import from_fs_path, to_fs_path

from torch_lsp.analysis.facts import Finding, Position, Severity, Span
from torch_lsp.server.convert import to_diagnostic
from torch_lsp.training import bounds, store
from torch_lsp.training.runner import RunSpec, TrainingRun, run_overview, start_run, summary_for
from torch_lsp.training.summary import progress_message, render_markdown

if TYPE_CHECKING:
    from torch_lsp.server.app import TorchLanguageServer

log = logging.getLogger(__name__)

TRAIN, STOP, LIST_RUNS, METRICS = "torch-lsp.train", "torch-lsp.stopTraining", "torch-lsp.listRuns", "torch-lsp.metrics"
METRICS_NOTIFICATION = "torchLsp/metrics"
POLL_S = 0.2
PROGRESS_EVERY_S = 0.25
FAILURE_CODE = "training-error"
FINDINGS_SOURCE = "training"  # the producer name in DocState.findings


@dataclass
class LiveRun:
    run: TrainingRun
    token: str | None = None
    task: asyncio.Task | None = None


class Trainer:
    """The server's training runs: live ones in memory, all of them in the run store."""

    def __init__(self, ls: "TorchLanguageServer") -> None:
        self.ls = ls
        self.live: dict[str, LiveRun] = {}
        # uri -> (finding, document version it was computed for, None: not open at the time)
        self.failures: dict[str, tuple[Finding, int | None]] = {}
        self.scriptless_base: Path | None = None  # no workspace folder: where runs went last

    # -- where ------------------------------------------------------------------------------
    @property
    def workspace(self) -> Path | None:
        return self.ls.root_path

    def runs_dir(self, script: str | None = None) -> Path:
        """The workspace's store; without a workspace, the folder of the script trained last."""
        if script and not self.workspace:
            self.scriptless_base = Path(script).parent
        base = self.workspace or self.scriptless_base
        return store.runs_dir_for(base, self.ls.settings.training.runs_dir)

    def project_python(self) -> str:
        """Training runs default to the interpreter shape analysis uses: the project's."""
        from torch_lsp.shapes.interpreter import find_interpreter

        return find_interpreter(self.ls.settings.execution.python, self.workspace).path

    def resolve_script(self, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("torch-lsp.train needs a script: a path or a file:// URI")
        path = to_fs_path(value) if value.startswith("file:") else value
        if path and not os.path.isabs(path) and self.workspace:
            path = str(self.workspace / path)
        if not path or not os.path.isfile(path):
            raise ValueError(f"training script not found: {value}")
        return bounds.check_script(path, self.workspace_folders(), self.open_files())

    def workspace_folders(self) -> list[Path]:
        folders = [Path(to_fs_path(f.uri)) for f in self.ls.workspace.folders.values() if to_fs_path(f.uri)]
        return folders or ([self.workspace] if self.workspace else [])

    def open_files(self) -> list[str]:
        return [path for uri in self.ls.documents.states if (path := to_fs_path(uri))]

    # -- commands ---------------------------------------------------------------------------
    async def train(self, arguments: list) -> dict:
        spec = self.spec_from(arguments)
        runs_dir = self.runs_dir(spec.script)
        # On the event loop's thread, not a pool thread: the run's launcher is told to end when
        # the thread that started it ends (PR_SET_PDEATHSIG), and this one lives as long as we do.
        run = start_run(spec, runs_dir)
        live = LiveRun(run)
        self.live[run.run_id] = live
        self._forget_failure(spec.script)
        live.task = asyncio.ensure_future(self._follow(live))
        self._log(f"[{run.run_id}] started: {' '.join(run.record.info['command'])}")
        return {"runId": run.run_id, "runDir": str(run.record.path), "script": spec.script}

    def spec_from(self, arguments: list) -> RunSpec:
        options = arguments[0] if arguments and isinstance(arguments[0], dict) else None
        if options is None:  # positional: script, args, python, device, nproc, env, maxSteps
            names = ["script", "args", "python", "device", "nproc", "env", "maxSteps"]
            options = dict(zip(names, arguments or []))
        script = self.resolve_script(options.get("script"))
        args = options.get("args") or []
        env = options.get("env") or {}
        if not isinstance(args, list) or not isinstance(env, dict):
            raise ValueError("`args` must be a list of strings and `env` an object")
        inside = self.workspace and Path(script).is_relative_to(self.workspace)
        nproc = _positive_int(options.get("nproc"), "nproc")
        nnodes = _positive_int(options.get("nnodes"), "nnodes")
        bounds.check_scale(nproc, nnodes, options.get("rdzvEndpoint"))
        return RunSpec(
            script=script, args=[str(a) for a in args],
            python=options.get("python") or self.ls.settings.training.python or self.project_python(),
            device=options.get("device"), nproc=nproc, nnodes=nnodes,
            node_rank=options.get("nodeRank"), rdzv_endpoint=options.get("rdzvEndpoint"),
            rdzv_id=options.get("rdzvId"), env={str(k): str(v) for k, v in env.items()},
            max_steps=_positive_int(options.get("maxSteps"), "maxSteps", default=None),
            cwd=str(self.workspace) if inside else None,
        )

    async def stop(self, arguments: list) -> dict:
        run_id = _run_id_argument(arguments)
        live = self.live.get(run_id) if run_id else self._latest_live()
        if live is None:
            raise ValueError(f"no running training with id {run_id!r}" if run_id else "no training is running")
        pids = await asyncio.to_thread(live.run.stop)  # returns once the process tree has ended
        if live.task is not None:
            try:  # the summary and the final notification, unless the chart takes long to draw
                await asyncio.wait_for(asyncio.shield(live.task), timeout=10)
            except asyncio.TimeoutError:
                log.info("run %s stopped; its summary is still being written", live.run.run_id)
        return {"runId": live.run.run_id, "stopped": True, "pids": pids}

    def list_runs(self) -> list[dict]:
        return [run_overview(record, self.live_run(record.run_id))
                for record in store.list_runs(self.runs_dir())]

    async def metrics(self, arguments: list) -> dict:
        run_id = _run_id_argument(arguments)
        try:
            record = store.find_run(self.runs_dir(), run_id)
        except store.AmbiguousRunId as ambiguous:
            raise ValueError(f"{ambiguous}; give more of the id") from None
        if record is None:
            raise ValueError(f"no run {run_id!r}" if run_id else "no training runs yet")
        summary = await asyncio.to_thread(summary_for, record, self.live_run(record.run_id))
        chart = summary.get("chart")
        chart_uri = from_fs_path(chart) if chart else None
        if chart_uri and _client_shows_documents(self.ls):
            try:
                await self.ls.window_show_document_async(
                    types.ShowDocumentParams(uri=chart_uri, external=False, take_focus=False))
            except Exception as error:  # noqa: BLE001 - the chart path is returned anyway
                log.info("window/showDocument failed: %s", error)
        return {"runId": record.run_id, "summary": summary, "markdown": render_markdown(summary),
                "chart": chart, "chartUri": chart_uri}

    def stop_all(self) -> None:
        """The server is going away: its runs end with it, and their run.json says so."""
        for live in list(self.live.values()):
            live.run.interrupt("the language server exited")

    # -- following a run --------------------------------------------------------------------
    async def _follow(self, live: LiveRun) -> None:
        run = live.run
        live.token = await self._begin_progress(run)
        last_report = 0.0
        try:
            while True:
                events = await asyncio.to_thread(run.poll)
                output: dict[str, list[str]] = {"stdout": [], "stderr": []}
                for event in events:
                    if event[0] == "record":
                        self.ls.protocol.notify(METRICS_NOTIFICATION, {"runId": run.run_id, "record": event[1]})
                        if event[1].get("kind") == "step" and time.monotonic() - last_report >= PROGRESS_EVERY_S:
                            last_report = time.monotonic()
                            self._report(live, event[1])
                    elif event[0] == "output":
                        output[event[1]].append(event[2])
                for lines in output.values():
                    if lines:
                        self._log("\n".join(f"[{run.run_id}] {line}" for line in lines))
                if run.finished:
                    break
                if live.token and self._cancelled(live.token) and not run.stop_requested:
                    self._log(f"[{run.run_id}] cancelled from the editor: stopping")
                    await asyncio.to_thread(run.stop)
                await asyncio.sleep(POLL_S)
            self._finished(live, run.summary or {})
        except Exception:  # noqa: BLE001 - a bug here must not leave a progress bar spinning
            log.exception("following run %s failed", run.run_id)
            if live.token:
                self.ls.work_done_progress.end(live.token, types.WorkDoneProgressEnd(message="error"))

    async def _begin_progress(self, run: TrainingRun) -> str | None:
        window = self.ls.client_capabilities.window
        if not (window and window.work_done_progress):
            return None
        token = f"torch-lsp-train-{uuid.uuid4()}"
        try:
            await self.ls.work_done_progress.create_async(token)
        except Exception as error:  # noqa: BLE001 - progress is optional; metrics still flow
            log.info("window/workDoneProgress/create failed: %s", error)
            return None
        self.ls.work_done_progress.begin(token, types.WorkDoneProgressBegin(
            title=f"Training {Path(run.record.info['script']).name}", cancellable=True,
            message="starting", percentage=0))
        return token

    def _report(self, live: LiveRun, record: dict) -> None:
        if not live.token:
            return
        message, percentage = progress_message(record, live.run.spec.max_steps)
        self.ls.work_done_progress.report(live.token, types.WorkDoneProgressReport(
            message=message, percentage=percentage, cancellable=True))

    def _cancelled(self, token: str) -> bool:
        future = self.ls.work_done_progress.tokens.get(token)
        return bool(future and future.cancelled())

    def _finished(self, live: LiveRun, summary: dict) -> None:
        run = live.run
        status = summary.get("status")
        loss = summary.get("final_loss")
        text = f"{status}" + (f" · loss {loss:.4g}" if isinstance(loss, (int, float)) else "")
        if summary.get("input_bound"):
            text += f" · {summary['input_bound']}"
        if live.token:
            self.ls.work_done_progress.end(live.token, types.WorkDoneProgressEnd(message=text))
        self.ls.protocol.notify(METRICS_NOTIFICATION, {"runId": run.run_id, "final": True, "summary": summary})
        self._log(f"[{run.run_id}] {text}\n{render_markdown(summary)}")
        if status == "failed":
            self._report_failure(run, summary.get("error") or {})
        code_lens = self.ls.client_capabilities.workspace and self.ls.client_capabilities.workspace.code_lens
        if code_lens and code_lens.refresh_support:
            self.ls.workspace_code_lens_refresh(None)

    def _report_failure(self, run: TrainingRun, error: dict) -> None:
        where = f" ({os.path.basename(error['file'])}:{error['line']})" if error.get("file") else ""
        message = f"Training failed: {error.get('type', 'error')}: {error.get('message', '')}{where}"
        self.ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Error, message=message))
        if not error.get("file") or not error.get("line"):
            return
        uri = from_fs_path(error["file"])
        lines = self._lines(uri, error["file"])
        line = int(error["line"]) - 1
        if not 0 <= line < len(lines):
            return
        text = lines[line]
        start = len(text) - len(text.lstrip())
        finding = Finding(FAILURE_CODE, f"{error.get('type')}: {error.get('message')} (training run {run.run_id})",
                          Span(Position(line, start), Position(line, len(text))), Severity.ERROR)
        state = self.ls.documents.get(uri)
        self.failures[uri] = (finding, state.version if state else None)
        if state is not None:
            self._attach(state, finding)
            self.ls.publish(uri)
        else:
            self.ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(
                uri=uri, diagnostics=[self._diagnostic(finding, lines, uri)]))

    def on_analysis(self, ls: "TorchLanguageServer", state) -> None:
        """Document listener: keep a run's failure on a file opened (unchanged) after it failed."""
        pending = self.failures.get(state.uri)
        if pending is None:
            return
        finding, version = pending
        if version is None:  # failed while the file was closed: it is the text we just read
            self.failures[state.uri] = (finding, state.version)
        elif version != state.version:  # edited since: the line may have moved, drop it
            del self.failures[state.uri]
            return
        self._attach(state, finding)
        ls.publish(state.uri)

    def _attach(self, state, finding: Finding) -> None:
        state.findings[FINDINGS_SOURCE] = [finding]
        state.findings_version[FINDINGS_SOURCE] = state.version

    def _forget_failure(self, script: str) -> None:
        for uri in [u for u, (f, _) in self.failures.items() if to_fs_path(u) == script]:
            del self.failures[uri]
            state = self.ls.documents.get(uri)
            if state is not None:
                state.findings.pop(FINDINGS_SOURCE, None)
                self.ls.publish(uri)
            else:
                self.ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))

    def _diagnostic(self, finding: Finding, lines: list[str], uri: str) -> types.Diagnostic:
        diagnostic = to_diagnostic(finding, lines, uri, self.ls.settings.docs_url, self.ls.position_encoding)
        docs = self.ls.settings.docs_url.rsplit("/", 1)[0] + "/commands.md#when-a-run-fails"
        diagnostic.code_description = types.CodeDescription(href=docs)
        return diagnostic

    def _lines(self, uri: str, path: str) -> list[str]:
        if uri in self.ls.documents:
            return [line.rstrip("\r\n") for line in self.ls.workspace.get_text_document(uri).lines]
        try:
            return Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []

    # -- helpers ----------------------------------------------------------------------------
    def _log(self, message: str) -> None:
        self.ls.window_log_message(types.LogMessageParams(type=types.MessageType.Log, message=message))

    def live_run(self, run_id: str) -> TrainingRun | None:
        live = self.live.get(run_id)
        return live.run if live else None

    def _latest_live(self) -> LiveRun | None:
        running = [live for live in self.live.values() if not live.run.finished]
        return running[-1] if running else None


def _positive_int(value, name: str, default: int | None = 1) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    return value


def _run_id_argument(arguments: list) -> str | None:
    if not arguments:
        return None
    first = arguments[0]
    if isinstance(first, dict):
        first = first.get("runId")
    return str(first) if first else None


def _client_shows_documents(ls) -> bool:
    window = ls.client_capabilities.window
    return bool(window and window.show_document and window.show_document.support)


def register(ls: "TorchLanguageServer") -> None:
    trainer = Trainer(ls)
    ls.trainer = trainer
    ls.shutdown_hooks.append(trainer.stop_all)
    ls.documents.listeners.append(trainer.on_analysis)

    @ls.command(TRAIN)
    async def train(ls, *arguments):  # no annotations: pygls resolves them
        try:
            return await trainer.train(list(arguments))
        except ValueError as error:  # bad arguments: the spec's InvalidParams, with our message
            raise JsonRpcInvalidParams(str(error)) from error

    @ls.command(STOP)
    async def stop_training(ls, *arguments):  # no annotations: pygls resolves them
        return await trainer.stop(list(arguments))

    @ls.command(LIST_RUNS)
    async def list_runs(ls, *arguments):  # no annotations: pygls resolves them
        return await asyncio.to_thread(trainer.list_runs)

    @ls.command(METRICS)
    async def metrics(ls, *arguments):  # no annotations: pygls resolves them
        return await trainer.metrics(list(arguments))
