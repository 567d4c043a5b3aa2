"""Turn torch's exceptions into messages a person understands.

Runs inside the shape worker, where torch is imported; this module itself imports torch only
inside functions, so importing it costs nothing in the server process.

Contract used by the engine (shapes/worker.py, shapes/tracer.py):

- ``track_calls()``: context manager yielding a ``CallTracker``; while active it knows the
  nn.Module calls in progress (global forward pre-hook / always-called forward hook) and the
  torch function call in progress (a ``TorchFunctionMode``). When an exception escapes a
  module or a torch function the tracker remembers, for that exception, which modules were
  running and which call failed, so ``explain`` still sees them after the stack unwound.
- ``explain(exc, tracker) -> Explained(code, message, hint)``: one code per family (TL201..),
  TL200 for anything else (torch's own first line). Messages are built from the shapes the
  tracker saw and from the layers' configuration, never from torch's wording alone, so the
  meta-device text and the CPU text of the same mistake give the same message.
- ``is_data_dependent(exc)``: True for errors that come from meta's inability to compute data
  (``.item()``, ``nonzero``, boolean masks, copying meta tensors out, ...): the engine re-runs
  those on CPU instead of reporting them.
- ``user_span(exc, filename)``: where in the user's file the failing expression is.
- ``SHAPE_RULES``: code -> (name, summary), for the rule registry and docs.
"""

from __future__ import annotations

import contextlib
import linecache
import os
import re
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Iterator

from torch_lsp.analysis.facts import Span

SHAPE_RULES: dict[str, tuple[str, str]] = {
    "TL200": ("torch-error", "torch raised an error; shown in torch's own words"),
    "TL201": ("matmul-size-mismatch", "Linear / matmul / bmm operands whose inner sizes differ"),
    "TL202": ("conv-channel-mismatch", "convolution input channels differ from in_channels"),
    "TL203": ("view-size-mismatch", "view / reshape to a shape with a different element count"),
    "TL204": ("cat-size-mismatch", "torch.cat / torch.stack of tensors whose sizes differ"),
    "TL205": ("broadcast-mismatch", "elementwise operands whose shapes do not broadcast"),
    "TL206": ("norm-size-mismatch", "BatchNorm / LayerNorm / GroupNorm built for another size"),
    "TL207": ("rnn-input-size", "LSTM / GRU / RNN input width differs from input_size"),
    "TL208": ("embedding-index", "Embedding indices out of range or not integers"),
    "TL209": ("loss-target-shape", "loss input and target shapes or classes do not fit"),
    "TL210": ("output-too-small", "pooling or convolution window larger than its input"),
    "TL211": ("module-construction", "a layer cannot be built from the arguments given"),
}


@dataclass(frozen=True)
class Explained:
    code: str
    message: str
    # A suggested fix in words ("build the layer as nn.Linear(256, 120)"); may be empty.
    hint: str = ""


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


class CallTracker:
    """What was running when an exception was raised; filled by ``track_calls``."""

    def __init__(self) -> None:
        self.stack: list[ModuleCall] = []
        self.last_call: TorchCall | None = None
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

    # The engine's own TorchFunctionMode can feed these instead of ours (track_calls(False)).
    def record_call(self, func: Any, args: tuple, kwargs: dict | None) -> TorchCall:
        self.last_call = TorchCall(func, args, kwargs or {})
        return self.last_call

    def record_failure(self, exc: BaseException, call: TorchCall) -> None:
        # The innermost failing call is recorded first; outer ones must not overwrite it.
        self._call_at.setdefault(id(exc), (exc, call))

    def _push(self, module: Any, inputs: tuple) -> None:
        self.stack.append(ModuleCall(module, inputs))

    def _pop(self, module: Any, failed_with: BaseException | None) -> None:
        if failed_with is not None:
            self._modules_at.setdefault(id(failed_with), (failed_with, tuple(self.stack)))
        for index in range(len(self.stack) - 1, -1, -1):
            if self.stack[index].module is module:
                del self.stack[index:]
                return


def shape_of(value: Any) -> list[int] | None:
    shape = getattr(value, "shape", None)
    if shape is None or not hasattr(value, "dim"):
        return None
    try:
        return [int(size) for size in shape]
    except (TypeError, ValueError):  # symbolic sizes
        return [size for size in shape]


def _raised_through(exc: BaseException, frame: types.FrameType) -> bool:
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
            call = self.tracker.record_call(func, args, kwargs)
            try:
                return func(*args, **(kwargs or {}))
            except Exception as exc:
                self.tracker.record_failure(exc, call)
                raise

    return CallRecorder


