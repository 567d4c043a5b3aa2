"""Fixtures for shape tests (helpers live in tests/shapes/helpers.py)."""

from __future__ import annotations

import textwrap

import pytest


@pytest.fixture(scope="session")
def run_meta():
    """Run source through plan + job in this process (no fork, no guards): fast unit tests.
    Warmed up first, like the worker, so first-use imports inside torch do not eat the timeout."""
    from torch_lsp.analysis.plan import build_plan
    from torch_lsp.shapes.job import run_job
    from torch_lsp.shapes.worker import prepare, warm_up

    prepare()
    warm_up()

    def run(source: str, device: str = "meta", timeout: float = 30.0):
        plan = build_plan(textwrap.dedent(source), "/virtual/user_code.py")
        assert plan.error is None, plan.error
        return run_job(plan, device, timeout)

    return run


@pytest.fixture
def importable(tmp_path, monkeypatch):
    """`importable(name, source)`: a module the test's code can import (a stand-in for an
    installed library), on a temporary `sys.path` entry; forgotten after the test."""
    import sys

    names = []
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name: str, source: str) -> None:
        (tmp_path / f"{name}.py").write_text(source)
        names.append(name)

    yield write
    for name in names:
        sys.modules.pop(name, None)
