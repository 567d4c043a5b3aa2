"""Start a training run in a child process and follow it through its files.

The caller (language server or CLI) never imports torch: it spawns ``launch.py`` (directly or
through ``python -m torch.distributed.run``), then calls ``TrainingRun.poll()`` now and then to
get what is new: metric records, output lines, and finally the exit with its summary. All
communication goes through the run folder, so the same code reads a run that is live, ended,
or from before a restart.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from torch_lsp.training import store
from torch_lsp.training.artifacts import drawn_files, redraw_in_background, render_artifacts
from torch_lsp.training.process_tree import kill_tree
from torch_lsp.training.summary import compute_summary, short_label

LAUNCHER = Path(__file__).with_name("launch.py")
_RANK_PREFIX = re.compile(r"^\[(?:default)?rank\d+\]: ?")
_TRACEBACK_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')
_EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)):?\s?(?P<message>.*)$")


@dataclass
class RunSpec:
    """What to run: the arguments of ``torch-lsp.train`` and ``torch-lsp train``."""

    script: str
    args: list[str] = field(default_factory=list)
    python: str | None = None  # interpreter; default: the one running torch-lsp
    device: str | None = None  # "cpu", "cuda", "cuda:1"; None leaves the script's choice
    nproc: int = 1
    nnodes: int = 1
    node_rank: int | None = None
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    max_steps: int | None = None
    cwd: str | None = None
    record_interval_s: float | None = None

    def command(self) -> list[str]:
        python = self.python or sys.executable
        script = os.path.abspath(self.script)
        if self.nproc <= 1 and self.nnodes <= 1:
            return [python, str(LAUNCHER), script, *self.args]
        launcher = [python, "-m", "torch.distributed.run", f"--nproc_per_node={self.nproc}",
                    f"--nnodes={self.nnodes}", "--max_restarts=0"]
        if self.rdzv_endpoint:
            launcher += ["--rdzv_backend=c10d", f"--rdzv_endpoint={self.rdzv_endpoint}",
                         f"--rdzv_id={self.rdzv_id or 'torch-lsp'}"]
            if self.node_rank is not None:
                launcher.append(f"--node_rank={self.node_rank}")
        else:
            launcher.append("--standalone")
        return [*launcher, str(LAUNCHER), script, *self.args]

    def environment(self, run_dir: Path, run_id: str) -> dict[str, str]:
        env = {**os.environ, **{str(k): str(v) for k, v in self.env.items()}}
        env.update(PYTHONUNBUFFERED="1", TORCH_LSP_RUN_DIR=str(run_dir), TORCH_LSP_RUN_ID=run_id,
                   TORCH_LSP_OWNER_PID=str(os.getpid()))
        if self.max_steps:
            env["TORCH_LSP_MAX_STEPS"] = str(self.max_steps)
        if self.record_interval_s is not None:
            env["TORCH_LSP_RECORD_INTERVAL"] = str(self.record_interval_s)
        if self.device:
            env["TORCH_LSP_DEVICE"] = self.device
            if self.device == "cpu":
                env["CUDA_VISIBLE_DEVICES"] = ""  # scripts that pick "cuda if available" get CPU
            elif self.device.startswith("cuda:"):
                env["CUDA_VISIBLE_DEVICES"] = self.device.split(":", 1)[1]
        return env


class TrainingRun:
    """One live run. ``poll()`` returns new events; the last one is ("exit", summary)."""

    def __init__(self, record: store.RunRecord, process: subprocess.Popen, spec: RunSpec) -> None:
        self.record = record
        self.process = process
        self.spec = spec
        self.stop_requested = False
        self.interrupted: str | None = None  # why, when the run is ended because its owner goes
        self.finished = False
        self.summary: dict | None = None
        self.records: list[dict] = []
        self._metrics = store.LineTail(record.file(store.METRICS_FILE))
        self._stdout = store.LineTail(record.file(store.STDOUT_FILE))
        self._stderr = store.LineTail(record.file(store.STDERR_FILE))

    @property
    def run_id(self) -> str:
        return self.record.run_id

    def poll(self) -> list[tuple]:
        if self.finished:
            return []
        exit_code = self.process.poll()
        events = self._read_new()
        if exit_code is not None:
            events += self._read_new()  # whatever was written between the two reads
            self.summary = self._finish(exit_code)
            events.append(("exit", self.summary))
        return events

    def _read_new(self) -> list[tuple]:
        events: list[tuple] = []
        for line in self._metrics.read_new():
            parsed = store.parse_record(line)
            if parsed is not None:
                self.records.append(parsed)
                events.append(("record", parsed))
        events += [("output", "stdout", line) for line in self._stdout.read_new()]
        events += [("output", "stderr", line) for line in self._stderr.read_new()]
        return events

    def stop(self, grace_s: float = 5.0) -> list[int]:
        """End the whole process tree; returns the pids that were signalled."""
        self.stop_requested = True
        if self.process.poll() is not None:
            return []
        return kill_tree(self.process.pid, grace_s, reap=self.process.poll)

    def interrupt(self, reason: str, grace_s: float = 0.3) -> None:
        """End the run because its owner (the server) is going away; run.json says so, whether
        or not the process is seen to exit in the short time left."""
        if self.finished:
            return
        self.interrupted = reason
        self.stop(grace_s)
        self.poll()
        if not self.finished:  # still tearing down: record the truth now, nobody will poll again
            self.record.info.update(status="interrupted", reason=reason, ended_at=time.time())
            store.save_info(self.record)

    def wait(self, timeout_s: float | None = None, interval_s: float = 0.1) -> dict | None:
        """Poll until the run ends (or timeout); returns the summary."""
        deadline = time.monotonic() + timeout_s if timeout_s else None
        while not self.finished:
            self.poll()
            if deadline and time.monotonic() > deadline:
                return None
            time.sleep(interval_s)
        return self.summary

    def current_summary(self) -> dict:
        return self.summary or compute_summary(self.record.info, self.records)

    def _finish(self, exit_code: int) -> dict:
        info = self.record.info
        info["exit_code"] = exit_code
        info["ended_at"] = time.time()
        if self.interrupted:
            info.update(status="interrupted", reason=self.interrupted)
        elif self.stop_requested:
            info["status"] = "stopped"
        else:
            info["status"] = "completed" if exit_code == 0 else "failed"
        if info["status"] == "failed" and not any(r.get("kind") == "error" for r in self.records):
            info["error"] = error_from_stderr(self.record.file(store.STDERR_FILE))
        store.save_info(self.record)
        # Only now: a reader that sees `finished` must also see the final status on disk.
        self.finished = True
        return finalize(self.record, self.records)


def finalize(record: store.RunRecord, records: list[dict] | None = None) -> dict:
    """Write summary.json, the chart and (if possible) TensorBoard files; return the summary."""
    if records is None:
        records = store.read_records(record.file(store.METRICS_FILE))
    summary = compute_summary(record.info, records)
    drawn = render_artifacts(record.path, chart_title(summary))
    summary.update(chart=drawn["chart"], chart_svg=drawn["svg"], tensorboard=drawn["tensorboard"])
    store.write_json(record.file(store.SUMMARY_FILE), summary)
    return summary


def chart_title(summary: dict) -> str:
    """`cifar10_seed.py · run 20261127-135616-cifar10_seed-7915 · completed · 160 steps`"""
    script = Path(summary.get("script") or "?").name
    return f"{script} · run {summary.get('run_id')} · {summary.get('status')} · {summary.get('steps') or 0:,} steps"


def error_from_stderr(path: Path) -> dict | None:
    """The last traceback's exception and innermost frame in a user file, from stderr.log."""
    from torch_lsp.training.epochs import EpochCounter

    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    frame, error, error_after_frame = None, None, None
    for line in lines:
        line = _RANK_PREFIX.sub("", line)  # torchrun may prefix worker lines with "[rank1]:"
        match = _TRACEBACK_FRAME.match(line)
        if match and EpochCounter.is_user_file(os.path.abspath(match["file"])):
            frame = (os.path.abspath(match["file"]), int(match["line"]))
            error_after_frame = None
            continue
        found = _EXCEPTION_LINE.match(line.strip())
        if found and not line.startswith(" "):
            error = {"type": found["type"].rsplit(".", 1)[-1], "message": found["message"]}
            if frame is not None and error_after_frame is None:
                # The exception that ended the user's traceback, not a launcher's later one
                # (torchrun's ChildFailedError follows the worker's own traceback).
                error_after_frame = error
    error = error_after_frame or error
    if error is None and frame is None:
        return None
    result = error or {"type": "Error", "message": lines[-1] if lines else ""}
    result.update(file=frame[0] if frame else None, line=frame[1] if frame else None)
    return result


