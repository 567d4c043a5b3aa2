"""Training through the real protocol: a server subprocess, a VS Code-like client, real runs."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from PIL import Image
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from tests.conftest import FIXTURES, ROOT
from tests.lsp.conftest import SERVER, diagnostics_for, open_text
from tests.training.helpers import marker_line, processes_with_env

pytestmark = pytest.mark.slow  # real training runs under a server

COMMANDS = ["torch-lsp.train", "torch-lsp.stopTraining", "torch-lsp.listRuns", "torch-lsp.metrics"]


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A workspace holding the training fixtures: the editor only starts scripts inside it."""
    for script in FIXTURES.glob("train_*.py"):
        (tmp_path / script.name).write_text(script.read_text())
    return tmp_path


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient, workspace: Path):
    lsp_client.metrics_notifications = []
    lsp_client.code_lens_refreshes = 0
    lsp_client.feature("torchLsp/metrics")(lambda params: lsp_client.metrics_notifications.append(params))

    @lsp_client.feature(types.WORKSPACE_CODE_LENS_REFRESH)
    def code_lens_refresh(params):  # VS Code supports it; pytest-lsp's client has no handler
        lsp_client.code_lens_refreshes += 1

    result = await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=workspace.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=workspace.as_uri(), name="ws")]))
    lsp_client.initialize_result = result
    yield lsp_client
    await lsp_client.shutdown_session()


async def execute(client: LanguageClient, command: str, *arguments):
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command=command, arguments=list(arguments)))


def _get(params, key):
    return params[key] if isinstance(params, dict) else getattr(params, key, None)


def _plain(value):
    """Custom notifications arrive as pygls namedtuples; turn them back into JSON values."""
    if hasattr(value, "_asdict"):
        return {key: _plain(item) for key, item in value._asdict().items()}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


