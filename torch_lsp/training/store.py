"""The run store: ``<workspace>/.torch-lsp/runs/<run-id>/``, one folder per run.

Layout (documented for other tools in docs/commands.md):

    run.json        what was launched and how it ended (status, exit code, times)
    metrics.jsonl   one JSON record per line, flushed as written by the probe
    stdout.log      the script's standard output
    stderr.log      the script's standard error (tracebacks, warnings, torchrun's output)
    summary.json    computed when the run ends (and on demand while it runs)
    exit-rank<N>.json  how each rank's process ended (launch.py): the truth for a run left
                    "running" by a server that died
    chart.png       loss and metrics over steps
    tensorboard/    event files, only when the ``tensorboard`` package is importable

Plain files only: listing and reading runs needs no process, so history survives restarts.
"""

from __future__ import annotations

import json
import os
import threading
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_RUNS_DIR = Path(".torch-lsp") / "runs"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"  # probe.py writes it; the name is repeated there on purpose
STDOUT_FILE = "stdout.log"
STDERR_FILE = "stderr.log"
SUMMARY_FILE = "summary.json"
CHART_FILE = "chart.png"
TENSORBOARD_DIR = "tensorboard"


def runs_dir_for(workspace: str | os.PathLike | None, configured: str | None = None) -> Path:
    """The runs folder: the configured one (relative to the workspace) or the default."""
    base = Path(workspace) if workspace else Path.cwd()
    if configured:
        path = Path(configured).expanduser()
        return path if path.is_absolute() else base / path
    return base / DEFAULT_RUNS_DIR


def new_run_id(script: str) -> str:
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(script).stem)[:40]
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{stem}-{secrets.token_hex(2)}"


@dataclass
class RunRecord:
    """One run folder, read back from disk."""

    path: Path
    info: dict

    @property
    def run_id(self) -> str:
        return self.path.name

    def file(self, name: str) -> Path:
        return self.path / name

    def summary(self) -> dict | None:
        return read_json(self.file(SUMMARY_FILE))


def read_json(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: Path, value: dict) -> None:
    """Write atomically so a reader never sees half a file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, default=str)
    os.replace(tmp, path)


def create_run(runs_dir: Path, script: str, info: dict) -> RunRecord:
    runs_dir.mkdir(parents=True, exist_ok=True)
    run_id = new_run_id(script)
    path = runs_dir / run_id
    path.mkdir()
    record = RunRecord(path, {"id": run_id, **info})
    save_info(record)
    return record


def save_info(record: RunRecord) -> None:
    write_json(record.file(RUN_FILE), record.info)


def list_runs(runs_dir: Path) -> list[RunRecord]:
    """All runs, newest first; folders without a readable run.json are skipped."""
    if not runs_dir.is_dir():
        return []
    runs = []
    for child in runs_dir.iterdir():
        info = read_json(child / RUN_FILE) if child.is_dir() else None
        if info is not None:
            runs.append(RunRecord(child, info))
    runs.sort(key=lambda r: (r.info.get("started_at") or 0, r.run_id), reverse=True)
    return runs


class AmbiguousRunId(LookupError):
    """A run id prefix that matches several runs; `candidates` are they, newest first."""

    def __init__(self, prefix: str, candidates: list[RunRecord]) -> None:
        super().__init__(f"{prefix!r} matches {len(candidates)} runs: "
                         + ", ".join(run.run_id for run in candidates))
        self.prefix = prefix
        self.candidates = candidates


def find_run(runs_dir: Path, run_id: str | None = None) -> RunRecord | None:
    """A run by id (or unique id prefix); the latest when run_id is empty; None when nothing
    matches. Raises AmbiguousRunId when the prefix matches several runs."""
    runs = list_runs(runs_dir)
    if not run_id:
        return runs[0] if runs else None
    exact = [r for r in runs if r.run_id == run_id]
    if exact:
        return exact[0]
    prefixed = [r for r in runs if r.run_id.startswith(run_id)]
    if len(prefixed) > 1:
        raise AmbiguousRunId(run_id, prefixed)
    return prefixed[0] if prefixed else None


def latest_run_for_script(runs_dir: Path, script: str) -> RunRecord | None:
    target = os.path.abspath(script)
    for run in list_runs(runs_dir):
        if run.info.get("script") == target:
            return run
    return None


def read_records(path: Path) -> list[dict]:
    """Every complete record of a metrics.jsonl (a half-written last line is ignored)."""
    reader = LineTail(path)
    return [r for r in (parse_record(line) for line in reader.read_new()) if r is not None]


def parse_record(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


class LineTail:
    """Reads the complete lines appended to a file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self._partial = b""

    def read_new(self) -> list[str]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return []
        self.offset += len(data)
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        return [line.decode("utf-8", errors="replace").rstrip("\r") for line in lines]
