"""What the cost observers (module tree, FLOPs, memory, CUDA-like run) add to a shape job.

    PYTHONPATH=. python bench/bench_cost.py [--runs 7]

Runs each file as a shape job in this process (as a forked job would, without the fork), with
and without the observers, interleaved, and prints the median CPU time of each job and the
ratio. The baseline is the same job without observers, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESNET50_STEP = """
import torch, torchvision
model = torchvision.models.resnet50()
optimizer = torch.optim.Adam(model.parameters())
for step in range(2):
    images, labels = torch.randn(32, 3, 224, 224), torch.randint(0, 1000, (32,))
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
"""

CASES = {
    "seed LeNet (fixtures/cifar10_seed.py)": ((ROOT / "fixtures" / "cifar10_seed.py").read_text(),
                                               str(ROOT / "fixtures" / "cifar10_seed.py")),
    "resnet50 training step": (RESNET50_STEP, "/bench/resnet50_step.py"),
    "transformer encoder (fixtures/transformer_encoder.py)": (
        (ROOT / "fixtures" / "transformer_encoder.py").read_text(), str(ROOT / "fixtures" / "transformer_encoder.py")),
}


def job_ms(source: str, path: str, observers: list[str]) -> float:
    """CPU time of the job (this process): steadier than wall time on a shared machine."""
    from tests.shapes.cost_helpers import run_observed

    started = time.process_time()
    report, _ = run_observed(source, path, observers=observers, timeout=120)
    elapsed = (time.process_time() - started) * 1000
    assert not report.errors, report.errors
    return elapsed


def main(argv: list[str] | None = None) -> int:
    import io
    from contextlib import redirect_stdout

    from torch_lsp.shapes.observers import COST

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    print("| file (median CPU time of the job) | without observers | with the cost observers | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, (source, path) in CASES.items():
        plain, costs = [], []
        with redirect_stdout(io.StringIO()):  # the fixtures print their loss
            job_ms(source, path, list(COST))  # warm: first-use imports inside torch
            for _ in range(args.runs):
                plain.append(job_ms(source, path, []))
                costs.append(job_ms(source, path, list(COST)))
        base, with_costs = statistics.median(plain), statistics.median(costs)
        print(f"| {name} | {base:.0f} ms | {with_costs:.0f} ms | {with_costs / base:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
