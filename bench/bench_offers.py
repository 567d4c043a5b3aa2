"""What deciding the code actions costs on each cursor move, in-process.

Usage: PYTHONPATH=. python bench/bench_offers.py [--runs 5]
Prints a markdown table for docs/benchmarks.md (## Static rules): for the seed and
`vision_main.py`, the time to decide which actions of issue 5 (precision, checkpoints,
reproducibility, distributed, augmentation, pretrained) apply with the cursor on each line, as
the editor asks on every cursor move (the file's parse and facts are built once, as on didOpen).
Median and p95 over the lines, medians over runs, and the ratio of the median to `ast.parse`
of the same text timed in the same run.
"""

from __future__ import annotations

import argparse
import ast
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from torch_lsp import scaffold  # noqa: E402
from torch_lsp.analysis.facts import Span  # noqa: E402
from torch_lsp.analysis.syntax import parse  # noqa: E402
from torch_lsp.scaffold import ScaffoldContext  # noqa: E402

FAMILIES = {"precision", "checkpoints", "reproducibility", "distributed", "augmentation", "pretrained"}
FILES = {"cifar10_seed.py": ROOT / "fixtures" / "cifar10_seed.py",
         "vision_main.py": ROOT / "tests" / "scaffold" / "fixtures" / "vision_main.py"}


def per_line_ms(source: str) -> list[float]:
    actions = [a for a in scaffold.load_actions().values() if a.family in FAMILIES]
    scaffold.offers(source, Span.of(0, 0, 0, 0))  # parse and facts once, as on didOpen
    timings = []
    for number in range(len(source.splitlines())):
        start = time.perf_counter()
        ctx = ScaffoldContext(parse(source), Span.of(number, 8, number, 8))
        [action.id for action in actions if action.when(ctx)]
        timings.append((time.perf_counter() - start) * 1000)
    return timings


def parse_ms(source: str) -> float:
    start = time.perf_counter()
    ast.parse(source)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print("| file | lines | per cursor line, median / p95 (ms) | `ast.parse` (ms) | median / parse |")
    print("|---|---:|---:|---:|---:|")
    for name, path in FILES.items():
        source = path.read_text(encoding="utf-8")
        medians, p95s, parses = [], [], []
        for _ in range(args.runs):
            timings = sorted(per_line_ms(source))
            medians.append(timings[len(timings) // 2])
            p95s.append(timings[int(len(timings) * 0.95)])
            parses.append(parse_ms(source))
        median, p95, parsed = (statistics.median(v) for v in (medians, p95s, parses))
        print(f"| {name} | {len(source.splitlines())} | {median:.2f} / {p95:.2f} | {parsed:.2f} | "
              f"{median / parsed:.2f} |")


if __name__ == "__main__":
    main()
