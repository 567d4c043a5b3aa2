"""Start-up and first-diagnostics latency of `torch-lsp serve`, through a real stdio client.

Usage: python bench/bench_startup.py [--runs 7]
Prints a markdown table (medians over runs) for docs/benchmarks.md. The baseline measured in
the same run is a bare pygls server (same pygls/lsprotocol imports, no features): the part of
start-up that any pygls-based server pays. torch-lsp is measured with its initialize cache warm
(every start after the first for a given version and client) and cold (the first start).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lsp_client import StdioClient, rss_mb  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ["cifar10_seed.py", "missing_zero_grad.py", "mnist_mlp.py", "resnet_block.py", "transformer_encoder.py"]
BARE_PYGLS = textwrap.dedent("""
    from pygls.lsp.server import LanguageServer
    LanguageServer("bare", "0").start_io()
""")


def measure_torch_lsp(cache: str) -> dict[str, float]:
    """One start with the capabilities cache of server/fast_start.py in `cache` (hit or miss)."""
    client = StdioClient([sys.executable, "-m", "torch_lsp", "serve"], cwd=ROOT,
                         env={**os.environ, "XDG_CACHE_HOME": cache})
    started = time.perf_counter()
    result = {"initialize": client.initialize(ROOT)}
    for name in FIXTURES:
        path = ROOT / "fixtures" / name
        if not path.exists():
            continue
        sent = time.perf_counter()
        client.open(path)
        at, _ = client.wait_for("textDocument/publishDiagnostics", lambda p, u=path.as_uri(): p["uri"] == u)
        result[f"diagnostics {name}"] = (at - sent) * 1000
    result["spawn to all diagnostics"] = (time.perf_counter() - started) * 1000
    result["server RSS (MB)"] = rss_mb(client.process.pid)
    client.close()
    return result


def measure_bare_pygls() -> dict[str, float]:
    client = StdioClient([sys.executable, "-c", BARE_PYGLS], cwd=ROOT)
    result = {"initialize": client.initialize(ROOT), "server RSS (MB)": rss_mb(client.process.pid)}
    client.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    warm_cache = tempfile.mkdtemp()
    measure_torch_lsp(warm_cache)  # fills the initialize cache, as any earlier start would
    warm, cold, bare = [], [], []
    for _ in range(args.runs):  # interleaved so that machine load hits all alike
        warm.append(measure_torch_lsp(warm_cache))
        cold.append(measure_torch_lsp(tempfile.mkdtemp()))
        bare.append(measure_bare_pygls())
    print(f"| metric (median of {args.runs}) | torch-lsp | torch-lsp, first start (no cache) "
          f"| bare pygls server | ratio (torch-lsp / bare) |")
    print("| --- | --- | --- | --- | --- |")
    for key in warm[0]:
        mine = statistics.median(r[key] for r in warm)
        first = statistics.median(r[key] for r in cold)
        base = statistics.median(r[key] for r in bare) if key in bare[0] else None
        ratio = f"{mine / base:.2f}x" if base else ""
        unit = "" if "MB" in key else " ms"
        print(f"| {key} | {mine:.1f}{unit} | {first:.1f}{unit} | {'' if base is None else f'{base:.1f}{unit}'} | {ratio} |")


if __name__ == "__main__":
    main()
