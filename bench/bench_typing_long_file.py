"""What one keystroke into a 5,000-line file costs the server, all of its work included.

Usage: PYTHONPATH=. python bench/bench_typing_long_file.py [--lines 5000] [--edits 20] [--rounds 3]

A real `torch-lsp serve` over stdio (bench/lsp_client.py), default settings, a workspace holding
one generated training module (bench/bench_rules.py's, the static rules' file-scale bench).
The document is opened and its first diagnostics awaited; then `--edits` edits inside one
top-level function each, spread through the file (bench_rules.edited_versions: every other one
a new line, which moves every line below it), sent as editors send them (the changed lines as a
range), one at a time: each waits for its diagnostics, then `--settle` seconds for the rest of
the server's work on it (the workspace index of the open buffer, the shape job's planning).

Reported, medians over `--rounds` rounds:
- the server's CPU per edit (`/proc` user + system time over the typing, divided by the edits),
  against the same server's CPU over as long a wait without edits (what it does idle);
- the diagnostics' latency per edit, as this client sees it (p50 / p95);
- the server's RSS after the edits;
- the same-run baseline: one `ast.parse` of the file in this process (CPU), the floor of a
  server that parses every version whole.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench_rules import edited_versions, generate  # noqa: E402
from lsp_client import StdioClient, cpu_times, rss_mb  # noqa: E402


def cpu_seconds(pid: int) -> float:
    user, system, _, _ = cpu_times(pid)
    return user + system


def line_change(old: str, new: str) -> dict:
    """The changed lines of `old` as one range change, as an editor would send it."""
    old_lines, new_lines = old.splitlines(keepends=True), new.splitlines(keepends=True)
    prefix = 0
    while prefix < min(len(old_lines), len(new_lines)) and old_lines[prefix] == new_lines[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(old_lines), len(new_lines)) - prefix and old_lines[-1 - suffix] == new_lines[-1 - suffix]:
        suffix += 1
    return {"range": {"start": {"line": prefix, "character": 0},
                      "end": {"line": len(old_lines) - suffix, "character": 0}},
            "text": "".join(new_lines[prefix:len(new_lines) - suffix])}


def one_round(lines: int, edits: int, settle: float) -> dict:
    workspace = Path(tempfile.mkdtemp(prefix="torch-lsp-long-typing-"))
    try:
        text = generate(lines)
        path = workspace / "train.py"
        path.write_text(text)
        client = StdioClient([sys.executable, "-m", "torch_lsp", "serve"], cwd=workspace,
                             env={**os.environ, "XDG_CACHE_HOME": str(workspace / ".cache")})
        try:
            client.initialize(workspace)
            uri = path.as_uri()
            client.open(path)
            client.wait_for("textDocument/publishDiagnostics", lambda p: p["uri"] == uri, timeout=300)
            time.sleep(settle * 4)  # the first scan, the first shape job, the API docs' prefetch
            pid = client.process.pid
            idle_from = cpu_seconds(pid)
            time.sleep(settle * edits)
            idle = (cpu_seconds(pid) - idle_from) / edits
            latencies = []
            current, version = text, 1
            started = cpu_seconds(pid)
            for _, edited in edited_versions(text, edits):
                version += 1
                sent = time.perf_counter()
                client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                         "contentChanges": [line_change(current, edited)]})
                at, _ = client.wait_for("textDocument/publishDiagnostics",
                                        lambda p, v=version: p["uri"] == uri and p.get("version") == v, timeout=300)
                latencies.append((at - sent) * 1000)
                current = edited
                time.sleep(settle)
            per_edit = (cpu_seconds(pid) - started) / edits
            rss = rss_mb(pid)
        finally:
            client.close()
        parse_started = time.process_time()
        ast.parse(current)
        parse = time.process_time() - parse_started
        latencies.sort()
        return {"cpu": per_edit * 1000, "idle": idle * 1000, "parse": parse * 1000, "rss": rss,
                "p50": latencies[len(latencies) // 2], "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))]}
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=5000)
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after each edit's diagnostics")
    args = parser.parse_args()
    rounds = [one_round(args.lines, args.edits, args.settle) for _ in range(args.rounds)]
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    each = ", ".join(f"{r['cpu']:.0f}" for r in rounds)
    print(f"load average {os.getloadavg()[0]:.1f}; {args.lines}-line module, {args.edits} edits, "
          f"medians of {args.rounds} rounds (server CPU per edit in each round: {each} ms)\n")
    print("| server CPU per edit (ms) | idle, per as long (ms) | ast.parse of the file (ms CPU) | per edit / parse "
          "| diagnostics p50 / p95 (ms) | server RSS after (MiB) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {median['cpu']:.1f} | {median['idle']:.1f} | {median['parse']:.1f} | {median['cpu'] / median['parse']:.2f}x "
          f"| {median['p50']:.0f} / {median['p95']:.0f} | {median['rss']:.0f} |")


if __name__ == "__main__":
    main()
