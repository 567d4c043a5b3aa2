"""The module-call tree of a shape run (worker side; stdlib + torch only).

One row per module *instance call*, in call order (a parent before its children, like
torchinfo), recorded by global forward hooks, so layers inside library models (torchvision's
resnet18) are seen although line tracing is suspended there. Each row has its depth, its parent,
the input and output shapes, and the parameters it holds. A module called again (a shared
ReLU, a model called in the training loop and again in evaluation) is marked `repeat`: its
parameters are counted once, as torchinfo counts them.

The tree is also the attribution frame of the cost observers: `current` is the innermost module
running, and each call keeps the autograd sequence numbers it created, so a backward op can be
traced back to the module call whose forward made its node (observe_cost.py, memory.py).
"""

from __future__ import annotations

import bisect
import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from torch_lsp.shapes import tracer

MAX_ROWS = 5000  # a forward that loops over thousands of module calls: the first rows are enough
_MAX_ITEMS = 8


@dataclass
class ModuleCall:
    index: int
    parent: int | None
    depth: int
    module: torch.nn.Module = field(repr=False)
    name: str  # attribute path from the outermost model: "layer1.0.conv1" ("" for the model itself)
    line: int | None  # 0-based line of the call in a user file (for library layers: the model's call)
    range: tuple[int, int, int, int] | None
    file: str | None
    repeat: bool
    inputs: list = field(default_factory=list)
    output: Any = None
    failed: bool = False
    seq_start: int = 0
    seq_end: int | None = None  # None while the call runs


def _sequence_number() -> int:
    return torch._C._autograd._get_sequence_nr()


def module_tree(context) -> "ModuleCallTree":
    """The job's one module-call tree, shared by the observers that attribute to it."""
    tree = context.shared.get(ModuleCallTree.name)
    if tree is None:
        tree = context.shared[ModuleCallTree.name] = ModuleCallTree()
    return tree


def create(context) -> "ModuleCallTree":
    return module_tree(context)


