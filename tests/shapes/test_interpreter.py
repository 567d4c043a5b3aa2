"""The shape worker runs in the project's interpreter: which one is chosen, and a worker started
in an environment that has torch but none of torch-lsp's own dependencies."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import venv
from importlib import metadata
from pathlib import Path

import pytest

from torch_lsp.analysis.plan import build_plan
from torch_lsp.shapes.engine import ShapeEngine
from torch_lsp.shapes.interpreter import Interpreter, find_interpreter, worker_command
from torch_lsp.shapes.spec import JobSpec


def make_env(folder: Path) -> Path:
    python = folder / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    return python


def test_the_setting_wins_then_the_workspace_venv_then_the_active_environments(tmp_path):
    workspace = tmp_path / "project"
    workspace.mkdir()
    active = make_env(tmp_path / "active")
    conda = make_env(tmp_path / "conda")
    environ = {"VIRTUAL_ENV": str(tmp_path / "active"), "CONDA_PREFIX": str(tmp_path / "conda")}
    assert find_interpreter(None, workspace, environ) == Interpreter(str(active), "VIRTUAL_ENV")
    assert find_interpreter(None, workspace, {"CONDA_PREFIX": str(tmp_path / "conda")}).path == str(conda)
    local = make_env(workspace / "venv")
    assert find_interpreter(None, workspace, environ) == Interpreter(str(local), "the workspace's venv")
    dot = make_env(workspace / ".venv")
    assert find_interpreter(None, workspace, environ).path == str(dot)
    # The setting: a python, or an environment folder, relative to the workspace.
    assert find_interpreter("venv", workspace, environ) == Interpreter(str(local), "execution.python")
    assert find_interpreter(str(conda), workspace, environ).path == str(conda)
    assert find_interpreter(None, None, {}) == Interpreter(sys.executable, "torch-lsp's own")


def test_own_means_the_same_environment_not_the_same_binary(tmp_path):
    assert Interpreter(sys.executable, "x").is_own
    other = make_env(tmp_path / "env")  # a venv's python links to the same base binary
    assert not Interpreter(str(other), "x").is_own
    command, folder = worker_command(Interpreter(str(other), "x"))
    try:
        assert command[0] == str(other) and command[-1] == folder
        # Only torch_lsp is reachable through the folder: not torch-lsp's dependencies.
        assert os.listdir(folder) == ["torch_lsp"]
    finally:
        import shutil

        shutil.rmtree(folder)
    assert worker_command(Interpreter(sys.executable, "x")) == ([sys.executable, "-m", "torch_lsp.shapes.worker"], None)


def _requirements(name: str) -> list[str]:
    found = []
    for requirement in metadata.requires(name) or []:
        if "extra ==" in requirement:
            continue
        if ";" in requirement:  # environment markers: keep the ones that apply here
            from packaging.requirements import Requirement

            if not Requirement(requirement).marker.evaluate():
                continue
        found.append(re.split(r"[ ;<>=!~\[(]", requirement, maxsplit=1)[0])
    return found


def torch_only_environment(folder: Path) -> Path:
    """A venv that holds torch, torchvision and what they need, and nothing of torch-lsp's own
    dependencies (pygls, lsprotocol, ...): linked from this environment, not reinstalled."""
    venv.create(folder, with_pip=False)
    purelib = Path(metadata.distribution("torch").locate_file(""))
    target = folder / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    todo, seen = ["torch", "torchvision"], set()
    while todo:
        name = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        if dist.metadata["Name"].lower() in seen:
            continue
        seen.add(dist.metadata["Name"].lower())
        todo.extend(_requirements(dist.metadata["Name"]))
        for entry in {Path(str(f)).parts[0] for f in dist.files or []}:
            source = purelib / entry
            if source.exists() and not (target / entry).exists() and entry != "..":
                (target / entry).symlink_to(source)
    return folder / "bin" / "python"


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_worker_in_an_environment_with_only_torch_runs_jobs(tmp_path):
    python = torch_only_environment(tmp_path / "env")
    probe = subprocess.run([str(python), "-c", "import torch; import pygls"], capture_output=True, text=True)
    assert "No module named 'pygls'" in probe.stderr  # the environment really lacks it
    source = tmp_path / "model.py"
    source.write_text(textwrap.dedent("""
        import torch
        x = torch.nn.Linear(5, 3)(torch.randn(4, 5))
    """))
    missing = tmp_path / "needs_einops.py"
    missing.write_text("import torch\nimport einops\n")
    engine = ShapeEngine(Interpreter(str(python), "the workspace's .venv"))
    try:
        reports = await engine.run(JobSpec(key="k", main=build_plan(source.read_text(), str(source)), timeout=60))
        assert engine.worker_info["python"] == str(python)
        without = await engine.run(JobSpec(key="m", main=build_plan(missing.read_text(), str(missing)), timeout=60))
    finally:
        await engine.close()
    report = reports[str(source)]
    assert report.stopped is None and [v.values[0].shape for v in report.variables if v.name == "x"] == [(4, 3)]
    # A project module that is not installed: the note names it and the interpreter.
    assert without[str(missing)].stopped == (
        f"stopped at line 2: module 'einops' is not installed in the interpreter used for shape analysis, "
        f"{python} (the workspace's .venv); install it there or set execution.python")


@pytest.mark.asyncio
async def test_an_interpreter_without_torch_gets_a_note_naming_it(tmp_path):
    venv.create(tmp_path / "bare", with_pip=False)
    python = tmp_path / "bare" / "bin" / "python"
    source = tmp_path / "model.py"
    source.write_text("import torch\nx = torch.ones(2)\n")
    engine = ShapeEngine(Interpreter(str(python), "the workspace's .venv"))
    try:
        reports = await engine.run(JobSpec(key="k", main=build_plan(source.read_text(), str(source))))
    finally:
        await engine.close()
    stopped = reports[str(source)].stopped
    assert stopped.startswith(f"torch cannot be imported by {python}") and "No module named 'torch'" in stopped


def test_a_session_looks_for_the_interpreter_again_when_the_setting_changes_or_after_a_while(tmp_path, monkeypatch):
    """Not for every job: the lookup's `stat`s ran on the event loop, several per edit."""
    from types import SimpleNamespace

    from torch_lsp.shapes import session as session_module

    settings = SimpleNamespace(execution=SimpleNamespace(python=None))
    session = session_module.ShapeSession(tmp_path, lambda: settings)
    clock = [100.0]
    monkeypatch.setattr(session_module.time, "monotonic", lambda: clock[0])
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    monkeypatch.delenv("CONDA_PREFIX", raising=False)
    looked = []
    real = session_module.find_interpreter
    monkeypatch.setattr(session_module, "find_interpreter", lambda *a: looked.append(a) or real(*a))

    assert session.interpreter().path == sys.executable
    python = make_env(tmp_path / ".venv")  # made while the server runs
    assert [session.interpreter().path for _ in range(50)] == [sys.executable] * 50 and len(looked) == 1
    clock[0] += session_module.INTERPRETER_RECHECK_S + 0.1
    assert session.interpreter().path == str(python) and len(looked) == 2
    settings.execution.python = "/opt/other/bin/python"
    assert session.interpreter().path == "/opt/other/bin/python" and len(looked) == 3
