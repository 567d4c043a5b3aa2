"""A run's drawn files (chart.png, chart.svg, tensorboard/), made by a helper process.

matplotlib and tensorboard are heavy to import and the language server must stay light, so
the server and the CLI both call `render_artifacts()` when a run ends, which runs
`python -m torch_lsp.training.artifacts RUN_DIR` with torch-lsp's own interpreter and waits for
it (while a run goes on, `redraw_in_background()` does not wait). The helper reads metrics.jsonl, writes the files and prints what it wrote as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch_lsp
from torch_lsp.own_python import module_command
from torch_lsp.training import store

HELPER_TIMEOUT_S = 300.0  # the first matplotlib import builds its font cache


# Live runs: at most one drawing per run at a time, and not more often than this, however
# often a client asks for metrics (a drawing costs a second or two of CPU).
LIVE_REDRAW_INTERVAL_S = 15.0
_drawing: dict[str, tuple[subprocess.Popen, float]] = {}  # run folder -> (helper, started)
_drawing_lock = threading.Lock()
_now = time.monotonic  # a seam for tests


def _helper_command(run_dir: Path, title: str) -> tuple[list[str], dict[str, str]]:
    package_root = str(Path(torch_lsp.__file__).resolve().parent.parent)
    env = {**os.environ, "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    return module_command("torch_lsp.training.artifacts", str(run_dir), title), env


def render_artifacts(run_dir: Path, title: str = "") -> dict:
    """Draw and wait: {"chart": png path or None, "svg": ..., "tensorboard": folder or None}."""
    nothing = {"chart": None, "svg": None, "tensorboard": None}
    command, env = _helper_command(run_dir, title)
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=HELPER_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return nothing
    try:
        written = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return nothing
    return {**nothing, **written} if isinstance(written, dict) else nothing


def redraw_in_background(run_dir: Path, title: str = "") -> dict:
    """For a run still going: start drawing its chart afresh (unless a drawing of it is under
    way) and return at once with the chart drawn last, if any. A metrics request answers in
    milliseconds instead of waiting a second or more for matplotlib."""
    key = str(run_dir)
    with _drawing_lock:
        helper, started = _drawing.get(key, (None, -LIVE_REDRAW_INTERVAL_S))
        idle = helper is None or helper.poll() is not None
        if idle and _now() - started >= LIVE_REDRAW_INTERVAL_S:
            command, env = _helper_command(run_dir, title)
            try:
                helper = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                _drawing[key] = (helper, _now())
            except OSError:
                pass
    return drawn_files(run_dir)


def drawn_files(run_dir: Path) -> dict:
    """The chart files the run folder has now: {"chart": png or None, "svg": svg or None}."""
    png = run_dir / store.CHART_FILE
    return {"chart": str(png) if png.is_file() else None,
            "svg": str(png.with_suffix(".svg")) if png.with_suffix(".svg").is_file() else None}


def _main(argv: list[str]) -> int:
    from torch_lsp.training.chart import save_chart
    from torch_lsp.training.tensorboard_export import export_tensorboard

    run_dir = Path(argv[0])
    title = argv[1] if len(argv) > 1 else ""
    records = store.read_records(run_dir / store.METRICS_FILE)
    written = save_chart(records, run_dir / store.CHART_FILE, title)
    print(json.dumps({
        "chart": str(written[0]) if written else None,
        "svg": str(written[1]) if len(written) > 1 else None,
        "tensorboard": export_tensorboard(records, run_dir / store.TENSORBOARD_DIR),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