async def wait_for_final(client: LanguageClient, run_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for params in client.metrics_notifications:
            params = _plain(params)
            if params.get("runId") == run_id and params.get("final"):
                return params["summary"]
        await asyncio.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish within {timeout} s")


async def wait_for_step(client: LanguageClient, run_id: str, timeout: float = 60) -> dict:
    """The first record of an optimizer step (not the step-0 record of the first backward())."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for params in client.metrics_notifications:
            params = _plain(params)
            record = params.get("record") or {}
            if params.get("runId") == run_id and record.get("kind") == "step" and (record.get("step") or 0) >= 1:
                return params["record"]
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} reported no optimizer step within {timeout} s")


def training_progress(client: LanguageClient) -> list:
    """The progress values of the (only) training progress token."""
    [token] = [t for t in client.progress_reports if str(t).startswith("torch-lsp-train-")]
    return client.progress_reports[token]


async def test_commands_are_advertised_and_torch_stays_out_of_the_server(client):
    provider = client.initialize_result.capabilities.execute_command_provider
    assert set(COMMANDS) <= set(provider.commands)
    info = await execute(client, "torch-lsp.serverInfo")
    assert info["torchImported"] is False


async def test_train_streams_progress_metrics_and_logs(client, workspace):
    reply = await execute(client, "torch-lsp.train",
                          {"script": (workspace / "train_synthetic.py").as_uri(), "args": ["--epochs", "3"]})
    run_id = reply["runId"]
    # The command answers at once; the run's end is reported later (in order, after the reply).
    assert not [p for p in map(_plain, client.metrics_notifications) if p.get("runId") == run_id and p.get("final")]
    assert Path(reply["runDir"]).parent == workspace / ".torch-lsp" / "runs"

    summary = await wait_for_final(client, run_id)
    assert summary["status"] == "completed" and summary["exit_code"] == 0
    logs = "\n".join(m.message for m in client.log_messages)
    counts = re.search(r"script_steps=(\d+) script_samples=(\d+) script_last_loss=([\d.]+)", logs)
    assert counts, logs
    assert summary["steps"] == int(counts[1]) and summary["samples"] == int(counts[2])
    assert summary["final_loss"] == pytest.approx(float(counts[3]), abs=1e-6)
    assert "Epoch: 3, Loss:" in logs

    records = [_plain(p)["record"] for p in client.metrics_notifications if _plain(p).get("record")]
    losses = [r["loss"] for r in records if r["kind"] == "step" and r.get("loss") is not None]
    assert len(losses) >= 3 and losses[-1] < 0.5 * losses[0]

    progress = training_progress(client)
    assert isinstance(progress[0], types.WorkDoneProgressBegin) and progress[0].cancellable
    reports = [p for p in progress if isinstance(p, types.WorkDoneProgressReport)]
    assert reports, progress
    assert any(re.match(r"epoch \d/3 · step \d+ · loss [\d.]+ · [\d,]+ samples/s", r.message) for r in reports)
    assert any(r.percentage is not None and 0 < r.percentage <= 100 for r in reports)
    assert isinstance(progress[-1], types.WorkDoneProgressEnd) and "completed" in progress[-1].message
    assert client.code_lens_refreshes == 1  # "Last run" lenses are asked for again

    shown = await execute(client, "torch-lsp.metrics")
    assert shown["runId"] == run_id and shown["summary"]["steps"] == summary["steps"]
    assert "| final loss |" in shown["markdown"]
    with Image.open(shown["chart"]) as image:
        assert image.format == "PNG" and image.height > 100
    assert "waiting for data" in Path(shown["summary"]["chart_svg"]).read_text()
    assert [d.uri for d in client.shown_documents] == [shown["chartUri"]]
    info = await execute(client, "torch-lsp.serverInfo")  # charts are drawn by a helper process
    assert info["torchImported"] is False and info["matplotlibImported"] is False
    runs = await execute(client, "torch-lsp.listRuns")
    assert [r["id"] for r in runs] == [run_id]


async def test_cancel_from_the_progress_ui_ends_the_whole_tree(client, workspace):
    reply = await execute(client, "torch-lsp.train",
                          {"script": str(workspace / "train_synthetic.py"), "args": ["--epochs", "100000"]})
    run_id = reply["runId"]
    reported = await wait_for_step(client, run_id)  # an optimizer step was reported
    assert processes_with_env("TORCH_LSP_RUN_ID", run_id)
    [token] = [t for t in client.progress_reports if str(t).startswith("torch-lsp-train-")]
    client.window_work_done_progress_cancel(types.WorkDoneProgressCancelParams(token=token))
    summary = await wait_for_final(client, run_id, timeout=90)
    assert summary["status"] == "stopped"
    assert summary["steps"] >= reported["step"]  # what was reported before the cancel is kept
    assert processes_with_env("TORCH_LSP_RUN_ID", run_id) == []


@pytest.mark.slow
async def test_stop_training_ends_torchrun_and_its_workers(client, workspace):
    reply = await execute(client, "torch-lsp.train", {
        "script": str(workspace / "train_ddp.py"), "nproc": 2, "env": {"DDP_EPOCHS": "100000"}})
    run_id = reply["runId"]
    await wait_for_step(client, run_id, timeout=90)
    assert len(processes_with_env("TORCH_LSP_RUN_ID", run_id)) >= 3  # torchrun + 2 workers
    stopped = await execute(client, "torch-lsp.stopTraining", run_id)
    assert stopped["stopped"] is True
    summary = await wait_for_final(client, run_id, timeout=90)
    assert summary["status"] == "stopped"
    assert processes_with_env("TORCH_LSP_RUN_ID", run_id) == []


async def test_failing_script_gets_a_message_and_a_diagnostic_on_its_line(client, workspace):
    script = workspace / "train_crash.py"
    uri = script.as_uri()
    line = marker_line(script, "# <- fails here") - 1
    reply = await execute(client, "torch-lsp.train", {"script": uri})
    summary = await wait_for_final(client, reply["runId"])
    assert summary["status"] == "failed"
    [message] = [m for m in client.messages if m.type == types.MessageType.Error]
    assert "RuntimeError" in message.message and f"train_crash.py:{line + 1}" in message.message
    for _ in range(50):
        if client.diagnostics.get(uri):
            break
        await asyncio.sleep(0.1)
    [diagnostic] = client.diagnostics[uri]
    assert diagnostic.range.start.line == line and diagnostic.code == "training-error"
    assert diagnostic.severity == types.DiagnosticSeverity.Error
    assert "mat1 and mat2" in diagnostic.message

    client.diagnostics.pop(uri)
    open_text(client, uri, script.read_text())  # opened after the failure: it stays
    await diagnostics_for(client, uri, version=1)
    for _ in range(50):  # static findings and the run's failure may come in two messages
        if any(d.code == "training-error" for d in client.diagnostics.get(uri, [])):
            break
        await asyncio.sleep(0.1)
    assert [d.range.start.line for d in client.diagnostics[uri] if d.code == "training-error"] == [line]


async def test_bad_arguments_get_clear_errors(client, workspace):
    with pytest.raises(Exception, match="not found"):
        await execute(client, "torch-lsp.train", {"script": str(workspace / "missing.py")})
    with pytest.raises(Exception, match="needs a script"):
        await execute(client, "torch-lsp.train")
    with pytest.raises(Exception, match="nproc"):
        await execute(client, "torch-lsp.train", {"script": str(workspace / "train_synthetic.py"), "nproc": 0})
    with pytest.raises(Exception, match="no training is running"):
        await execute(client, "torch-lsp.stopTraining")
    with pytest.raises(Exception, match="no training runs yet"):
        await execute(client, "torch-lsp.metrics")
    assert await execute(client, "torch-lsp.listRuns") == []


async def test_train_refuses_what_the_machine_or_the_workspace_does_not_allow(client, workspace):
    script = str(workspace / "train_synthetic.py")
    refusals = [
        ({"script": script, "nproc": 10**9}, "more processes than this machine can run"),
        ({"script": script, "nnodes": 10**9}, "nodes"),
        ({"script": script, "nnodes": 2}, "needs `rdzvEndpoint`"),
        ({"script": "/etc/passwd"}, "must be a Python file"),
        ({"script": str(FIXTURES / "train_synthetic.py")}, "must be inside the workspace"),
    ]
    (workspace / "notes.txt").write_text("not a script")
    refusals.append(({"script": str(workspace / "notes.txt")}, "must be a Python file"))
    (workspace / "escape.py").symlink_to(FIXTURES / "train_synthetic.py")
    refusals.append(({"script": str(workspace / "escape.py")}, "must be inside the workspace"))
    for arguments, reason in refusals:
        with pytest.raises(Exception, match=re.escape(reason)) as refused:
            await execute(client, "torch-lsp.train", arguments)
        assert getattr(refused.value, "code", -32602) == -32602, arguments
    assert await execute(client, "torch-lsp.listRuns") == []  # nothing was started


@pytest.fixture
def workspace_with_a_run(tmp_path: Path) -> Path:
    """A run made by the CLI in another process: the server must read it from the store."""
    script = tmp_path / "train.py"
    script.write_text((FIXTURES / "train_synthetic.py").read_text())
    result = subprocess.run([sys.executable, "-m", "torch_lsp", "train", "--no-progress", "--max-steps", "20",
                             str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return tmp_path




class TestStoredRuns:
    @pytest.fixture
    def workspace(self, workspace_with_a_run: Path) -> Path:
        return workspace_with_a_run

    async def test_runs_survive_a_restart(self, client, workspace):
        runs = await execute(client, "torch-lsp.listRuns")
        assert len(runs) == 1 and runs[0]["status"] == "completed" and runs[0]["steps"] == 20
        shown = await execute(client, "torch-lsp.metrics", runs[0]["id"])
        assert shown["summary"]["max_steps_reached"] is True
        assert Path(shown["chart"]).is_file()

    async def test_code_lenses_offer_training_and_the_last_run(self, client, workspace):
        script = workspace / "train.py"
        uri = script.as_uri()
        open_text(client, uri, script.read_text())
        lenses = await client.text_document_code_lens_async(
            types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri=uri)))
        by_title = {lens.command.title: lens for lens in lenses}
        main_line = marker_line(script, 'if __name__ == "__main__":') - 1
        loop_line = marker_line(script, "for epoch in range(args.epochs):") - 1
        train_lines = sorted(l.range.start.line for l in lenses if l.command.command == "torch-lsp.train")
        assert train_lines == sorted([main_line, loop_line])
        assert all(_plain(l.command.arguments) == [{"script": uri}] for l in lenses if l.command.command == "torch-lsp.train")
        [last] = [l for l in lenses if l.command.command == "torch-lsp.metrics"]
        assert re.fullmatch(r"Last run: loss [\d.]+ · just now", last.command.title), last.command.title
        assert "▶ Train" in by_title


async def test_recorded_runs_through_the_protocol(client, workspace):
    """listRuns and metrics over a store of recorded runs: an ambiguous prefix is an error that
    names the candidates; a unique one gives the run, with its chart drawn outside the server."""
    from tests.training.helpers import copy_recorded_runs

    ids = copy_recorded_runs(workspace / ".torch-lsp" / "runs")
    listed = await execute(client, "torch-lsp.listRuns")
    assert sorted(r["id"] for r in listed) == ids
    with pytest.raises(Exception, match=f"matches {len(ids)} runs: .*{ids[0]}"):
        await execute(client, "torch-lsp.metrics", ids[0][:8])
    crash = next(run_id for run_id in ids if "train_crash" in run_id)
    shown = await execute(client, "torch-lsp.metrics", crash)
    assert shown["summary"]["steps"] == 5 and shown["summary"]["steps_per_s"] is None
    assert "too few steps to measure" in shown["markdown"] and Path(shown["chart"]).is_file()
    info = await execute(client, "torch-lsp.serverInfo")
    assert info["matplotlibImported"] is False and info["torchImported"] is False
