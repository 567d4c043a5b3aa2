"""Cost of explain's call tracking on a meta forward of torchvision resnet50.

    python bench/explain_overhead.py [runs]

Prints medians of `runs` (default 15) rounds; each round times, in the same process and
interleaved (so load drift hits all three alike):
bare meta forward; with track_calls(function_calls=False) (module hooks only, for an engine
that feeds torch calls from its own TorchFunctionMode); with track_calls() (hooks + mode).
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torchvision

from torch_lsp.shapes.explain import track_calls


def interleaved_medians_ms(steps: dict, runs: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():
        step()  # warm-up
    for _ in range(runs):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def main(runs: int = 15) -> None:
    with torch.device("meta"):
        model = torchvision.models.resnet50(weights=None)
        images = torch.randn(1, 3, 224, 224)

    def bare():
        model(images)

    def hooks_only():
        with track_calls(function_calls=False):
            model(images)

    def hooks_and_mode():
        with track_calls():
            model(images)

    steps = {"bare": bare, "hooks": hooks_only, "hooks+mode": hooks_and_mode}
    for name, median in interleaved_medians_ms(steps, runs).items():
        print(f"{name:12s} {median:7.1f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
