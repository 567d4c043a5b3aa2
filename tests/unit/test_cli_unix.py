"""Every subcommand behaves like a Unix tool when its reader goes away (`torch-lsp metrics |
head`) or the user presses Ctrl-C: a quiet exit with the shell's status, never a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import FIXTURES
from tests.training.helpers import copy_recorded_runs, processes_with_env

CLI = [sys.executable, "-m", "torch_lsp"]


def _with_closed_stdout(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run the CLI with stdout a pipe whose reading end is already closed: the first write
    fails with EPIPE, deterministically (no race with how fast a `head` reads)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([*CLI, *args], stdout=write_end, stderr=subprocess.PIPE, text=True,
                              cwd=cwd, timeout=timeout)
    finally:
        os.close(write_end)


@pytest.fixture
def store_dir(tmp_path):
    copy_recorded_runs(tmp_path / ".torch-lsp" / "runs")
    return tmp_path


@pytest.mark.parametrize("args", [
    ["check", "--no-shapes", str(FIXTURES / "missing_zero_grad.py")],
    ["check", "--no-shapes", "--format", "json", str(FIXTURES / "missing_zero_grad.py")],
    ["runs"], ["runs", "--json"],
    ["metrics"], ["metrics", "--json"],
    ["actions", str(FIXTURES / "missing_zero_grad.py")],
    ["--help"], ["train", "--help"],
])
def test_a_closed_pipe_ends_the_command_quietly(args, store_dir):
    result = _with_closed_stdout(args, store_dir)
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    assert result.returncode in (0, 141)  # --help may finish before Python notices the pipe


@pytest.mark.slow
@pytest.mark.parametrize("command", ["shapes", "summary"])
def test_a_closed_pipe_after_a_shape_run(command, tmp_path):
    result = _with_closed_stdout([command, str(FIXTURES / "shapes" / "lenet_ok.py")], tmp_path)
    assert result.returncode == 141 and "Traceback" not in result.stderr, result.stderr


@pytest.mark.slow
def test_a_closed_pipe_stops_the_training_it_was_showing(tmp_path):
    result = _with_closed_stdout(["train", "--no-progress", str(FIXTURES / "train_synthetic.py"),
                                  "--", "--epochs", "100000"], tmp_path)
    assert result.returncode == 141 and "Traceback" not in result.stderr, result.stderr
    [run] = (tmp_path / ".torch-lsp" / "runs").iterdir()
    assert processes_with_env("TORCH_LSP_RUN_ID", run.name) == []


def _wait_for(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _as_in_a_terminal() -> None:
    """Ctrl-C's default action in the command, whoever started the tests: a shell starts a
    background job (`.ci/run &`) with SIGINT ignored, and its children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(process: subprocess.Popen) -> tuple[str, str]:
    """Ctrl-C as a terminal sends it: SIGINT to the command's whole process group."""
    os.killpg(process.pid, signal.SIGINT)
    return process.communicate(timeout=120)


@pytest.mark.slow
def test_ctrl_c_during_training_stops_the_run_and_exits_130(tmp_path):
    process = subprocess.Popen([*CLI, "train", "--no-progress", str(FIXTURES / "train_synthetic.py"),
                                "--", "--epochs", "100000"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=_as_in_a_terminal)
    runs = tmp_path / ".torch-lsp" / "runs"

    def stepping() -> bool:
        found = list(runs.glob("*/metrics.jsonl")) if runs.is_dir() else []
        return bool(found) and '"kind": "step"' in found[0].read_text()

    _wait_for(stepping, "the first step")
    out, err = _interrupt(process)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "stopping the run (Ctrl-C)" in err
    assert "| status | stopped |" in out
    [run] = runs.iterdir()
    assert processes_with_env("TORCH_LSP_RUN_ID", run.name) == []


@pytest.mark.slow
def test_ctrl_c_during_shape_analysis_exits_130_quietly(tmp_path):
    (tmp_path / "hang.py").write_text("import torch\nx = torch.zeros(2)\nwhile True:\n    pass\n")
    process = subprocess.Popen([*CLI, "shapes", "--timeout", "120", "hang.py"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, preexec_fn=_as_in_a_terminal)

    def worker_started() -> bool:
        return any(b"torch_lsp.shapes.worker" in _cmdline(pid) for pid in _group(process.pid))

    _wait_for(worker_started, "the shape worker")
    out, err = _interrupt(process)
    assert process.returncode == 130 and "Traceback" not in err, err
    _wait_for(lambda: not _group(process.pid), "the worker to end with the command")


def _group(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == pgid and b"Z" != _state(entry):
                    members.append(int(entry))
            except (ProcessLookupError, PermissionError):
                continue
    return members


def _state(pid) -> bytes:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return b"Z"


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""
