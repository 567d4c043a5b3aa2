"""The shape worker started with `initialize` (shapes/early_start.py): started unless the
settings `initialize` carries switch shapes off, adopted by the engine for the same
interpreter, stopped otherwise. A stand-in command replaces the worker (no torch import)."""

from __future__ import annotations

import os
import sys

import pytest

from torch_lsp.shapes import early_start
from torch_lsp.shapes.interpreter import Interpreter

STAND_IN = [sys.executable, "-c", "import sys; sys.stdin.read()"]  # waits until stopped


@pytest.fixture(autouse=True)
def stand_in(monkeypatch):
    monkeypatch.setattr(early_start, "worker_command", lambda interpreter: (STAND_IN, None))
    yield
    early_start.discard()


def _params(tmp_path, options=None) -> dict:
    return {"rootUri": tmp_path.as_uri(), "initializationOptions": options}


def test_started_with_initialize_and_taken_for_the_same_interpreter(tmp_path):
    early_start.start_for_initialize(_params(tmp_path))
    taken = early_start.take(Interpreter(sys.executable, "torch-lsp's own"), early_start.PARALLEL_JOBS)
    assert taken is not None and taken[0].poll() is None
    assert early_start.take(Interpreter(sys.executable, "torch-lsp's own"), early_start.PARALLEL_JOBS) is None  # once
    taken[0].kill()
    taken[0].wait()


def test_stopped_when_the_engine_wants_another_interpreter(tmp_path):
    early_start.start_for_initialize(_params(tmp_path))
    process = early_start._started[2]
    assert early_start.take(Interpreter("/usr/bin/python3-other", "execution.python"), 2) is None
    assert process.poll() is not None  # stopped, not left behind


@pytest.mark.parametrize("options", [{"execution": {"enabled": False}}, {"torchLsp": {"execution": {"enabled": False}}}])
def test_not_started_when_initialization_options_switch_shapes_off(tmp_path, options):
    early_start.start_for_initialize(_params(tmp_path, options))
    assert early_start._started is None


def test_not_started_when_the_workspace_switches_shapes_off(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.torch-lsp.execution]\nenabled = false\n")
    early_start.start_for_initialize(_params(tmp_path))
    assert early_start._started is None


def test_bad_parameters_raise_nothing(tmp_path):
    for params in (None, [], {"rootUri": 3, "initializationOptions": "x"}):
        early_start.start_for_initialize(params)
    early_start.discard()


async def test_the_adopted_worker_is_asked_whether_it_ended_only_once_its_output_ended(monkeypatch):
    """The engine asks `returncode` before every job it writes; for the adopted process that
    was a wait4() system call each time (the event loop gives up the GIL for it)."""
    import asyncio
    import subprocess

    from torch_lsp.shapes.engine import _AdoptedProcess

    popen = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdout.write('x'); sys.stdout.flush(); sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    process = await _AdoptedProcess.adopt(popen)
    polls = []
    real_poll = popen.poll
    monkeypatch.setattr(popen, "poll", lambda: polls.append(1) or real_poll())
    assert await process.stdout.readexactly(1) == b"x"
    assert [process.returncode for _ in range(100)] == [None] * 100 and polls == []
    process.stdin.close()  # the stand-in ends when its input does
    assert await asyncio.wait_for(process.stdout.read(), 30) == b""  # its output ended
    # Until it has exited (not reaped: that is returncode's job).
    await asyncio.wait_for(asyncio.to_thread(os.waitid, os.P_PID, popen.pid, os.WEXITED | os.WNOWAIT), 30)
    assert process.returncode == 0 and polls
