"""Record shapes while a plan runs (worker side; imports torch).

Two recorders, both filtered to the user's file:

- per statement: ``sys.settrace`` line events. When a frame moves past a statement, the names
  that statement binds (listed by the plan) are read from the frame and described;
- per expression: a ``TorchFunctionMode`` (every torch call) and a global module forward hook
  (every ``nn.Module`` call). The innermost user frame's ``f_lasti`` with
  ``code.co_positions()`` gives the exact range of the call expression being evaluated, so
  ``self.conv1(x)`` and ``F.relu(...)`` on one line get separate shapes. Torch calls nested in
  one user expression (every layer inside ``resnet(x)``) collapse to the last, outermost one.

The same mode also keeps the job on one device: explicit ``device=`` arguments, factories under
a default device the user set, ``.to(...)``, ``.cuda()`` and ``.cpu()`` are retargeted to the
execution device, and tensors from another device (e.g. a CPU batch from a DataLoader) are
moved to it, because shapes do not depend on where a tensor lives.
"""

from __future__ import annotations

import sys
import weakref
from contextlib import contextmanager
from types import CodeType, FrameType
from typing import Any, Callable

import torch
from torch._C import _get_function_stack_at, _len_torch_function_stack, _pop_torch_function_stack, \
    _push_on_torch_function_stack
from torch.overrides import TorchFunctionMode
from torch.utils._device import DeviceContext

from torch_lsp.analysis.plan import ExecutionPlan, Statement
from torch_lsp.shapes.library_init import LibraryInit
from torch_lsp.shapes.mode_aside import ModeAside, replay_failed_call
from torch_lsp.shapes.report import ExpressionShapes, Range, Value, VariableShapes

_MAX_ITEMS = 8  # tuples / lists / dicts longer than this are not described item by item
_MAX_VALUES = 8  # distinct shapes kept per line / expression (a loop over growing sizes)
# Frames (outside the user's file) during which torch calls are parameter initialisation.
_CONSTRUCTION_FRAMES = {"__init__", "reset_parameters", "_reset_parameters", "_init_weights"}


_loading_depth = 0
# CPU tensors that hold values torch needs on the CPU even in a meta job (a PackedSequence's
# batch sizes: meta_compat.py): never moved to the execution device. By id, weakly held.
_cpu_values: "weakref.WeakValueDictionary[int, torch.Tensor]" = weakref.WeakValueDictionary()


def keep_on_cpu(tensor: torch.Tensor) -> None:
    _cpu_values[id(tensor)] = tensor


@contextmanager
def loading_data(unobserved: bool = False):
    """Data loading runs on the CPU, unrecorded: samplers need real random numbers
    (`randperm(n).tolist()`), and a batch moves to the execution device afterwards.

    `unobserved`: a DataLoader's batch (its samples, their transforms and collation), none of
    which is the model's: the job's torch modes step off both of torch's mode stacks for it (the
    recording mode and the cost observers' modes saw a fifth of a seed job's torch calls there).
    Only modes of torch-lsp's and the device mode; a stack holding another (the user's) stays."""
    global _loading_depth
    aside = _modes_aside() if unobserved and not _loading_depth else None
    _loading_depth += 1
    try:
        with torch.device("cpu"):
            yield
    finally:
        _loading_depth -= 1
        if aside is not None:
            _modes_back(aside)


def _ours(mode) -> bool:
    return type(mode).__module__.startswith("torch_lsp.") or isinstance(mode, DeviceContext)


def _modes_aside() -> tuple[list, list]:
    """Pop the job's modes off torch's function-mode and dispatch-mode stacks (top first)."""
    functions = [_get_function_stack_at(i) for i in range(_len_torch_function_stack())]
    dispatch = [torch._C._get_dispatch_stack_at(i) for i in range(torch._C._len_torch_dispatch_stack())]
    functions = [_pop_torch_function_stack() for _ in functions] if all(map(_ours, functions)) else []
    dispatch = [torch._C._pop_torch_dispatch_stack(None) for _ in dispatch] if all(map(_ours, dispatch)) else []
    return functions, dispatch


