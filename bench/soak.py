"""Soak: a long editing session over many documents, recording the server's and the shape
worker's memory. Shapes on (the real worker), edits that keep the code valid, hovers between.

    python bench/soak.py --minutes 10 --documents 30

Prints one line per sample (time, edits, server RSS, worker RSS, load average) and a summary:
the server must not grow with edits (pygls' notification futures are dropped, see
server/protocol.py) and the worker must not accumulate jobs (every job is a fork that ends).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.lsp_client import StdioClient, rss_mb  # noqa: E402


def documents(count: int) -> list[tuple[Path, str]]:
    sources = sorted(p for p in (ROOT / "fixtures").rglob("*.py") if "runs" not in p.parts)
    chosen = []
    for n in range(count):
        source = sources[n % len(sources)]
        # Editor buffers next to the fixtures (never written): same imports, distinct documents.
        chosen.append((source.with_name(f"soak_{n}_{source.name}"), source.read_text()))
    return chosen


def worker_rss_mb(pid: int | None) -> float:
    """The warm worker itself (its jobs are short-lived forks, measured while they run)."""
    return rss_mb(pid) if pid else 0.0


def info(client: StdioClient) -> dict:
    answer, _ = client.request("workspace/executeCommand", {"command": "torch-lsp.serverInfo", "arguments": []})
    return answer["result"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--documents", type=int, default=30)
    parser.add_argument("--edits-per-second", type=float, default=5)
    parser.add_argument("--sample-seconds", type=float, default=30)
    args = parser.parse_args()
    rng = random.Random(11)
    client = StdioClient([sys.executable, "-m", "torch_lsp", "serve"], cwd=ROOT)
    client.initialize(ROOT, {"debounceMs": 150})
    docs = documents(args.documents)
    versions = {}
    for path, text in docs:
        client.open(path, text)
        versions[path] = 1
    tails = {path: 0 for path, _ in docs}  # characters appended to the last line, removed later
    started = time.monotonic()
    next_sample = started
    edits = hovers = 0
    samples = []
    print("     s   edits  server MiB  worker MiB  workers  load")
    try:
        while time.monotonic() - started < args.minutes * 60:
            path, text = rng.choice(docs)
            uri = path.as_uri()
            last = text.count("\n")
            versions[path] += 1
            if tails[path] < 40:  # type a comment at the end, then delete it: the code stays valid
                change = {"range": {"start": {"line": last, "character": tails[path]},
                                    "end": {"line": last, "character": tails[path]}},
                          "text": "#" if tails[path] == 0 else "x"}
                tails[path] += 1
            else:
                change = {"range": {"start": {"line": last, "character": 0},
                                    "end": {"line": last, "character": tails[path]}}, "text": ""}
                tails[path] = 0
            client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": versions[path]},
                                                     "contentChanges": [change]})
            edits += 1
            if edits % 3 == 0:
                client.request("textDocument/hover", {"textDocument": {"uri": uri},
                                                      "position": {"line": rng.randrange(max(last, 1)), "character": 4}})
                hovers += 1
            if time.monotonic() >= next_sample:
                facts = info(client)
                worker = facts.get("shapeWorkerPid")
                sample = (time.monotonic() - started, edits, facts["rssMb"], worker_rss_mb(worker),
                          _workers(facts["pid"]), os.getloadavg()[0])
                samples.append(sample)
                print("%6.0f %7d %11.1f %11.1f %8d %5.2f" % sample, flush=True)
                next_sample += args.sample_seconds
            time.sleep(1 / args.edits_per_second)
        facts = info(client)
        final = (time.monotonic() - started, edits, facts["rssMb"], worker_rss_mb(facts.get("shapeWorkerPid")),
                 _workers(facts["pid"]), os.getloadavg()[0])
        samples.append(final)
        print("%6.0f %7d %11.1f %11.1f %8d %5.2f" % final)
        first = samples[1] if len(samples) > 2 else samples[0]  # after the first minute's imports
        print(f"\n{edits} edits, {hovers} hovers, {args.documents} documents, {args.minutes:g} min, "
              f"{facts['shapeJobs']} shape jobs sent. Server RSS {first[2]:.1f} -> {final[2]:.1f} MiB "
              f"(max {max(s[2] for s in samples):.1f}); worker RSS {first[3]:.1f} -> {final[3]:.1f} MiB "
              f"(max {max(s[3] for s in samples):.1f}); shape workers alive at the end: {final[4]}; "
              f"load average {min(s[5] for s in samples):.1f}-{max(s[5] for s in samples):.1f}")
    finally:
        client.close()


def _workers(server_pid: int) -> int:
    count = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if parent == server_pid and b"torch_lsp.shapes.worker" in (entry / "cmdline").read_bytes():
                    count += 1
            except (OSError, ValueError, IndexError):
                continue
    return count


if __name__ == "__main__":
    main()