class ModuleCallTree:
    """Observer (shapes/observers.py). Other observers that use the tree start and stop it too:
    it runs from the first start to the last stop."""

    name = "modules"

    def __init__(self) -> None:
        self._users = 0
        self.calls: list[ModuleCall] = []
        self._stack: list[ModuleCall] = []
        self._seen: set[int] = set()
        self._names: dict[int, str] = {}
        self._roots: list[torch.nn.Module] = []
        self._files: set[str] = set()
        self._source_maps: dict[str, Any] = {}
        self._handles: list = []
        self._dropped = 0
        self._starts: list[int] = []  # seq_start of each call, for bisect (calls are in start order)

    # observer interface -------------------------------------------------------------------------

    def start(self, ctx) -> None:
        from torch.nn.modules import module as module_globals

        self._users += 1
        if self._users > 1:
            return
        self._files = set(ctx.spec.recorded)
        self._source_maps = ctx.recorder.source_maps if ctx.recorder is not None else {}
        self._handles = [
            module_globals.register_module_forward_pre_hook(self._pre_hook),
            module_globals.register_module_forward_hook(self._post_hook, always_call=True),
        ]

    def stop(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        for handle in self._handles:
            handle.remove()
        self._handles = []
        while self._stack:  # a call interrupted by a timeout: close it where it stopped
            call = self._stack.pop()
            if call is not None:  # (None: a call past MAX_ROWS, not recorded)
                call.failed = True
                call.seq_end = _sequence_number()

    def results(self) -> dict:
        """The same tree for every recorded file: a model file driven by a training script
        shows the calls the script made."""
        data = self.tree()
        return {path: data for path in self._files}

    def tree(self) -> dict:
        with torch._C.DisableTorchFunction():
            rows = [self._row(call) for call in self.calls]
            params, trainable = self._totals()
        return {"rows": rows, "dropped": self._dropped,
                "totals": {"params": params, "trainable": trainable, "non_trainable": params - trainable}}

    # attribution, for the cost observers ---------------------------------------------------------

    @property
    def current(self) -> ModuleCall | None:
        for call in reversed(self._stack):
            if call is not None:
                return call
        return None

    def call_of_sequence(self, seq: int) -> ModuleCall | None:
        """The innermost module call during whose forward autograd node `seq` was created."""
        at = bisect.bisect_right(self._starts, seq) - 1
        call = self.calls[at] if at >= 0 else None
        while call is not None and not (call.seq_start <= seq and (call.seq_end is None or seq < call.seq_end)):
            call = self.calls[call.parent] if call.parent is not None else None
        return call

    def user_frame(self, start_depth: int = 1):
        """The innermost frame running a user file, or None."""
        frame = sys._getframe(start_depth)
        while frame is not None and frame.f_code.co_filename not in self._files:
            frame = frame.f_back
        return frame

    # hooks ----------------------------------------------------------------------------------------

    def _pre_hook(self, module: torch.nn.Module, args: Any) -> None:
        # Transforms that are modules (Normalize) run while a batch is loaded: not the model.
        if tracer._loading_depth or len(self.calls) >= MAX_ROWS:
            self._dropped += not tracer._loading_depth
            self._stack.append(None)  # keeps push/pop balanced
            return
        parent = self.current
        if parent is None and id(module) not in self._names:
            self._name_subtree(module)
        frame = self.user_frame(2)
        rng = None
        if frame is not None:
            source_map = self._source_maps.get(frame.f_code.co_filename)
            found = source_map.range_at(frame.f_code, frame.f_lasti) if source_map is not None else None
            rng = (found.line, found.col, found.end_line, found.end_col) if found is not None else None
        with torch._C.DisableTorchFunction():
            inputs = [s for s in map(shape_of, args[:_MAX_ITEMS]) if s is not None]
        call = ModuleCall(
            index=len(self.calls), parent=parent.index if parent is not None else None,
            depth=parent.depth + 1 if parent is not None else 0, module=module,
            name=self._names.get(id(module), ""), line=rng[0] if rng else None, range=rng,
            file=frame.f_code.co_filename if frame is not None else None,
            repeat=id(module) in self._seen, inputs=inputs, seq_start=_sequence_number())
        self._seen.add(id(module))
        self.calls.append(call)
        self._starts.append(call.seq_start)
        self._stack.append(call)

    def _post_hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if not self._stack:
            return
        call = self._stack.pop()
        if call is None:
            return
        call.seq_end = _sequence_number()
        if output is None and sys.exc_info()[0] is not None:
            call.failed = True
        with torch._C.DisableTorchFunction():
            call.output = shape_of(output)

    def _name_subtree(self, root: torch.nn.Module) -> None:
        """Attribute paths of every module under a newly seen outermost model."""
        self._roots.append(root)
        try:
            for name, module in root.named_modules(remove_duplicate=False):
                self._names.setdefault(id(module), name)
        except Exception:  # a user module with an unusual named_modules(): names are a nicety
            self._names.setdefault(id(root), "")

    # results --------------------------------------------------------------------------------------

    def _row(self, call: ModuleCall) -> dict:
        own, total, trainable, nbytes = _parameter_counts(call.module)
        return {
            "index": call.index, "parent": call.parent, "depth": call.depth, "name": call.name,
            "class": type(call.module).__name__, "layer": layer_text(call.module),
            "defined_in": _defined_in(type(call.module)),
            "leaf": not any(True for _ in call.module.children()),
            "line": call.line, "range": list(call.range) if call.range else None, "file": call.file,
            "repeat": call.repeat, "failed": call.failed,
            "inputs": call.inputs, "output": call.output,
            "params_own": own, "params": total, "trainable": trainable, "param_bytes": nbytes,
        }

    def _totals(self) -> tuple[int, int]:
        """Parameters of every module called, each tensor once (shared layers, tied weights)."""
        seen: set[int] = set()
        total = trainable = 0
        for call in self.calls:
            if call.parent is not None or call.repeat:
                continue
            for parameter in _parameters(call.module):
                if id(parameter) in seen:
                    continue
                seen.add(id(parameter))
                total += parameter.numel()
                trainable += parameter.numel() if parameter.requires_grad else 0
        return total, trainable


def _parameters(module: torch.nn.Module) -> list:
    try:
        return [p for p in module.parameters() if not isinstance(p, torch.nn.parameter.UninitializedParameter)]
    except Exception:  # a user module may override parameters(); a missing count is fine
        return []


def _parameter_counts(module: torch.nn.Module) -> tuple[int, int, int, int]:
    """(own, total, trainable, bytes) of a module and its subtree."""
    try:
        own = sum(p.numel() for p in module.parameters(recurse=False)
                  if not isinstance(p, torch.nn.parameter.UninitializedParameter))
    except Exception:  # noqa: BLE001
        own = 0
    params = _parameters(module)
    return (own, sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad),
            sum(p.numel() * p.element_size() for p in params))


def _defined_in(cls: type) -> str | None:
    """The file of the class's forward (the code lens goes above that class)."""
    code = getattr(getattr(cls, "forward", None), "__code__", None)
    return code.co_filename if code is not None else None


def layer_text(module: torch.nn.Module) -> str:
    """`Conv2d(3, 6, kernel_size=(5, 5), stride=(1, 1))`; containers by their class alone."""
    try:
        extra = module.extra_repr()
    except Exception:  # noqa: BLE001 - a user extra_repr may fail on meta
        extra = ""
    return f"{type(module).__name__}({extra})"


def shape_of(value: Any, depth: int = 0):
    """A tensor -> [dims] (with its dtype kept apart); containers -> nested lists; else None."""
    if isinstance(value, torch.Tensor):
        return {"shape": [int(d) for d in value.shape], "dtype": str(value.dtype).removeprefix("torch.")}
    if depth > 3:
        return None
    if isinstance(value, (tuple, list)) and value:
        items = [shape_of(v, depth + 1) for v in value[:_MAX_ITEMS]]
        items = [item for item in items if item is not None]
        return {"items": items} if items else None
    if isinstance(value, dict) and value:
        items = {str(k): shape_of(v, depth + 1) for k, v in list(value.items())[:_MAX_ITEMS]}
        items = {k: v for k, v in items.items() if v is not None}
        return {"keys": items} if items else None
    return None
