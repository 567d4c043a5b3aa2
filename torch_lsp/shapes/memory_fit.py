"""The largest batch that fits, from the step's memory at a few batch sizes (no torch).

A training step's peak is affine in the batch size for the models people train (weights,
gradients and optimizer state are fixed; activations and temporaries grow with the batch), so
two meta runs give the curve and a third, at the predicted limit, checks it. If the check does
not fit (a step that is not affine, e.g. an attention matrix that grows with a padded length),
the curve is refitted through the closest points and checked again, a few times at most.

What "fits" means: the peak that torch's caching allocator hands out
(`torch.cuda.max_memory_allocated()`), plus room the allocator and CUDA take outside it: the CUDA
context (about 0.5 GiB, not counted by torch) and fragmentation of the caching allocator's
segments (5 % of the rest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable, Generator

GIB = 1 << 30
CUDA_CONTEXT_BYTES = GIB // 2
FRAGMENTATION = 0.05
MAX_BATCH = 1 << 20
MAX_RUNS = 5


@dataclass(frozen=True)
class Curve:
    fixed: float  # bytes at batch 0: weights, gradients, optimizer state
    per_sample: float  # bytes each sample adds

    def at(self, batch: int) -> float:
        return self.fixed + self.per_sample * batch


def fit(points: list[tuple[int, int]]) -> Curve | None:
    """Least-squares line through (batch, peak bytes) points; None when the batch never varied."""
    batches = {b for b, _ in points}
    if len(batches) < 2:
        return None
    n = len(points)
    mean_b = sum(b for b, _ in points) / n
    mean_p = sum(p for _, p in points) / n
    spread = sum((b - mean_b) ** 2 for b, _ in points)
    slope = sum((b - mean_b) * (p - mean_p) for b, p in points) / spread
    return Curve(mean_p - slope * mean_b, slope)


def usable_bytes(capacity_gib: float) -> float:
    """Of a GPU's memory (GiB, as nvidia-smi's MiB / 1024), what a training step's tensors can use."""
    return max(capacity_gib * GIB - CUDA_CONTEXT_BYTES, 0) * (1 - FRAGMENTATION)


def largest_batch(curve: Curve, usable: float) -> int | None:
    if curve.per_sample <= 0:
        return None
    batch = int((usable - curve.fixed) // curve.per_sample)
    return max(min(batch, MAX_BATCH), 0)


def search(run_at: Callable[[int | None], dict | None], usable: float) -> dict:
    """Run the step at the file's batch, at twice it, then at the predicted limit (and refit if
    needed). `run_at(batch)` returns the memory extras of a run with that batch (None: the file's);
    `usable` is the bytes the step may use (`usable_bytes(capacity)`)."""
    steps = search_steps(usable)
    batch = next(steps)
    try:
        while True:
            batch = steps.send(run_at(batch))
    except StopIteration as done:
        return done.value


async def search_async(run_at: Callable[[int | None], Awaitable[dict | None]], usable: float) -> dict:
    """`search` with a coroutine running the step (the server and the CLI run jobs in the worker)."""
    steps = search_steps(usable)
    batch = next(steps)
    try:
        while True:
            batch = steps.send(await run_at(batch))
    except StopIteration as done:
        return done.value


def search_steps(usable: float) -> Generator[int | None, dict | None, dict]:
    """The search as a generator: yields the batch size to run next (None: the file's own),
    receives that run's memory extras, returns the result."""
    result: dict = {"usable_bytes": int(usable), "points": [], "largest_batch": None}
    first = yield None
    if not first or not first.get("batch") or "peak" not in first:
        result["reason"] = "no batch size found: the model was not called on a batch in a training step"
        return result
    base = int(first["batch"])
    measured = {base: int(first["peak"])}
    second = yield base * 2
    if second and second.get("batch") == base * 2:
        measured[base * 2] = int(second["peak"])
    points = dict(measured)
    for _ in range(MAX_RUNS - 2):
        curve = fit(sorted(points.items()))
        if curve is None or curve.per_sample <= 0:
            result["reason"] = ("the batch size does not change the step's memory here (is the batch built "
                                "in the file rather than by a DataLoader?)")
            break
        guess = largest_batch(curve, usable)
        result.update(fixed_bytes=int(curve.fixed), bytes_per_sample=int(curve.per_sample))
        if guess is None or guess < 1:
            result["largest_batch"] = 0
            result["reason"] = "even batch 1 does not fit"
            break
        if guess >= MAX_BATCH:
            result["largest_batch"] = MAX_BATCH
            result["reason"] = f"at least {MAX_BATCH:,}: the search stops there"
            break
        if guess in measured:
            result["largest_batch"] = guess if measured[guess] <= usable else guess - 1
            break
        checked = yield guess
        if not checked or checked.get("batch") != guess:
            result["largest_batch"] = guess
            result["reason"] = "predicted from the curve; the check at that batch did not run"
            break
        measured[guess] = points[guess] = int(checked["peak"])
        if measured[guess] <= usable:
            result["largest_batch"] = guess
            break
        # Not affine up there: refit through the points closest to the limit and try again.
        nearest = sorted(points.items(), key=lambda item: abs(item[1] - usable))[:2]
        points = dict(sorted(nearest))
    if result["largest_batch"] is None and "reason" not in result:
        fitting = [batch for batch, peak in measured.items() if peak <= usable]
        result["largest_batch"] = max(fitting, default=0)
        result["reason"] = "the curve is not affine: the largest batch that was checked"
    result["points"] = sorted([batch, peak] for batch, peak in measured.items())
    return result
