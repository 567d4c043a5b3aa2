"""Where the memory observer listens (worker side): each `install_*` connects one event of the
run to `TrainingStepMemory` and returns how to undo it. Kept apart from memory.py so that the
accounting reads without the plumbing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from torch_lsp.shapes.memory import TrainingStepMemory

_OPTIMIZER_STEP = "optimizer step"  # the reason the plan gives when it leaves a step out


def install(observer: TrainingStepMemory) -> list[Callable[[], None]]:
    return [install_registrations(observer), install_saved_tensors(observer), install_backward(observer),
            install_optimizers(observer), install_zero_grad(observer), install_plan_helper(observer)]


def install_registrations(observer: TrainingStepMemory) -> Callable[[], None]:
    from torch.nn.modules import module as module_globals
    from torch_lsp.shapes.memory import BUFFERS, WEIGHTS

    seen: set[int] = set()

    def parameter(module, name, value):
        _remember(module)
        observer.mark(value, WEIGHTS)

    def buffer(module, name, value):
        _remember(module)
        observer.mark(value, BUFFERS)

    def _remember(module):
        if id(module) not in seen:
            seen.add(id(module))
            observer.module_seen(module)

    def called(module, args):  # modules built before the run started
        if id(module) not in seen:
            seen.add(id(module))
            observer.module_called(module)

    handles = [module_globals.register_module_parameter_registration_hook(parameter),
               module_globals.register_module_buffer_registration_hook(buffer),
               module_globals.register_module_forward_pre_hook(called)]
    return lambda: [h.remove() for h in handles]


def install_saved_tensors(observer: TrainingStepMemory) -> Callable[[], None]:
    def pack(tensor):
        observer.saved_for_backward(tensor)
        return tensor

    hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor)
    hooks.__enter__()
    return lambda: hooks.__exit__(None, None, None)


def install_backward(observer: TrainingStepMemory) -> Callable[[], None]:
    real_backward = torch.autograd.backward

    def backward(*args, **kwargs):
        frame = observer.tree.user_frame(2)
        observer.backward_starts((frame.f_code.co_filename, frame.f_lineno - 1) if frame is not None else None)
        try:
            return real_backward(*args, **kwargs)
        finally:
            observer.backward_done()

    torch.autograd.backward = backward
    return lambda: setattr(torch.autograd, "backward", real_backward)


def install_optimizers(observer: TrainingStepMemory) -> Callable[[], None]:
    real_init = torch.optim.Optimizer.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        observer.optimizer_built(self)

    torch.optim.Optimizer.__init__ = init
    return lambda: setattr(torch.optim.Optimizer, "__init__", real_init)


def install_zero_grad(observer: TrainingStepMemory) -> Callable[[], None]:
    originals = {cls: cls.zero_grad for cls in (torch.optim.Optimizer, torch.nn.Module)}

    def patched(real):
        def zero_grad(self, set_to_none: bool = True):
            observer.zero_grad_called(bool(set_to_none))
            return real(self, set_to_none)
        return zero_grad

    for cls, real in originals.items():
        cls.zero_grad = patched(real)
    return lambda: [setattr(cls, "zero_grad", real) for cls, real in originals.items()]


def install_plan_helper(observer: TrainingStepMemory) -> Callable[[], None]:
    """The plan's helper marks training loops (`once`, `once_while`: the step starts) and the
    optimizer steps it left out (`skipped`: take the step there)."""
    from torch_lsp.shapes.inputs import Helper

    real = {name: getattr(Helper, name) for name in ("once", "once_while", "skipped")}

    def once(self, iterable):
        observer.loop_starts()
        return real["once"](self, iterable)

    def once_while(self, line):
        observer.loop_starts()
        return real["once_while"](self, line)

    def skipped(self, reason: str = "", *args, **kwargs):
        if reason.startswith(_OPTIMIZER_STEP):
            observer.run_pending_steps()
        return real["skipped"](self, reason, *args, **kwargs)

    Helper.once, Helper.once_while, Helper.skipped = once, once_while, skipped
    return lambda: [setattr(Helper, name, value) for name, value in real.items()]
