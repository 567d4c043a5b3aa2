"""FLOPs of a shape run, per module call and per source line (worker side; stdlib + torch only).

torch's FLOP formulas count (those of `FlopCounterMode`: matmul, convolution, attention...), and
this observer decides where each count goes:

- forward ops go to the innermost module call running (from the module-call tree) and to the
  innermost line of a user file on the stack;
- backward ops (when the file calls `backward()`) run inside an autograd node; the node's
  sequence number says which forward op created it, hence which module call and line.

FLOPs are counted as torch counts them: a multiply-add is 2 FLOPs. torchinfo's "mult-adds" are
multiply-adds (half as many) estimated from parameter counts; docs/shapes.md has the relation.
"""

from __future__ import annotations

import logging
import sys
from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from torch_lsp.shapes.observe_modules import ModuleCallTree, module_tree


def _flop_counter():
    """torch.utils.flop_counter, imported without triton. At import it loads triton's JIT (~70 MB
    and ~100 ms: most of what the cost observers cost a worker) only to recognise user triton
    kernels, which shape jobs on meta or CPU never run; without triton it counts the same aten
    ops. Hidden only for this import: a later `import triton` (a CUDA job) works as ever."""
    if "torch.utils.flop_counter" in sys.modules or "triton" in sys.modules:
        import torch.utils.flop_counter as flop_counter

        return flop_counter
    logger = logging.getLogger("torch.utils.flop_counter")
    level = logger.level
    sys.modules["triton"] = None  # `import triton` raises ImportError: flop_counter's fallback
    logger.setLevel(logging.ERROR)  # ... which warns that triton kernels will not be counted
    try:
        import torch.utils.flop_counter as flop_counter
    finally:
        logger.setLevel(level)
        if "triton" in sys.modules and sys.modules["triton"] is None:
            del sys.modules["triton"]
    return flop_counter


flop_registry = _flop_counter().flop_registry


def create(context) -> "FlopObserver":
    return FlopObserver(module_tree(context))


class _CountingMode(TorchDispatchMode):
    """torch's FLOP counting (`flop_registry`, FlopCounterMode's formulas) handing every count to
    `attribute(count)`. FlopCounterMode itself keeps counts by module *name* with a module
    tracker (hooks on every module and tensor) and tries to decompose every op it has no formula
    for; the module-call tree attributes here, and only ops with a CompositeImplicitAutograd
    decomposition are decomposed (they reach a dispatch mode only under inference_mode), which
    halves the cost per op. tests/shapes/test_cost_flops.py checks the totals against
    FlopCounterMode."""

    def __init__(self, attribute) -> None:
        super().__init__()
        self._attribute = attribute
        self._decomposable: dict = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        formula = flop_registry.get(func._overloadpacket)
        if formula is None and self._can_decompose(func):
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        if formula is not None:
            try:
                count = formula(*args, **kwargs, out_val=out)
                if count:
                    self._attribute(count)
            except Exception:  # noqa: BLE001 - counting must never fail the user's op
                pass
        return out

    def _can_decompose(self, func) -> bool:
        known = self._decomposable.get(func)
        if known is None:
            known = self._decomposable[func] = isinstance(func, torch._ops.OpOverload) and \
                torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), "CompositeImplicitAutograd")
        return known


class FlopObserver:
    """Observer: FLOPs per module call (forward / backward) and per line."""

    name = "flops"

    def __init__(self, tree: ModuleCallTree) -> None:
        self.tree = tree
        self.by_call: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        # (outermost call index or None, file, line) -> [forward, backward]
        self.by_line: dict[tuple[int | None, str, int], list[int]] = defaultdict(lambda: [0, 0])
        self.total = [0, 0]
        # autograd sequence number -> (module call index or None, (file, line) or None) of the
        # forward op that created the node
        self._made_by: dict[int, tuple[int | None, tuple[str, int] | None]] = {}
        self._counter: _CountingMode | None = None
        self._files: list[str] = []

    def start(self, ctx) -> None:
        self._files = list(ctx.spec.recorded)
        self.tree.start(ctx)
        self._counter = _CountingMode(self._attribute)
        self._counter.__enter__()

    def stop(self) -> None:
        if self._counter is not None:
            counter, self._counter = self._counter, None
            counter.__exit__(None, None, None)
            self.tree.stop()

    def results(self) -> dict:
        data = self.counts()
        return {path: data for path in self._files}

    def counts(self) -> dict:
        """Per call; per line, the FLOPs of one step: a model called several times (a check
        forward before training, synthesized calls at several sizes) counts one of its calls,
        the one that ran backward if any (its `roots`); code outside any module counts once."""
        roots = self._step_calls()
        totals: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
        for (root, file, line), (fwd, bwd) in self.by_line.items():
            if root is None or root in roots:
                totals[(file, line)][0] += fwd
                totals[(file, line)][1] += bwd
        lines = [{"file": file, "line": line, "forward": fwd, "backward": bwd}
                 for (file, line), (fwd, bwd) in sorted(totals.items())]
        calls = {str(index): {"forward": fwd, "backward": bwd} for index, (fwd, bwd) in sorted(self.by_call.items())}
        return {"total": {"forward": self.total[0], "backward": self.total[1]}, "calls": calls, "lines": lines,
                "roots": sorted(roots)}

    def _step_calls(self) -> set[int]:
        """One outermost call per module instance: the first that ran backward, else the first."""
        chosen: dict[int, int] = {}
        for call in self.tree.calls:
            if call.parent is not None:
                continue
            known = chosen.get(id(call.module))
            if known is None or (not self.by_call[known][1] and self.by_call[call.index][1]):
                chosen[id(call.module)] = call.index
        return set(chosen.values())

    def _attribute(self, count: int) -> None:
        node = torch._C._current_autograd_node()
        if node is None:
            self._forward(count)
        else:
            self._backward(count, node)

    def _forward(self, count: int) -> None:
        call = self.tree.current
        frame = self.tree.user_frame(3)
        where = (frame.f_code.co_filename, frame.f_lineno - 1) if frame is not None else None
        index = call.index if call is not None else None
        # Autograd made this op's node (if any) just before dispatching the op.
        self._made_by.setdefault(torch._C._autograd._get_sequence_nr() - 1, (index, where))
        self._add(0, count, index, where)

    def _backward(self, count: int, node) -> None:
        seq = node._sequence_nr()
        index, where = self._made_by.get(seq, (None, None))
        if index is None:
            call = self.tree.call_of_sequence(seq)
            index = call.index if call is not None else None
            if where is None and call is not None and call.file is not None:
                where = (call.file, call.line)
        self._add(1, count, index, where)

    def _add(self, phase: int, count: int, index: int | None, where) -> None:
        self.total[phase] += count
        root = None
        while index is not None:  # a call's FLOPs include those of the calls inside it
            self.by_call[index][phase] += count
            root, index = index, self.tree.calls[index].parent
        if where is not None:
            self.by_line[(root, *where)][phase] += count
