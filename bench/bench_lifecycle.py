"""How soon the server process ends after `exit` or after its input closes (idle, and under
load: documents being analysed and requests in flight), and what a shape job's sandbox costs.

    python bench/bench_lifecycle.py [--runs 5]

Each figure is the median of --runs; the sandbox cost is measured against a plain fork of the
same warm process, in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.lsp_client import StdioClient  # noqa: E402

SERVER = [sys.executable, "-m", "torch_lsp", "serve"]


def load(client: StdioClient) -> None:
    """Eight 4,000-line documents being analysed and 50 hovers in flight."""
    text = "".join(f"value_{i} = [{i}] * {i % 7}\n" for i in range(4000))
    for n in range(8):
        client.open(ROOT / f"bench_load_{n}.py", text)
    for n in range(50):
        client._send({"jsonrpc": "2.0", "id": 10_000 + n, "method": "textDocument/hover",
                      "params": {"textDocument": {"uri": (ROOT / f"bench_load_{n % 8}.py").as_uri()},
                                 "position": {"line": n, "character": 3}}})


def time_to_end(how: str, loaded: bool) -> tuple[float, int]:
    client = StdioClient(SERVER)
    client.initialize(ROOT)
    client.request("workspace/executeCommand", {"command": "torch-lsp.serverInfo", "arguments": []})
    if loaded:
        load(client)
    started = time.perf_counter()
    if how == "exit":
        client.notify("exit", None)
    else:
        client.process.stdin.close()
    status = client.process.wait(timeout=60)
    return time.perf_counter() - started, status


SANDBOX_COST = """
import json, os, statistics, sys, tempfile, time
import torch
from torch_lsp.shapes import sandbox
def fork_and(enter):
    job = tempfile.mkdtemp()
    read, write = os.pipe()
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        if enter:
            os.setsid()
            sandbox.enter(job, sandbox.Limits())
        os.write(write, b"x")
        os._exit(0)
    os.read(read, 1)
    elapsed = time.perf_counter() - started
    os.waitpid(pid, 0)
    os.rmdir(job)
    return elapsed * 1000
runs = int(sys.argv[1])
plain = statistics.median(fork_and(False) for _ in range(runs))
entered = statistics.median(fork_and(True) for _ in range(runs))
print(json.dumps({"plain_fork_ms": plain, "fork_and_enter_ms": entered}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    for how in ("exit", "stdin closed"):
        for loaded in (False, True):
            results = [time_to_end(how, loaded) for _ in range(args.runs)]
            seconds = statistics.median(r[0] for r in results)
            statuses = sorted({r[1] for r in results})
            print(f"{how:<13} {'under load' if loaded else 'idle':<10} ended after {seconds * 1000:6.0f} ms "
                  f"(median of {args.runs}; max {max(r[0] for r in results) * 1000:.0f} ms), exit status {statuses}")
    done = subprocess.run([sys.executable, "-c", SANDBOX_COST, str(max(args.runs, 20))], capture_output=True,
                          text=True, cwd=ROOT, check=True)
    cost = json.loads(done.stdout)
    print(f"a job's fork in a process that imported torch: {cost['plain_fork_ms']:.1f} ms plain, "
          f"{cost['fork_and_enter_ms']:.1f} ms with sandbox.enter() (median of {max(args.runs, 20)})")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "torch_lsp", "serve", "--check-sandbox"], capture_output=True, cwd=ROOT)
    print(f"torch-lsp serve --check-sandbox: {(time.perf_counter() - started) * 1000:.0f} ms")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