def start_run(spec: RunSpec, runs_dir: Path) -> TrainingRun:
    """Create the run folder and start the process; raises FileNotFoundError/OSError."""
    script = os.path.abspath(spec.script)
    if not os.path.isfile(script):
        raise FileNotFoundError(f"training script not found: {spec.script}")
    record = store.create_run(runs_dir, script, {
        "script": script, "args": list(spec.args), "python": spec.python or sys.executable,
        "device": spec.device, "nproc": spec.nproc, "nnodes": spec.nnodes,
        "max_steps": spec.max_steps, "env": sorted(spec.env), "status": "running",
        "started_at": time.time(),
    })
    command = spec.command()
    record.info["command"] = command
    with open(record.file(store.STDOUT_FILE), "wb") as out, open(record.file(store.STDERR_FILE), "wb") as err:
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                cwd=spec.cwd or os.path.dirname(script),
                env=spec.environment(record.path, record.run_id), start_new_session=True,
                preexec_fn=_end_with_owner,
            )
        except OSError as exc:
            record.info.update(status="failed", error={"type": type(exc).__name__, "message": str(exc)})
            store.save_info(record)
            raise
    record.info["pid"] = process.pid
    store.save_info(record)
    return TrainingRun(record, process, spec)


def _end_with_owner() -> None:
    """In the launcher, before exec: SIGTERM when the process that started it dies, even by
    SIGKILL (Linux). launch.py then unwinds (the probe's last record, DataLoader workers ended
    by multiprocessing) and torchrun ends its workers. The kernel ties this to the *thread*
    that forked: callers start runs from a thread that lives as long as they do."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def ended_unwatched(record: store.RunRecord) -> dict:
    """run.json fields for a run left "running" by a process that is gone: what the launcher
    wrote when it ended (exit-rank<N>.json), else "interrupted" (killed before it could)."""
    exits = [store.read_json(path) or {} for path in sorted(record.path.glob("exit-rank*.json"))]
    if not exits:
        return {"status": "interrupted", "reason": "ended while nobody was following it, without a trace"}
    codes = [e.get("exit_code") for e in exits]
    ended_at = max((e.get("ended_at") or 0 for e in exits), default=0) or time.time()
    reasons = [e["reason"] for e in exits if e.get("reason")]
    if reasons:
        status = "stopped" if all(r == "stopped" for r in reasons) else "interrupted"
        return {"status": status, "reason": reasons[0], "exit_code": codes[0], "ended_at": ended_at}
    status = "completed" if all(code == 0 for code in codes) else "failed"
    fields = {"status": status, "exit_code": next((c for c in codes if c != 0), 0), "ended_at": ended_at}
    if status == "failed":
        fields["error"] = error_from_stderr(record.file(store.STDERR_FILE))
    return fields


def summary_for(record: store.RunRecord, live: TrainingRun | None = None, draw: bool = True) -> dict:
    """The summary of any run: live, ended, or left "running" by a process that died.

    `draw=False` (run lists, code lenses) only computes: drawing a chart takes a helper
    process and a second or two, which a list of runs must not pay once per run."""
    if live is not None and live.summary is not None:
        return live.summary
    if live is not None:  # running, or ended with its final chart being drawn (by poll())
        summary = live.current_summary()
        if not draw:
            return summary
        drawn = (redraw_in_background(record.path, chart_title(summary)) if not live.finished
                 else drawn_files(record.path))
        return {**summary, "chart": drawn["chart"], "chart_svg": drawn["svg"]}
    if record.info.get("status") == "running" and not _process_alive(record.info.get("pid")):
        # The server or CLI that followed this run went away before it ended: the launcher's
        # own exit record says how it ended (completed, failed, or killed with its owner).
        record.info.update(ended_unwatched(record))
        store.save_info(record)
        return finalize(record)
    saved = record.summary()
    if saved is not None and record.info.get("status") != "running":
        return saved
    records = store.read_records(record.file(store.METRICS_FILE))
    if record.info.get("status") == "running" or not draw:  # running: followed by another process
        return compute_summary(record.info, records)
    return finalize(record, records)


def _process_alive(pid) -> bool:
    from torch_lsp.training.process_tree import alive

    return isinstance(pid, int) and alive(pid)


def run_overview(record: store.RunRecord, live: TrainingRun | None = None) -> dict:
    """One line of run history (``torch-lsp runs``, ``torch-lsp.listRuns``)."""
    summary = summary_for(record, live, draw=False)
    return {"id": record.run_id, "script": record.info.get("script"), "status": summary.get("status"),
            "startedAt": record.info.get("started_at"), "steps": summary.get("steps"),
            "finalLoss": summary.get("final_loss"), "path": str(record.path),
            "label": short_label(summary)}
