"""Shared helpers for the editor tests: each runs a real editor (or VS Code's protocol library)
against `python -m torch_lsp serve` and skips with a clear reason when the editor is missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, ROOT

EDITORS = ROOT / "editors"
MISSING_ZERO_GRAD = FIXTURES / "missing_zero_grad.py"
POOLED = Path(__file__).resolve().parent / "fixtures" / "pooled.py"
TINY_TRAIN = Path(__file__).resolve().parent / "fixtures" / "tiny_train.py"
SERVER_COMMAND = [sys.executable, "-m", "torch_lsp", "serve"]
HOVER_SKIP_REASON = "the shape engine (torch_lsp/server/hover.py) is not merged into this branch: no hover to check"


def require(binary: str, how: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed ({how}); CI installs it in .ci/run")
    return path


def hover_available() -> bool:
    return (ROOT / "torch_lsp" / "server" / "hover.py").exists()


def expected_pooled_shape() -> str:
    """`Tensor[8, 3, 16, 16]`, from running the fixture on CPU (the truth the hover must match)."""
    run = subprocess.run([sys.executable, str(POOLED)], capture_output=True, text=True, timeout=60, check=True)
    dims = run.stdout.strip().strip("()").rstrip(",")
    return f"Tensor[{dims}]"


def editor_env(**extra: str) -> dict[str, str]:
    """The environment an editor process gets: this checkout importable by the server it starts.
    Pass TORCH_LSP_RUNS_DIR (a temporary folder) when the editor trains: the drivers set the
    `training.runsDir` setting from it, so runs are never stored in the checkout."""
    env = dict(os.environ)
    env.update(TORCH_LSP_SERVER=json.dumps(SERVER_COMMAND), TORCH_LSP_ROOT=str(ROOT), **extra)
    return env


def run_editor(command: list[str], env: dict[str, str], timeout: float = 120, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    run = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    print(run.stdout[-4000:], run.stderr[-4000:], sep="\n")  # shown by pytest when a test fails
    return run
