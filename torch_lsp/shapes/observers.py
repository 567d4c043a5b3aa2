"""Observers: extra recorders a job can run beside the shape tracer (worker side).

An observer is created per job with the job's context, started before the driver runs and
stopped after the probes; `results()` returns JSON-able data by file path ("" = the driver),
stored in that file's `ShapeReport.extras[observer.name]`. The server asks for observers by
name in `JobSpec.observers`; this table says where each lives, so that a job only imports the
observers it uses.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

# name -> "module:factory"; the factory takes the JobContext and returns an Observer.
FACTORIES: dict[str, str] = {
    # The model summary's module-call tree, FLOPs per call and line, the training step's memory,
    # and what makes a meta run allocate like CUDA (autocast, fused attention).
    "modules": "torch_lsp.shapes.observe_modules:create",
    "flops": "torch_lsp.shapes.observe_cost:create",
    "memory": "torch_lsp.shapes.memory:create",
    "cuda_like": "torch_lsp.shapes.cuda_like:create",
}
# What the server and the CLI ask for: everything the summary, hover and code lenses show.
COST = ["cuda_like", "modules", "flops", "memory"]


class Observer(Protocol):
    name: str

    def start(self, context) -> None: ...

    def stop(self) -> None: ...

    def results(self) -> dict[str, Any]: ...


def modules_of(names: list[str]) -> list[str]:
    """The modules that define the observers named (the worker imports them once, before it
    forks jobs that use them)."""
    return [FACTORIES[name].partition(":")[0] for name in names if name in FACTORIES]


def create(names: list[str], context) -> list[Observer]:
    """The observers named, in order; unknown names are ignored (an older worker), and so are
    observers the project's torch cannot run (too old for their APIs)."""
    created = []
    for name in names:
        target = FACTORIES.get(name)
        if target is None:
            continue
        module_name, _, factory = target.partition(":")
        try:
            created.append(getattr(importlib.import_module(module_name), factory)(context))
        except (ImportError, AttributeError):  # the project's torch lacks what it needs: shapes only
            continue
    return created
