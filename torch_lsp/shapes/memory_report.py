"""What the memory observer measured, as JSON for `report.extras["memory"]` (worker side).

The first iteration of the run is measured; the peak reported is that of the iterations after
it, which real training spends its time in (and `torch.cuda.max_memory_allocated()` reports):

- forward and backward: the measured peak, plus the optimizer state (allocated by the first
  step, alive from the second iteration on), plus the gradients when they survive into the next
  forward (no `zero_grad()`, or `zero_grad(set_to_none=False)`);
- the optimizer step: its measured peak (state, gradients, weights and the step's temporaries).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch_lsp.shapes.cost_view import MEMORY_CATEGORIES
from torch_lsp.shapes.memory import (ACTIVATIONS, BUFFERS, CUBLAS_WORKSPACE, FORWARD_BACKWARD, GRADS, HOST,
                                     OPTIMIZER, OTHER, STEP, WEIGHTS, WORKSPACE, cuda_block_bytes)

if TYPE_CHECKING:
    from torch_lsp.shapes.cost_view import MEMORY_CATEGORIES
from torch_lsp.shapes.memory import Phase, TrainingStepMemory

CATEGORIES = MEMORY_CATEGORIES  # on the GPU; HOST is not


def measured(observer: TrainingStepMemory) -> dict:
    ledger = observer.ledger
    forward_backward = ledger.phase(FORWARD_BACKWARD)
    step = ledger.phase(STEP)
    notes: list[str] = []
    result = {
        "training": observer.backward_seen,
        "batch": _batch(observer),
        "line": _loop_line(observer),
        "model_call": observer.model_call,
        "rounding": "cuda-512",
        "optimizers": observer.steps,
        "layers": [{"call": index, "saved": nbytes} for index, nbytes in sorted(observer.saved_by_call.items())],
        "notes": notes,
        "errors": observer.errors,
    }
    host = _split(forward_backward, observer).pop(HOST)
    if host:
        notes.append(f"{host:,} bytes of tensors made before the training loop (data) are not counted: "
                     "on a GPU they stay in CPU memory")
    if not observer.backward_seen:
        split = _gpu(_split(forward_backward, observer), observer)
        result.update(peak=sum(split.values()), phase="forward", breakdown=split, phases=[])
        return result

    grads_persist = observer.zeroed_to_none is not True
    optimizer_bytes, how = _optimizer_state(observer)
    if how:
        notes.append(how)
    if grads_persist:
        notes.append("gradients are zeroed, not set to None (or never cleared): they stay allocated during forward")

    fb_split = _gpu(_split(forward_backward, observer), observer)
    fb_split[OPTIMIZER] += optimizer_bytes
    if grads_persist and not observer.grads_preallocated:
        fb_split[GRADS] += max(observer.grad_bytes - fb_split[GRADS], 0)
    phases = [{"name": FORWARD_BACKWARD, "peak": sum(fb_split.values()), "breakdown": fb_split}]
    if step is not None:
        step_split = _gpu(_split(step, observer), observer)
        phases.append({"name": STEP, "peak": sum(step_split.values()), "breakdown": step_split})
    top = max(phases, key=lambda p: p["peak"])
    result.update(peak=top["peak"], phase=top["name"], breakdown=top["breakdown"], phases=phases,
                  persistent={GRADS: observer.grad_bytes, OPTIMIZER: optimizer_bytes})
    return result


def _split(phase: Phase, observer: TrainingStepMemory) -> dict[str, int]:
    split = dict.fromkeys((*CATEGORIES, HOST), 0)
    loop_start = observer.step_start_id or 0
    for storage_id, nbytes in phase.snapshot:
        category = observer.category.get(storage_id, OTHER)
        split[HOST if category == OTHER and storage_id < loop_start else category] += nbytes
    return split


def _gpu(split: dict[str, int], observer: TrainingStepMemory) -> dict[str, int]:
    """The categories on the GPU, with cuBLAS's workspaces when the estimate is for CUDA."""
    gpu = {category: split.get(category, 0) for category in CATEGORIES}
    if observer.ledger.round_bytes is cuda_block_bytes:
        gpu[WORKSPACE] = CUBLAS_WORKSPACE * len(observer.ledger.matmul_threads)
    return gpu


def _optimizer_state(observer: TrainingStepMemory) -> tuple[int, str | None]:
    """Bytes of optimizer state: measured by the step that ran, else from the optimizer's type."""
    total, estimated = 0, []
    for step in observer.steps:
        if step["ran"]:
            total += step["state_bytes"]
        else:
            total += int(step["state_per_param"] * step["param_bytes"])
            estimated.append(f"{step['type']} ({step['error']})")
    if not observer.steps:
        optimizers = observer.optimizers()
        if not optimizers:
            return 0, "no optimizer was built: optimizer state not counted"
        return 0, "the optimizer never stepped in the run: optimizer state not counted"
    if estimated:
        return total, "optimizer state estimated from the optimizer's type: the step failed on meta: " + "; ".join(estimated)
    return total, None


def _batch(observer: TrainingStepMemory) -> int | None:
    if observer.model_call is None:
        calls = [c for c in observer.tree.calls if c.parent is None and c.inputs]
        call = calls[0] if calls else None
    else:
        call = observer.tree.calls[observer.model_call]
    if call is None or not call.inputs:
        return None
    first = call.inputs[0]
    shape = first.get("shape") if isinstance(first, dict) else None
    return shape[0] if shape else None


def _loop_line(observer: TrainingStepMemory) -> dict | None:
    """The training loop around the backward call (innermost), else the backward line itself."""
    where = observer.backward_line
    if where is None:
        return None
    file, line = where
    recorder = observer.context.recorder if observer.context is not None else None
    plan = recorder.plans.get(file) if recorder is not None else None
    loops = [loop for loop in plan.run_once_loops if loop[0] <= line <= loop[1]] if plan is not None else []
    if loops:
        start, end = min(loops, key=lambda loop: loop[1] - loop[0])
        return {"file": file, "line": start, "end_line": end, "backward_line": line}
    return {"file": file, "line": line, "end_line": line, "backward_line": line}
