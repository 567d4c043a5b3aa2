"""Overhead of torch-lsp's training launcher: steps/s with and without it.

    python bench/bench_launcher.py [--runs 5] [--steps 600]

Runs bench/launcher_workload.py alternately as ``python launcher_workload.py`` and under the
launcher (the same process tree as ``torch-lsp train``: probe installed, metrics.jsonl written,
the run followed by the runner), and reports the median steps/s of each and the difference.
Target: the launcher within 5 % of plain Python.

``--paired`` measures the probe's cost inside one process instead: blocks of 20 steps with the
observer on and off, interleaved, and the median ratio of adjacent blocks. It is the number to
trust on a busy machine, where separate processes swing by tens of percent.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from torch_lsp.training.runner import RunSpec, start_run  # noqa: E402

WORKLOAD = ROOT / "bench" / "launcher_workload.py"
RATE = re.compile(r"steps_per_s=([\d.]+)")


def plain(steps: int, device: str) -> float:
    output = subprocess.run([sys.executable, str(WORKLOAD), str(steps), device], capture_output=True,
                            text=True, check=True).stdout
    return float(RATE.search(output)[1])


def launched(steps: int, device: str, runs_dir: Path) -> tuple[float, dict]:
    run = start_run(RunSpec(script=str(WORKLOAD), args=[str(steps), device]), runs_dir)
    summary = run.wait(timeout_s=600)
    if not summary or summary["status"] != "completed":
        raise SystemExit(f"launcher run failed: {summary}")
    return float(RATE.search(run.record.file("stdout.log").read_text())[1]), summary


def paired(pairs: int, device: str) -> None:
    import importlib.util
    import time

    folder = ROOT / "torch_lsp" / "training"
    for name, file in (("_torch_lsp_epochs", "epochs.py"), ("_torch_lsp_probe", "probe.py")):
        spec = importlib.util.spec_from_file_location(name, folder / file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    probe = module
    with tempfile.TemporaryDirectory() as tmp:
        probe.install(tmp, str(WORKLOAD))
        observer = probe._observer
        sys.path.insert(0, str(WORKLOAD.parent))
        from launcher_workload import WARMUP, Workload

        workload = Workload(device)

        def block(on: bool) -> float:
            probe._observer = observer if on else None
            started = time.perf_counter()
            workload.steps(20)
            return time.perf_counter() - started

        workload.steps(WARMUP)
        ratios = []
        for index in range(pairs):
            if index % 2:
                with_probe, without = block(True), block(False)
            else:
                without, with_probe = block(False), block(True)
            ratios.append(with_probe / without)
        probe._observer = observer
    quartiles = statistics.quantiles(ratios, n=4)
    print(f"paired blocks of 20 steps on {device}: {pairs} pairs, median time ratio probe/no probe "
          f"{statistics.median(ratios):.4f} (quartiles {quartiles[0]:.3f}..{quartiles[2]:.3f}); "
          f"overhead {(statistics.median(ratios) - 1) * 100:+.1f} % (target: within 5 %)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--device", default="cpu", help="cpu (the target) or cuda")
    parser.add_argument("--paired", type=int, metavar="PAIRS",
                        help="in-process paired measurement with this many pairs of blocks")
    args = parser.parse_args()
    if args.paired:
        paired(args.paired, args.device)
        return
    with tempfile.TemporaryDirectory() as tmp:
        without, with_launcher = [], []
        for index in range(args.runs):
            # Alternate which goes first (ABBA), so drifts in load or clock speed hit both alike.
            order = ("plain", "launcher") if index % 2 == 0 else ("launcher", "plain")
            for which in order:
                if which == "plain":
                    without.append(plain(args.steps, args.device))
                else:
                    rate, summary = launched(args.steps, args.device, Path(tmp))
                    with_launcher.append(rate)
            print(f"run {index + 1}: plain {without[-1]:.1f} steps/s, launcher {with_launcher[-1]:.1f} steps/s",
                  file=sys.stderr)
    base, observed = statistics.median(without), statistics.median(with_launcher)
    overhead = (base - observed) / base * 100
    print(f"device {args.device}; the launcher observed device={summary['device']}, "
          f"{summary['steps']} steps, final loss {summary['final_loss']:.4f}")
    print(f"plain python:   median {base:.1f} steps/s  (runs: {', '.join(f'{v:.1f}' for v in without)})")
    print(f"under launcher: median {observed:.1f} steps/s  (runs: {', '.join(f'{v:.1f}' for v in with_launcher)})")
    print(f"overhead: {overhead:+.1f} % (target: within 5 %)")


if __name__ == "__main__":
    main()