def _modes_back(aside: tuple[list, list]) -> None:
    functions, dispatch = aside
    for mode in reversed(functions):
        _push_on_torch_function_stack(mode)
    for mode in reversed(dispatch):
        torch._C._push_on_torch_dispatch_stack(mode)


def describe(value: Any, depth: int = 0) -> Value | None:
    """A tensor or a container of tensors -> Value; anything else -> None."""
    if isinstance(value, torch.Tensor):
        return Value(kind="tensor", shape=tuple(int(d) for d in value.shape), dtype=str(value.dtype).removeprefix("torch."))
    if depth > 3:
        return None
    if isinstance(value, (tuple, list)) and 0 < len(value) <= _MAX_ITEMS:
        items = [describe(v, depth + 1) for v in value]
        if all(item is not None for item in items):
            return Value(kind="tuple" if isinstance(value, tuple) else "list", items=tuple(items))
    if isinstance(value, dict) and 0 < len(value) <= _MAX_ITEMS:
        items = [describe(v, depth + 1) for v in value.values()]
        if all(item is not None for item in items):
            return Value(kind="dict", items=tuple(items), keys=tuple(str(k) for k in value))
    return _describe_object(value, depth)


def _describe_object(value: Any, depth: int) -> Value | None:
    """An object of a plain class whose public attributes are tensors (or None): DETR's
    `NestedTensor(tensors, mask)`. Modules, and objects holding anything else, are not values."""
    attributes = getattr(value, "__dict__", None)
    if not isinstance(attributes, dict) or isinstance(value, (torch.nn.Module, type)) or not attributes:
        return None
    public = {k: v for k, v in attributes.items() if not k.startswith("_") and v is not None}
    if not public or len(public) > _MAX_ITEMS:
        return None
    items = [describe(v, depth + 1) for v in public.values()]
    if any(item is None for item in items):
        return None
    return Value(kind="object", items=tuple(items), keys=tuple(public), type_name=type(value).__name__)


def to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value if value.device == device else value.to(device)
    if isinstance(value, (tuple, list)):
        moved = [to_device(v, device) for v in value]
        return type(value)(moved) if not hasattr(value, "_fields") else type(value)(*moved)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


class SourceMap:
    """Bytecode offsets and UTF-8 columns of the user's file -> code-point Ranges."""

    def __init__(self, filename: str, source: str) -> None:
        self.filename = filename
        self.lines = source.splitlines()
        self._positions: dict[CodeType, list] = {}

    def _column(self, line: int, byte_col: int) -> int:
        if 0 <= line < len(self.lines):
            return len(self.lines[line].encode()[:byte_col].decode(errors="ignore"))
        return byte_col

    def range_at(self, code: CodeType, lasti: int) -> Range | None:
        positions = self._positions.get(code)
        if positions is None:
            positions = self._positions[code] = list(code.co_positions())
        index = lasti // 2
        if not 0 <= index < len(positions):
            return None
        line, end_line, col, end_col = positions[index]
        if None in (line, end_line, col, end_col):
            return None
        return Range(line=line - 1, col=self._column(line - 1, col),
                     end_line=end_line - 1, end_col=self._column(end_line - 1, end_col))


