"""Which nn.Module calls and which torch function call were running when torch raised.

Module calls come from global forward hooks, torch function calls from a TorchFunctionMode;
both are installed only inside ``track_calls()``. torch is imported lazily so the server
process can import this package for its names without paying for torch.
"""

from __future__ import annotations

import contextlib
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Iterator


@dataclass
class ModuleCall:
    """One nn.Module call in progress: the module and the positional inputs it received."""

    module: Any
    inputs: tuple

    @property
    def input_shapes(self) -> tuple:
        return tuple(shape_of(value) for value in self.inputs)


@dataclass
class TorchCall:
    """One torch function call (``torch.cat``, ``Tensor.view``, ``F.linear``...)."""

    func: Any
    args: tuple
    kwargs: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return getattr(self.func, "__name__", str(self.func))

    @property
    def arg_shapes(self) -> tuple:
        return tuple(shape_of(value) for value in self.args)


# Failures caught by user code (a retry loop, say) must not pile up without bound.
_MAX_REMEMBERED = 256


class CallTracker:
    """What was running when an exception was raised; filled by ``track_calls``."""

    def __init__(self) -> None:
        self.stack: list[ModuleCall] = []
        # Keyed by id(exc); the exception is stored too so its id cannot be reused.
        self._modules_at: dict[int, tuple[BaseException, tuple[ModuleCall, ...]]] = {}
        self._call_at: dict[int, tuple[BaseException, TorchCall]] = {}

    def modules_at_failure(self, exc: BaseException) -> tuple[ModuleCall, ...]:
        """Modules running when ``exc`` was raised, outermost first."""
        entry = self._modules_at.get(id(exc))
        return entry[1] if entry and entry[0] is exc else ()

    def call_at_failure(self, exc: BaseException) -> TorchCall | None:
        entry = self._call_at.get(id(exc))
        return entry[1] if entry and entry[0] is exc else None

    # The engine's own TorchFunctionMode can feed this instead of ours (track_calls(False)).
    # Only failures are recorded: a call that returns costs the tracker nothing.
    def record_failure(self, exc: BaseException, func: Any, args: tuple, kwargs: dict | None) -> None:
        # The innermost failing call is recorded first; outer ones must not overwrite it.
        if len(self._call_at) < _MAX_REMEMBERED and id(exc) not in self._call_at:
            self._call_at[id(exc)] = (exc, TorchCall(func, args, kwargs or {}))

    def enter(self, module: Any, inputs: tuple) -> None:
        """A module call starts (its forward pre-hook)."""
        self.stack.append(ModuleCall(module, inputs))

    def leave(self, module: Any, failed_with: BaseException | None, inner: tuple[ModuleCall, ...] = ()) -> None:
        """A module call ends (its always-called forward hook), raising `failed_with` if not
        None. `inner`: the calls inside it that ran without hooks (`calls_raised_through`)."""
        if failed_with is not None and len(self._modules_at) < _MAX_REMEMBERED:
            self._modules_at.setdefault(id(failed_with), (failed_with, (*self.stack, *inner)))
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index].module is module:
                del self.stack[index:]
                return


def failure_through(frame: types.FrameType) -> BaseException | None:
    """The exception on its way out through `frame`, if any. An always-called forward hook runs
    from `_call_impl`'s except block when the forward raised: that exception's traceback then
    passes through `_call_impl`'s frame (another one being handled further out does not)."""
    active = sys.exc_info()[1]
    return active if active is not None and raised_through(active, frame) else None


def calls_raised_through(exc: BaseException, outer: Any) -> tuple[ModuleCall, ...]:
    """The module calls that `exc` left on its way out to `outer`'s call, outermost first, from
    its traceback: each layer's `Module._call_impl` frame holds the module and its inputs.
    For layers run without hooks (taken off inside a library model: `shapes/module_hooks.py`)."""
    from torch.nn import Module

    call_impl = Module._call_impl.__code__
    calls: list[ModuleCall] = []
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code is call_impl:
            values = frame.f_locals
            module = values.get("self")
            if module is not outer and isinstance(module, Module):
                calls.append(ModuleCall(module, tuple(values.get("args", ()))))
        tb = tb.tb_next
    return tuple(calls)


def shape_of(value: Any) -> list[int] | None:
    shape = getattr(value, "shape", None)
    if shape is None or not hasattr(value, "dim"):
        return None
    try:
        return [int(size) for size in shape]
    except (TypeError, ValueError):  # symbolic sizes
        return [size for size in shape]


def raised_through(exc: BaseException, frame: types.FrameType) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame is frame:
            return True
        tb = tb.tb_next
    return False


def _function_mode_class():
    from torch.overrides import TorchFunctionMode

    class CallRecorder(TorchFunctionMode):
        def __init__(self, tracker: CallTracker) -> None:
            super().__init__()
            self.tracker = tracker

        def __torch_function__(self, func, types, args=(), kwargs=None):
            try:
                return func(*args, **(kwargs or {}))
            except Exception as exc:
                self.tracker.record_failure(exc, func, args, kwargs)
                raise

    return CallRecorder


@contextlib.contextmanager
def track_calls(function_calls: bool = True, module_calls: bool = True) -> Iterator[CallTracker]:
    """Track module calls and torch function calls, each unless the caller feeds the tracker
    itself (`record_failure` from its own mode; `enter`/`leave` from its own module hooks)."""
    from torch.nn.modules import module as nn_module

    tracker = CallTracker()

    def after_forward(module, inputs, output):
        tracker.leave(module, failure_through(sys._getframe(1)))

    handles = [] if not module_calls else [
        nn_module.register_module_forward_pre_hook(tracker.enter),
        nn_module.register_module_forward_hook(after_forward, always_call=True),
    ]
    mode = _function_mode_class()(tracker) if function_calls else None
    try:
        if mode is None:
            yield tracker
        else:
            with mode:
                yield tracker
    finally:
        for handle in handles:
            handle.remove()
