"""Training runs never outlive the server that started them, and run.json always says what
happened: for each way a server can die, the trainer and its DataLoader workers end and the
run is `interrupted`; a run that completed while nobody followed it is `completed`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.lsp_client import StdioClient
from tests.training.helpers import processes_with_env
from torch_lsp.training import store
from torch_lsp.training.process_tree import alive
from torch_lsp.training.runner import LAUNCHER, summary_for

pytestmark = [pytest.mark.slow, pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux")]

SERVER = [sys.executable, "-m", "torch_lsp", "serve"]

TRAINER = """
import torch
from torch.utils.data import DataLoader, TensorDataset

data = TensorDataset(torch.randn(256, 8), torch.randn(256, 1))
loader = DataLoader(data, batch_size=16, num_workers=2, persistent_workers=True)
model = torch.nn.Linear(8, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
for epoch in range(1_000_000):
    for x, y in loader:
        optimizer.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        optimizer.step()
"""


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s")


def end_server(client: StdioClient, how: str) -> None:
    if how == "kill -9":
        client.process.kill()
    elif how == "exit without shutdown":
        client.notify("exit", None)
    elif how == "stdin closed":
        client.process.stdin.close()
    client.process.wait(timeout=60)


@pytest.mark.parametrize("how", ["kill -9", "exit without shutdown", "stdin closed"])
def test_the_trainer_and_its_dataloader_workers_end_with_the_server(tmp_path: Path, how: str):
    script = tmp_path / "train_forever.py"
    script.write_text(TRAINER)
    client = StdioClient(SERVER, cwd=tmp_path)
    try:
        client.initialize(tmp_path, {"execution": {"enabled": False}})
        reply, _ = client.request("workspace/executeCommand", {"command": "torch-lsp.train",
                                                               "arguments": [{"script": str(script)}]})
        run_id = reply["result"]["runId"]
        # The launcher and two DataLoader workers (they carry the run's environment).
        wait_until(lambda: len(processes_with_env("TORCH_LSP_RUN_ID", run_id)) >= 3, 120,
                   "the trainer did not start its DataLoader workers")
        end_server(client, how)
        record = store.find_run(store.runs_dir_for(tmp_path), run_id)
        # (a process tearing down may hide its environment before it is gone: ask both)
        wait_until(lambda: processes_with_env("TORCH_LSP_RUN_ID", run_id) == [] and not alive(record.info["pid"]),
                   60, f"processes of the run outlived the server ({how})")
    finally:
        if client.process.poll() is None:
            client.process.kill()
    summary = summary_for(record)  # what the next server (or `torch-lsp runs`) reports
    assert summary["status"] == "interrupted", summary
    assert "exited" in store.read_json(record.file(store.RUN_FILE))["reason"]


def _run_unwatched(tmp_path: Path, source: str) -> dict:
    """A run whose follower died: run.json still says "running" with a pid that is gone; the
    launcher ran the script to its end and wrote how it ended."""
    script = tmp_path / "script.py"
    script.write_text(source)
    record = store.create_run(store.runs_dir_for(tmp_path), str(script), {"script": str(script), "status": "running"})
    launcher = subprocess.run([sys.executable, str(LAUNCHER), str(script)], cwd=tmp_path, capture_output=True,
                              env={**os.environ, "TORCH_LSP_RUN_DIR": str(record.path),
                                   "TORCH_LSP_RUN_ID": record.run_id, "TORCH_LSP_OWNER_PID": str(os.getpid())},
                              timeout=120)
    (record.path / store.STDERR_FILE).write_bytes(launcher.stderr)
    record.info["pid"] = 2**22 + 1  # above any pid this machine hands out: a process that is gone
    store.save_info(record)
    return summary_for(store.find_run(store.runs_dir_for(tmp_path), record.run_id))


def test_a_run_that_completed_unwatched_is_completed(tmp_path: Path):
    summary = _run_unwatched(tmp_path, "import torch\nprint(torch.ones(2).sum())\n")
    assert summary["status"] == "completed" and summary["exit_code"] == 0


def test_a_run_that_failed_unwatched_is_failed_with_its_error(tmp_path: Path):
    summary = _run_unwatched(tmp_path, "import sys\nraise SystemExit(3)\n")
    assert summary["status"] == "failed" and summary["exit_code"] == 3


def test_a_run_killed_without_a_trace_is_interrupted(tmp_path: Path):
    record = store.create_run(store.runs_dir_for(tmp_path), "x.py", {"script": "x.py", "status": "running",
                                                                     "pid": 2**22 + 1})
    assert summary_for(record)["status"] == "interrupted"


def _ddp_run_started(tmp_path: Path) -> tuple[StdioClient, str]:
    """A server running `torch-lsp.train` on the DDP fixture (two workers, training for good):
    the client and the run's id, once torchrun and both workers are up."""
    from tests.conftest import FIXTURES

    script = tmp_path / "train_ddp.py"
    script.write_text((FIXTURES / "train_ddp.py").read_text())
    client = StdioClient(SERVER, cwd=tmp_path)
    try:
        client.initialize(tmp_path, {"execution": {"enabled": False}})
        reply, _ = client.request("workspace/executeCommand", {"command": "torch-lsp.train", "arguments": [
            {"script": str(script), "nproc": 2, "env": {"DDP_EPOCHS": "100000"}}]})
        run_id = reply["result"]["runId"]
        wait_until(lambda: len(processes_with_env("TORCH_LSP_RUN_ID", run_id)) >= 3, 180,
                   "torchrun did not start its two workers")
    except BaseException:
        client.process.kill()  # the server ends the run with it
        raise
    return client, run_id


def test_torchrun_workers_end_with_the_server_even_when_torchrun_died_first(tmp_path: Path):
    """torchrun is what ends its workers when the server dies; here it is gone before the server
    (seen under load: two workers blocked in `init_process_group` outlived both). Each worker's
    launcher watches the server itself and ends OWNER_GONE_GRACE_S after it."""
    import signal

    client, run_id = _ddp_run_started(tmp_path)
    try:
        record = store.find_run(store.runs_dir_for(tmp_path), run_id)
        os.kill(record.info["pid"], signal.SIGKILL)  # torchrun: no chance to end its workers
        wait_until(lambda: not alive(record.info["pid"]), 60, "torchrun did not die")
        end_server(client, "kill -9")
        wait_until(lambda: processes_with_env("TORCH_LSP_RUN_ID", run_id) == [], 90,
                   "a worker outlived torchrun and the server")
    finally:
        if client.process.poll() is None:
            client.process.kill()
        for pid in processes_with_env("TORCH_LSP_RUN_ID", run_id):
            os.kill(pid, signal.SIGKILL)  # a failed run of this test leaves nothing training


def test_torchrun_and_its_workers_end_with_the_server(tmp_path: Path):
    client, run_id = _ddp_run_started(tmp_path)
    try:
        end_server(client, "kill -9")
        record = store.find_run(store.runs_dir_for(tmp_path), run_id)
        wait_until(lambda: processes_with_env("TORCH_LSP_RUN_ID", run_id) == [] and not alive(record.info["pid"]),
                   90, "torchrun or a worker outlived the server")
    finally:
        if client.process.poll() is None:
            client.process.kill()
    summary = summary_for(record)
    assert summary["status"] == "interrupted", summary