class Recorder:
    """Records the shapes of several files at once: the driver that runs and the files it
    imports and calls (a model file driven by a training script). Everything is keyed by file."""

    def __init__(self, plans: "ExecutionPlan | dict[str, ExecutionPlan]", device: torch.device,
                 on_line: Callable[[str, int], None] | None = None):
        if isinstance(plans, ExecutionPlan):
            plans = {plans.filename: plans}
        self.plans = plans
        self.device = device
        self.source_maps = {name: SourceMap(name, plan.source) for name, plan in plans.items()}
        self.on_line = on_line
        # (file, line, name) -> (statement, values)
        self.variables: dict[tuple[str, int, str], tuple[Statement, list[Value]]] = {}
        # (file, range key) -> (range, values, module info)
        self.expressions: dict[tuple, tuple[Range, list[Value], tuple | None]] = {}
        self._pending_statement: dict[int, tuple[FrameType, Statement]] = {}
        # The recording mode steps off torch's mode stack inside library code that needs none
        # of its work (library constructors, library models' forwards).
        self.aside = ModeAside(device, self.in_training_loop)
        # Library layers' constructors run untraced (the job's trace function hands it their frames).
        self.library_init = LibraryInit(self.plans, self.forget_statement, self.rejoin, self.aside)
        self._pending_expression: tuple | None = None  # (key, file, range, value, module)
        self._suspended_by: torch.nn.Module | None = None
        self._library_modules: dict[int, tuple[weakref.ref, bool]] = {}  # id(module) -> (module, library only?)
        self._forward_files: dict[type, bool] = {}
        self._paused = 0

    @contextmanager
    def paused(self):
        """Nothing is recorded inside (a probe's trial calls: most of them fail on purpose)."""
        self.flush_expression()
        self._paused += 1
        previous = sys.gettrace()
        sys.settrace(None)
        try:
            yield
        finally:
            self._paused -= 1
            sys.settrace(previous)

    @contextmanager
    def capture(self):
        """Record into fresh tables, handed out as `(variables, expressions)` (a probe's calls,
        compared with each other to name dimensions); the job's own tables are untouched."""
        self.flush_expression()
        saved = (self.variables, self.expressions, self._pending_statement)
        self.variables, self.expressions, self._pending_statement = {}, {}, {}
        captured: tuple[dict, dict] = (self.variables, self.expressions)
        try:
            yield captured
        finally:
            self.flush_expression()
            self.variables, self.expressions, self._pending_statement = saved

    def merge(self, variables: dict, expressions: dict) -> None:
        """Add captured tables (`capture`) to the job's own."""
        for key, (stmt, values) in variables.items():
            _, mine = self.variables.setdefault(key, (stmt, []))
            mine.extend(v for v in values if v not in mine and len(mine) < _MAX_VALUES)
        for key, (rng, values, info) in expressions.items():
            _, mine, old = self.expressions.setdefault(key, (rng, [], info))
            mine.extend(v for v in values if v not in mine and len(mine) < _MAX_VALUES)
            if old is None and info is not None:
                self.expressions[key] = (rng, mine, info)

    def add_file(self, plan: ExecutionPlan) -> None:
        """Record one more file (a probe's target imported after the run started)."""
        if plan.filename not in self.plans:
            self.plans[plan.filename] = plan
            self.source_maps[plan.filename] = SourceMap(plan.filename, plan.source)
            self._library_modules.clear()
            self._forward_files.clear()

    def _plan_of(self, frame: FrameType) -> ExecutionPlan | None:
        return self.plans.get(frame.f_code.co_filename)

    # statements -----------------------------------------------------------------------------

    def global_trace(self, frame: FrameType, event: str, arg: Any):
        if frame.f_code.co_filename not in self.plans or self._paused:
            return None
        if frame.f_code.co_name != "<module>":
            self._record_parameters(frame)
        return self.local_trace

    def _record_parameters(self, frame: FrameType) -> None:
        """Tensor arguments of a user function, shown on its `def` line (`forward(self, x)`)."""
        code = frame.f_code
        count = code.co_argcount + code.co_kwonlyargcount
        names = tuple(n for n in code.co_varnames[:count] if n != "self")
        if names:
            line = code.co_firstlineno - 1
            self._record(code.co_filename, frame.f_locals, Statement(line, line, names))

    def local_trace(self, frame: FrameType, event: str, arg: Any):
        if event == "line":
            self._flush_statement(frame)
            self.flush_expression()
            line = frame.f_lineno - 1
            if self.on_line is not None:
                self.on_line(frame.f_code.co_filename, line)
            self._begin_statement(frame, line)
        elif event == "return":
            self._flush_statement(frame)
            self._record_return(frame, arg)
        elif event == "exception":
            # The statement did not complete: its targets still hold their old values.
            self.forget_statement(frame)
        return self.local_trace

    def _begin_statement(self, frame: FrameType, line: int) -> None:
        """The frame starts the statement at `line`: its targets are recorded when it is left."""
        stmt = self.plans[frame.f_code.co_filename].statement_of_line.get(line)
        if stmt is not None and stmt.binds:
            self._pending_statement[id(frame)] = (frame, stmt)

    def forget_statement(self, frame: FrameType) -> None:
        """The statement the frame was in did not complete."""
        self._pending_statement.pop(id(frame), None)

    def rejoin(self, frame: FrameType) -> None:
        """Trace the frame again from the middle of its current statement (its line event was
        missed while tracing was off)."""
        if frame.f_trace is None:
            frame.f_trace = self.local_trace
        self._begin_statement(frame, frame.f_lineno - 1)

    def _record_return(self, frame: FrameType, value: Any) -> None:
        """What a function returns, on its `return` line (`return self.fc2(x)` binds no name)."""
        if value is None or frame.f_code.co_name == "<module>":
            return
        filename = frame.f_code.co_filename
        line = frame.f_lineno - 1
        stmt = self.plans[filename].statement_of_line.get(line)
        text = self.source_maps[filename].lines[stmt.line] if stmt is not None else ""
        if stmt is not None and text.lstrip().startswith("return") and not self._paused:
            self._record(filename, {"return": value}, Statement(stmt.line, stmt.end_line, ("return",)))

    def _flush_statement(self, frame: FrameType) -> None:
        pending = self._pending_statement.pop(id(frame), None)
        if pending is None:
            return
        self._record(frame.f_code.co_filename, frame.f_locals, pending[1])

    def _record(self, filename: str, scope: dict, stmt: Statement) -> None:
        if self._paused:
            return
        for name in stmt.binds:
            value = _lookup(scope, name)
            described = describe(value) if value is not None else None
            if described is not None:
                _, values = self.variables.setdefault((filename, stmt.line, name), (stmt, []))
                if described not in values and len(values) < _MAX_VALUES:
                    values.append(described)

    # expressions ----------------------------------------------------------------------------

    def record_output(self, output: Any, module: torch.nn.Module | None = None) -> None:
        """Remember `output` for the user expression being evaluated. Described only when the
        expression is done: every layer of `resnet(x)` maps to the same expression."""
        if self._paused:
            return
        frame = sys._getframe(2)
        plans = self.plans
        while frame is not None and frame.f_code.co_filename not in plans:
            if frame.f_code.co_name in _CONSTRUCTION_FRAMES:
                return  # parameter initialisation inside a layer's constructor
            frame = frame.f_back
        if frame is None:
            return
        key = (id(frame), frame.f_lasti)
        pending = self._pending_expression
        if pending is not None and pending[0] == key:
            self._pending_expression = (key, pending[1], pending[2], output, module)
            return
        self.flush_expression()
        filename = frame.f_code.co_filename
        rng = self.source_maps[filename].range_at(frame.f_code, frame.f_lasti)
        if rng is not None:
            self._pending_expression = (key, filename, rng, output, module)

    def flush_expression(self) -> None:
        pending, self._pending_expression = self._pending_expression, None
        if pending is None:
            return
        _, filename, rng, output, module = pending
        value = describe(output)
        if value is None:
            return
        module_info = (module_summary(module), parameter_count(module)) if module is not None else None
        key = (filename, rng.line, rng.col, rng.end_line, rng.end_col)
        _, values, old_module = self.expressions.setdefault(key, (rng, [], module_info))
        if value not in values and len(values) < _MAX_VALUES:
            values.append(value)
        if module_info is not None and old_module is None:
            self.expressions[key] = (rng, values, module_info)

    def in_training_loop(self, frame: FrameType | None = None) -> bool:
        """Is a user frame on the stack (from `frame`, else from the caller's caller) inside a
        loop that the plan runs once?"""
        if frame is None:
            frame = sys._getframe(2)
        while frame is not None:
            plan = self.plans.get(frame.f_code.co_filename)
            if plan is not None and plan.run_once_loops:
                line = frame.f_lineno - 1
                if any(start <= line <= end for start, end in plan.run_once_loops):
                    return True
            frame = frame.f_back
        return False

    # Tracing a library model (torchvision's resnet50: ~400k Python calls per forward) would cost
    # more than the forward itself, and no line of the user's file runs inside it: line tracing
    # is off while a module whose whole subtree is library code runs.

    def module_pre_hook(self, module: torch.nn.Module, inputs: Any, caller: FrameType) -> bool:
        """A module call starts (`caller`: torch's `_call_impl`, holding the call's keywords).
        True when line tracing stops here: `module` is a library model, run untraced."""
        if self.library_init.pending is not None:
            self.library_init.module_called(caller)
        if self._paused:
            return False
        if self._suspended_by is None and self._library_only(module):
            self._suspended_by = module
            # The job's own trace function (it wraps global_trace) comes back afterwards.
            self._resume_trace = sys.gettrace()
            sys.settrace(None)
            keywords = caller.f_locals.get("kwargs")
            if isinstance(keywords, dict):
                self.aside.step_aside(module, (*inputs, keywords), caller)
            return True
        return False

    def module_hook(self, module: torch.nn.Module, output: Any, failed: BaseException | None) -> None:
        """A module call ends, raising `failed` if not None."""
        if self._paused:
            return
        if self._suspended_by is module:
            if self.aside.owner is module:
                self.aside.come_back(module)
                if failed is not None:
                    replay_failed_call(self.aside.mode.tracker, failed)
            self._suspended_by = None
            sys.settrace(getattr(self, "_resume_trace", None) or self.global_trace)
        elif self._suspended_by is not None:
            return  # a layer inside a library model: only the model's own output is shown
        self.record_output(output, module)

    @property
    def inside_library_model(self) -> bool:
        return self._suspended_by is not None

    def _library_only(self, module: torch.nn.Module) -> bool:
        # Keyed by id, so the entry keeps a weak reference to check that it is still about this
        # module: a layer freed after one synthesized call leaves its id to the next model built
        # (seen: a ConvEncoder taken for the freed Conv2d before it, its forward never traced).
        entry = self._library_modules.get(id(module))
        if entry is None or entry[0]() is not module:
            entry = self._library_modules[id(module)] = (
                weakref.ref(module), not any(self._forward_in_recorded_file(type(m)) for m in modules_under(module)))
        return entry[1]

    def _forward_in_recorded_file(self, cls: type) -> bool:
        known = self._forward_files.get(cls)
        if known is None:
            code = getattr(getattr(cls, "forward", None), "__code__", None)
            known = self._forward_files[cls] = getattr(code, "co_filename", None) in self.plans
        return known

    # results ----------------------------------------------------------------------------------

    def finish(self) -> dict[str, tuple[list[VariableShapes], list[ExpressionShapes]]]:
        """Per recorded file: its variables and expressions, in source order."""
        self.flush_expression()
        out: dict[str, tuple[list[VariableShapes], list[ExpressionShapes]]] = {name: ([], []) for name in self.plans}
        for (filename, _, name), (stmt, values) in sorted(
                self.variables.items(), key=lambda item: (item[0][0], item[0][1], _bind_order(item[1][0], item[0][2]))):
            out[filename][0].append(VariableShapes(name=name, line=stmt.line, end_line=stmt.end_line, values=values))
        for key in sorted(self.expressions):
            rng, values, info = self.expressions[key]
            out[key[0]][1].append(ExpressionShapes(range=rng, values=values, module=info[0] if info else None,
                                                   parameters=info[1] if info else None))
        return out