@contextlib.contextmanager
def track_calls(function_calls: bool = True) -> Iterator[CallTracker]:
    """Track module calls (and torch function calls unless the caller records them itself)."""
    from torch.nn.modules import module as nn_module

    tracker = CallTracker()

    def before_forward(module, inputs):
        tracker._push(module, inputs)

    def after_forward(module, inputs, output):
        # always_call=True runs this hook from _call_impl's except block when forward raised;
        # then the active exception's traceback passes through our caller's frame.
        active = sys.exc_info()[1]
        if active is not None and not _raised_through(active, sys._getframe(1)):
            active = None
        tracker._pop(module, active)

    handles = [
        nn_module.register_module_forward_pre_hook(before_forward),
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


def explain(exc: BaseException, tracker: CallTracker | None = None) -> Explained:
    """A clear message for ``exc``; never raises."""
    from torch_lsp.shapes import explain_families

    try:
        failure = explain_families.Failure.build(exc, tracker)
        for translate in explain_families.TRANSLATORS:
            explained = translate(failure)
            if explained is not None:
                return explained
    except Exception as bug:  # a bad translation must never hide the user's error
        return Explained("TL200", torch_first_line(exc), f"(explain failed: {bug!r})")
    return Explained("TL200", torch_first_line(exc))


def torch_first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else ""
    if isinstance(exc, RuntimeError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# Errors that only mean "meta tensors hold no data"; none of them is the user's mistake.
_DATA_DEPENDENT_TEXT = re.compile(
    "|".join(
        [
            r"cannot be called on meta tensors",
            r"Cannot copy out of meta tensor",
            r"register_meta function for torch\.\w+\(\) raises unimplemented",
            r"attempted to run this operator with Meta tensors",
            r"with arguments from the 'Meta' backend",
            r"meta tensor without output_size",
            r"convert meta device type tensor",
            r"data-dependent",
            r"data dependent",
            r"on device meta is not on the expected device",
            r"two devices, \w+:?\d* and meta|two devices, meta and",
            r"unsupported format string passed to Tensor\.__format__",
        ]
    ),
    re.IGNORECASE,
)
_DATA_DEPENDENT_TYPES = {
    "DataDependentOutputException",
    "DynamicOutputShapeException",
    "GuardOnDataDependentSymNode",
    "UnsupportedOperatorException",
}


def is_data_dependent(exc: BaseException) -> bool:
    """True when ``exc`` comes from running on meta rather than from the user's code."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ in _DATA_DEPENDENT_TYPES:
            return True
        if _DATA_DEPENDENT_TEXT.search(str(current)):
            return True
        if _optimizer_step_on_meta(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _optimizer_step_on_meta(exc: BaseException) -> bool:
    # Some torch versions raise inside Adam/AdamW.step() on meta parameters with messages that
    # name neither meta nor data; an optimizer step never changes shapes, so it never matters.
    if "meta" not in str(exc).lower() and not isinstance(exc, NotImplementedError):
        return False
    tb = exc.__traceback__
    while tb is not None:
        if f"{os.sep}torch{os.sep}optim{os.sep}" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def user_span(exc: BaseException, filename: str, source: str | None = None) -> Span | None:
    """Span of the expression being evaluated in the innermost frame of ``filename``.

    Uses ``co_positions()`` (Python 3.11+); columns are converted from UTF-8 byte offsets to
    code points using ``source`` (or linecache). Lines and columns are 0-based.
    """
    innermost = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            innermost = tb
        tb = tb.tb_next
    if innermost is None:
        return None
    line = innermost.tb_lineno
    positions = _positions(innermost.tb_frame.f_code, innermost.tb_lasti)
    if positions is None or None in positions:
        return Span.of(line - 1, 0, line - 1, len(_source_line(filename, line, source)))
    start_line, end_line, start_byte, end_byte = positions
    return Span.of(
        start_line - 1,
        _code_points(_source_line(filename, start_line, source), start_byte),
        end_line - 1,
        _code_points(_source_line(filename, end_line, source), end_byte),
    )


def _positions(code: types.CodeType, lasti: int):
    if lasti < 0 or not hasattr(code, "co_positions"):
        return None
    for index, positions in enumerate(code.co_positions()):
        if index == lasti // 2:
            return positions
    return None


def _source_line(filename: str, lineno: int, source: str | None) -> str:
    if source is not None:
        lines = source.splitlines()
        return lines[lineno - 1] if 0 < lineno <= len(lines) else ""
    return linecache.getline(filename, lineno).rstrip("\n")


def _code_points(line: str, byte_offset: int) -> int:
    return len(line.encode("utf-8")[:byte_offset].decode("utf-8", errors="ignore"))
