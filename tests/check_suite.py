"""Check a test suite against tests/README.md: no fixed sleeps, no wall-clock assertions, and
(with --run) the quick suite's duration on this machine, optionally under CPU load.

    python tests/check_suite.py                      # scan only: the patterns, file:line each
    python tests/check_suite.py --run                # + run `python -m pytest` once, timed
    python tests/check_suite.py --run --load 2       # ... with 2 busy processes beside it
    python tests/check_suite.py --run --load 2 --repeat 20 -- -p no:randomly   # 20 runs in a row

Exit status 1 when a pattern is found, a run fails, or a run takes longer than --budget
(300 s: the quick suite on two busy cores). A line may carry `# wall-clock ok: <why>` or
`# fixed sleep ok: <why>` when the pattern is what the test is about (say why).
"""

from __future__ import annotations

import argparse
import ast
import multiprocessing
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIME_FUNCTIONS = {"time", "monotonic", "perf_counter", "process_time", "time_ns", "monotonic_ns", "perf_counter_ns",
                  "now", "utcnow"}
TIME_WORDS = re.compile(r"(elapsed|duration|latency|seconds|_ms\b|took)", re.IGNORECASE)


def _is_time_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and (
        (isinstance(node.func, ast.Attribute) and node.func.attr in TIME_FUNCTIONS)
        or (isinstance(node.func, ast.Name) and node.func.id in TIME_FUNCTIONS))


def _is_sleep(node: ast.AST) -> bool:
    func = node.func if isinstance(node, ast.Call) else None
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    return name == "sleep" and bool(node.args) and not (
        isinstance(node.args[0], ast.Constant) and node.args[0].value in (0, 0.0))


class _Scanner(ast.NodeVisitor):
    """Per function: which names hold times, and where sleeps and time assertions are."""

    def __init__(self, path: Path, lines: list[str]):
        self.path, self.lines = path, lines
        self.problems: list[str] = []
        self.loops = 0
        self.timed: set[str] = set()

    def _flag(self, node: ast.AST, what: str, waiver: str) -> None:
        line = self.lines[node.lineno - 1]
        if waiver not in line:
            self.problems.append(f"{self.path.relative_to(ROOT)}:{node.lineno}: {what}: {line.strip()}")

    def visit_FunctionDef(self, node):
        outer_loops, outer_timed = self.loops, self.timed
        self.loops, self.timed = 0, set()
        self.generic_visit(node)
        self.loops, self.timed = outer_loops, outer_timed

    visit_AsyncFunctionDef = visit_FunctionDef

    def _loop(self, node):
        self.loops += 1
        self.generic_visit(node)
        self.loops -= 1

    visit_While = visit_For = visit_AsyncFor = _loop

    def visit_Assign(self, node):
        if any(_is_time_call(n) for n in ast.walk(node.value)) or any(
                isinstance(n, ast.Name) and n.id in self.timed for n in ast.walk(node.value)):
            self.timed.update(t.id for t in node.targets if isinstance(t, ast.Name))
        self.generic_visit(node)

    def visit_Call(self, node):
        if _is_sleep(node) and self.loops == 0:
            self._flag(node, "a fixed sleep (wait for the event instead, with a generous ceiling)",
                       "fixed sleep ok")
        self.generic_visit(node)

    def visit_Assert(self, node):
        compared = [n for n in ast.walk(node.test) if isinstance(n, ast.Compare)
                    and any(isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)) for op in n.ops)]
        for comparison in compared:
            mentions = list(ast.walk(comparison))
            if any(_is_time_call(n) for n in mentions) or any(isinstance(n, ast.Name) and n.id in self.timed
                                                               for n in mentions) or any(
                    isinstance(n, ast.Constant) and isinstance(n.value, str) and TIME_WORDS.search(n.value)
                    or isinstance(n, (ast.Name, ast.Attribute)) and TIME_WORDS.search(
                        n.id if isinstance(n, ast.Name) else n.attr) for n in mentions):
                self._flag(node, "an assertion on wall-clock time (measure in bench/, never assert it)",
                           "wall-clock ok")
                break
        self.generic_visit(node)


def scan(folder: Path) -> list[str]:
    problems = []
    for path in sorted(folder.rglob("*.py")):
        if path.name == Path(__file__).name:
            continue
        text = path.read_text(encoding="utf-8")
        scanner = _Scanner(path, text.splitlines())
        scanner.visit(ast.parse(text))
        problems += scanner.problems
    return problems


def _busy() -> None:
    while True:
        pass


def run_suite(load: int, pytest_args: list[str]) -> tuple[int, float, str]:
    hogs = [multiprocessing.Process(target=_busy, daemon=True) for _ in range(load)]
    for hog in hogs:
        hog.start()
    started = time.monotonic()
    try:
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=10",
                              *pytest_args], cwd=ROOT, capture_output=True, text=True)
    finally:
        for hog in hogs:
            hog.terminate()
    return run.returncode, time.monotonic() - started, run.stdout[-3000:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="store_true", help="also run the quick suite, timed")
    parser.add_argument("--load", type=int, default=0, help="busy processes running beside the suite")
    parser.add_argument("--repeat", type=int, default=1, help="runs in a row (with --run)")
    parser.add_argument("--budget", type=float, default=300.0, help="seconds a run may take")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args()

    problems = scan(ROOT / "tests")
    for problem in problems:
        print(problem)
    print(f"{len(problems)} fixed sleep / wall-clock pattern(s) in tests/")
    failed = bool(problems)
    if args.run:
        passes, within, times = 0, 0, []
        for number in range(1, args.repeat + 1):
            code, seconds, tail = run_suite(args.load, args.pytest_args)
            times.append(seconds)
            passes += code == 0
            within += seconds <= args.budget
            summary = tail.strip().splitlines()[-1] if tail.strip() else "(no output)"
            print(f"run {number}/{args.repeat}: {'passed' if code == 0 else 'FAILED'} in {seconds:.0f} s "
                  f"(load average {os.getloadavg()[0]:.1f} at the end, {args.load} busy processes): {summary}",
                  flush=True)
            if code != 0:
                print(tail)
        times.sort()
        print(f"{passes}/{args.repeat} runs passed; {within}/{args.repeat} within {args.budget:.0f} s; "
              f"median {times[len(times) // 2]:.0f} s, slowest {times[-1]:.0f} s")
        failed = failed or passes < args.repeat or within < args.repeat
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
