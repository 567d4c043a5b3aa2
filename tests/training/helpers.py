"""Helpers for the training tests: run the CLI, read run folders, find leftover processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import FIXTURES, ROOT as REPO

CLI = [sys.executable, "-m", "torch_lsp"]


def run_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def last_json(text: str):
    """The JSON document at the end of a command's output (after the script's own lines)."""
    start = text.rfind("\n{")
    return json.loads(text[start + 1 if start >= 0 else 0:])


def processes_with_env(name: str, value: str) -> list[int]:
    """pids whose environment has name=value (a run's processes carry TORCH_LSP_RUN_ID)."""
    needle = f"{name}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if needle in handle.read().split(b"\0"):
                    with open(f"/proc/{entry}/stat", "rb") as stat:
                        if stat.read().rsplit(b")", 1)[1].split()[0] != b"Z":
                            found.append(int(entry))
        except OSError:
            continue
    return found


def marker_line(path: Path, marker: str) -> int:
    """1-based line of the first line containing marker: tests never hard-code line numbers."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if marker in line:
            return number
    raise AssertionError(f"{marker!r} not in {path}")



RECORDED_RUNS = Path(__file__).resolve().parent / "recorded" / "runs"


def copy_recorded_runs(runs_dir: Path) -> list[str]:
    """A run store made of the recorded runs (tests/training/recorded): run.json and
    metrics.jsonl only, so summaries and charts are computed by the code under test."""
    import shutil

    runs_dir.mkdir(parents=True, exist_ok=True)
    for run in sorted(RECORDED_RUNS.iterdir()):
        shutil.copytree(run, runs_dir / run.name)
    return sorted(run.name for run in RECORDED_RUNS.iterdir())