def _bind_order(stmt: Statement, name: str) -> int:
    """Targets in the order they are written: `logits, feats = ...`."""
    return stmt.binds.index(name) if name in stmt.binds else len(stmt.binds)


def _lookup(scope: dict, dotted: str) -> Any:
    head, _, attr = dotted.partition(".")
    value = scope.get(head)
    if attr and value is not None:
        try:
            value = getattr(value, attr, None)
        except Exception:  # a user property may raise; a missing shape is fine
            return None
    return value


def modules_under(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The module and every module under it, each once (in no particular order): what
    `module.modules()` gives, without its nested generators (one level per depth) and
    prefixed names: half the time for resnet50's 161 layers."""
    seen: set[int] = set()
    found = []
    stack = [module]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        found.append(current)
        stack.extend(current._modules.values())
    return found


_MODULE = torch.nn.Module


def parameter_count(module: torch.nn.Module) -> int:
    """Parameters of the layer and everything under it (meta tensors know their numel), each
    shared parameter once, as `module.parameters()` counts them."""
    try:
        with _NO_TORCH_FUNCTION():  # no mode needs to see these reads (resnet50: 161 of them)
            kind = type(module)
            if kind.parameters is not _MODULE.parameters or kind.named_parameters is not _MODULE.named_parameters:
                return sum(p.numel() for p in module.parameters())  # the user's own definition
            seen: set[int] = set()
            total = 0
            for layer in modules_under(module):
                for parameter in layer._parameters.values():
                    if parameter is not None and id(parameter) not in seen:
                        seen.add(id(parameter))
                        total += parameter.numel()
            return total
    except Exception:  # a user module may override parameters() or hold odd values; a missing count is fine
        return 0


def module_summary(module: torch.nn.Module) -> str:
    """`Conv2d(3, 6, kernel_size=(5, 5), stride=(1, 1))`; containers by their size."""
    extra = module.extra_repr()
    if not extra:
        children = len(module._modules)
        extra = f"{children} submodules" if children else ""
    return f"{type(module).__name__}({extra})"


class RecordingMode(TorchFunctionMode):
    """Sees every torch call: keeps it on the execution device and records its output."""

    def __init__(self, recorder: Recorder, tracker=None) -> None:
        super().__init__()
        self.recorder = recorder
        self.device = recorder.device
        # explain's CallTracker, fed from here so that torch calls pass through one mode, not two.
        self.tracker = tracker
        # Torch calls made while another one runs (inside Python decompositions, e.g. batch norm
        # on meta: ~5 per layer) belong to it: no retargeting, recording or tracking for them.
        self._depth = 0
        self._library_init = recorder.library_init

    def __enter__(self):
        super().__enter__()
        self.recorder.aside.attach(self)
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.recorder.aside.detach()  # back on the stack first: torch's exit pops the top mode
        return super().__exit__(exc_type, exc_value, traceback)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # Every torch call of the job passes here (~2,000 for a resnet50 job): the common case
        # (tensors already on the device) copies neither the keywords nor the arguments.
        if self._library_init.pending is not None:  # tracing is off around a library constructor
            self._library_init.torch_called_from(sys._getframe(1))
        if kwargs is None:
            kwargs = _NO_KWARGS
        if _loading_depth or self._depth or func in _METADATA_ONLY:
            return func(*args, **kwargs)
        self._depth += 1
        # The line tracer is called for every Python frame torch's own code opens (on meta, each
        # batch norm or init is a Python decomposition): a quarter of a resnet50 job. No user
        # line runs inside a torch call unless it calls back into user code, so switch it off.
        trace = sys.gettrace()
        untraced = trace is not None and not _may_run_user_code(func, args, kwargs)
        if untraced:
            sys.settrace(None)
        try:
            return self._handle(func, args, kwargs)
        finally:
            self._depth -= 1
            if untraced:
                sys.settrace(trace)

    def _handle(self, func, args, kwargs):
        device = self.device
        if func in _VALUE_READS and device.type == "meta" and self.recorder.in_training_loop() \
                and args[0].device.type == "meta":
            # `running_loss += loss.item()`: logging inside a training loop. Shapes do not depend
            # on it, and a CPU re-run of the whole script just for it would cost seconds.
            return _placeholder_value(args[0])
        if func in _TO_HOST_OR_CUDA:
            return to_device(args[0], device)
        if kwargs.get("device") is not None or func in _FACTORIES:
            kwargs = {**kwargs, "device": device}
        if func is _TENSOR_TO:
            args = tuple(device if _is_device_like(a) else a for a in args)
        elif args:
            args = self._on_device(args)
        try:
            output = func(*args, **kwargs)
        except Exception as error:
            if self.tracker is not None:
                self.tracker.record_failure(error, func, args, kwargs)
            raise
        if not self.recorder.inside_library_model:
            self.recorder.record_output(output)
        return output

    def _on_device(self, args: tuple) -> tuple:
        """`args` with tensors of another device moved to the job's; the same tuple if none is."""
        # The device mode below this one would see every `.device` read (~1 us each): look
        # with torch functions off, move (rarely) with them on, for tensor subclasses.
        with _NO_TORCH_FUNCTION():
            if not any(self._elsewhere(value) for value in args):
                return args
        return tuple(self._same_device(value) for value in args)

    def _elsewhere(self, value: Any) -> bool:
        if isinstance(value, torch.Tensor):
            return value.device != self.device and value.dim() > 0 and _cpu_values.get(id(value)) is not value
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
            return any(self._elsewhere(item) for item in value)
        return False

    def _same_device(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(self.device) if self._elsewhere(value) else value
        if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
            return type(value)(self._same_device(v) for v in value)
        return value


_NO_TORCH_FUNCTION = torch._C.DisableTorchFunction
_NO_KWARGS: dict = {}  # never written: a call that sets a keyword copies it first
# Calls that only read a tensor's metadata or switch grad mode: nothing to retarget, record or
# explain, and half the torch calls of a resnet50 job (every init runs under `no_grad`, every
# layer reads `x.dim()`). Reads that depend on the device (`.device`, `.is_cuda`) are not here:
# a CPU batch is on the job's device as far as the user's code can tell.
_METADATA_ONLY = {
    torch._C._set_grad_enabled, torch.Tensor.dim, torch.Tensor.size, torch.Tensor.stride,
    torch.Tensor.numel, torch.Tensor.is_contiguous, torch.Tensor.is_floating_point,
    *(getattr(torch.Tensor, name).__get__ for name in ("shape", "dtype", "ndim", "grad_fn", "requires_grad", "is_leaf", "layout")),
}
_TENSOR_TO = torch.Tensor.to
# What `torch.device(...)` as a default gives a device to. The job's own default sits below this
# mode, but a user's `torch.set_default_device("cuda")` replaces it there (torch keeps one at the
# bottom of the stack): factories the user's lines call get the job's device here, first.
try:
    from torch.utils._device import _device_constructors

    _FACTORIES = frozenset(_device_constructors())
except (ImportError, AttributeError):  # pragma: no cover - a torch without default devices
    _FACTORIES = frozenset()
_TO_HOST_OR_CUDA = {torch.Tensor.cuda, torch.Tensor.cpu}
_VALUE_READS = {torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.__int__}
# Torch calls that run Python callbacks: autograd Functions' backward, tensor hooks.
_RUNS_CALLBACKS = {torch.Tensor.backward, torch.autograd.backward, torch.autograd.grad}
_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


def _may_run_user_code(func, args, kwargs) -> bool:
    """Whether a torch call may run code of the user's files: a callback, a function or module
    passed in, or a tensor subclass defined outside torch (its `__torch_function__`)."""
    if func in _RUNS_CALLBACKS:
        return True
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            kind = type(value)
            if kind not in _PLAIN_TENSORS and not kind.__module__.startswith("torch."):
                return True
        elif callable(value) and not isinstance(value, type):
            return True
    return False


def _placeholder_value(tensor: torch.Tensor):
    if tensor.dtype == torch.bool:
        return False
    return 0 if not tensor.dtype.is_floating_point and not tensor.dtype.is_complex else 0.0


def _is_device_like(value: Any) -> bool:
    if isinstance(value, torch.device):
        return True
    if isinstance(value, str):
        return value.split(":")[0] in {"cpu", "cuda", "meta", "mps", "xpu"}
    return isinstance(value, int) and not isinstance(value, bool)  # `.to(0)` means cuda:0
