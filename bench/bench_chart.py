"""What drawing a run's chart costs at the end of a run: the helper process
(`python -m torch_lsp.training.artifacts RUN_DIR`: import matplotlib, draw PNG + SVG, export
TensorBoard files when installed), on the recorded 160-step run of tests/training/recorded.

Usage: python bench/bench_chart.py [--runs 7]
Prints the median wall time of the helper and, measured in the same run alternately as the
baseline, of a bare `python -c pass` (the interpreter start every helper pays), and their ratio.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "tests" / "training" / "recorded" / "runs"


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    [run] = [r for r in RECORDED.iterdir() if "-train_synthetic-" in r.name]
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / run.name
        shutil.copytree(run, run_dir)
        helper = [sys.executable, "-m", "torch_lsp.training.artifacts", str(run_dir), "bench"]
        timed(helper)  # matplotlib's font cache, first imports
        bare, drawn = [], []
        for _ in range(args.runs):
            bare.append(timed([sys.executable, "-c", "pass"]))
            drawn.append(timed(helper))
    b, d = statistics.median(bare), statistics.median(drawn)
    print(f"| helper (PNG + SVG) | {d * 1000:,.0f} ms ({min(drawn) * 1000:,.0f}–{max(drawn) * 1000:,.0f}) |")
    print(f"| `python -c pass` | {b * 1000:,.0f} ms ({min(bare) * 1000:,.0f}–{max(bare) * 1000:,.0f}) |")
    print(f"| ratio | {d / b:.1f} |")


if __name__ == "__main__":
    main()
