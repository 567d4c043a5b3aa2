"""While a trial input runs: the first weight-carrying op each input reaches (worker side).

Static reading (first_use.py) stops at what it cannot name: a loop variable (`for attn, ff in
self.layers`), a weight computed in forward (`F.conv2d(x, normalize(self.weight))`), einops.
Torch sees through all of it: this mode follows every tensor derived from each input and notes
the first conv / linear / embedding / norm / matmul-with-a-parameter it meets, with the weight as
built. When a trial fails, what the input met tells the next template (`F.conv2d` with a weight
of 64 input channels → `[B, 64, H, W]`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from torch_lsp.shapes.first_use import Template


@dataclass
class Met:
    """An input's first weight-carrying op."""

    kind: str  # "conv" / "linear" / "embedding" / "norm"
    rank: int  # rank the op expects (conv: 2 + spatial dims; others: the rank it saw)
    size: int | list[int]  # channels / features / vocabulary / normalized shape
    direct: bool  # the op saw the input itself, or a same-shaped derivative
    layer: str  # the module running at the time ("net.1"), "" when none


_CONV = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3, torch.conv1d: 1, torch.conv2d: 2, torch.conv3d: 3}
_CONV_TRANSPOSE = {F.conv_transpose1d: 1, F.conv_transpose2d: 2, F.conv_transpose3d: 3}
_LINEAR = {F.linear, torch._C._nn.linear}
_EMBEDDING = {F.embedding, torch.embedding}
_NORMS = {F.layer_norm, torch.layer_norm, F.group_norm, torch.group_norm, F.batch_norm, torch.batch_norm,
          F.instance_norm, torch.instance_norm}
_MATMUL = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.bmm, torch.einsum}
_ATTENTION = {F.multi_head_attention_forward}
# Arithmetic that needs its operands' shapes to agree: two inputs meeting here (`src + pos`) are
# usually of one shape, which the better-known of the two tells (example_inputs._learn).
_ELEMENTWISE = {torch.add, torch.sub, torch.mul, torch.div, torch.Tensor.add, torch.Tensor.sub, torch.Tensor.mul,
                torch.Tensor.div, torch.Tensor.__add__, torch.Tensor.__radd__, torch.Tensor.__sub__,
                torch.Tensor.__rsub__, torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.__truediv__}


class FirstOps(TorchFunctionMode):
    def __init__(self, inputs: dict[str, torch.Tensor], current_layer: Callable[[], str]) -> None:
        super().__init__()
        self.shapes = {name: tuple(t.shape) for name, t in inputs.items()}
        self.derived: dict[int, str] = {id(t): name for name, t in inputs.items()}
        self.alive: list[torch.Tensor] = list(inputs.values())  # keeps ids unique while the trial runs
        self.met: dict[str, Met] = {}
        self.paired: list[tuple[str, str]] = []  # (input, input) whose values met in arithmetic
        self.current_layer = current_layer

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        owner = None
        owners = []
        for value in _tensors(args, kwargs):
            found = self.derived.get(id(value))
            if found is not None:
                if owner is None:
                    owner, seen = found, value
                owners.append(found)
        if func in _ELEMENTWISE:
            self.paired += [(owner, other) for other in dict.fromkeys(owners) if other != owner
                            and (owner, other) not in self.paired]
        if owner is not None and owner not in self.met:
            met = self._classify(func, args, kwargs, seen, owner)
            if met is not None:
                self.met[owner] = met
        out = func(*args, **kwargs)
        if owner is not None:
            for tensor in _tensors((out,), {}):
                self.derived.setdefault(id(tensor), owner)
                self.alive.append(tensor)
        return out

    def _classify(self, func, args, kwargs, seen: torch.Tensor, owner: str) -> Met | None:
        direct = tuple(seen.shape) == self.shapes[owner]
        layer = self.current_layer()
        try:
            if func in _CONV and len(args) >= 2 and args[0] is seen:
                groups = args[6] if len(args) > 6 else kwargs.get("groups", 1)
                return Met("conv", 2 + _CONV[func], int(args[1].shape[1]) * int(groups), direct, layer)
            if func in _CONV_TRANSPOSE and len(args) >= 2 and args[0] is seen:
                return Met("conv", 2 + _CONV_TRANSPOSE[func], int(args[1].shape[0]), direct, layer)
            if func in _LINEAR and len(args) >= 2 and args[0] is seen:
                return Met("linear", seen.dim(), int(args[1].shape[-1]), direct, layer)
            if func in _EMBEDDING:
                index, weight = (args[0], args[1]) if func is F.embedding else (args[1], args[0])
                if index is seen:
                    return Met("embedding", seen.dim(), int(weight.shape[0]), direct, layer)
            if func in _NORMS and args and args[0] is seen:
                return self._norm(func, args, kwargs, seen, direct, layer)
            if func in _MATMUL and len(args) == 2 and args[0] is seen and isinstance(args[1], torch.nn.Parameter):
                return Met("linear", seen.dim(), int(args[1].shape[0]), direct, layer)
            if func in _ATTENTION:
                return self._attention(args, kwargs, seen, direct, layer)
        except (IndexError, TypeError, ValueError, RuntimeError):
            return None
        return None

    @staticmethod
    def _attention(args, kwargs, seen, direct, layer) -> Met | None:
        """`F.multi_head_attention_forward(query, key, value, embed_dim_to_check, ...)`: its
        inputs' width is the projections' (it asserts that before any projection runs)."""
        names = ("query", "key", "value", "embed_dim_to_check", "num_heads", "in_proj_weight")
        given = {**dict(zip(names, args)), **kwargs}
        if not any(given.get(n) is seen for n in ("query", "key", "value")):
            return None
        weight = given.get("in_proj_weight")
        weight = weight if isinstance(weight, torch.Tensor) else given.get("q_proj_weight")
        width = weight.shape[-1] if isinstance(weight, torch.Tensor) else given.get("embed_dim_to_check")
        return Met("linear", seen.dim(), int(width), direct, layer) if isinstance(width, int) else None

    @staticmethod
    def _norm(func, args, kwargs, seen, direct, layer) -> Met | None:
        if func in (F.layer_norm, torch.layer_norm):
            shape = args[1] if len(args) > 1 else kwargs.get("normalized_shape")
            return Met("layer_norm", seen.dim(), [int(s) for s in shape], direct, layer)
        if func in (F.group_norm, torch.group_norm):
            weight = args[2] if len(args) > 2 else kwargs.get("weight")
            return Met("norm", max(seen.dim(), 3), int(weight.shape[0]), direct, layer) if weight is not None else None
        running = args[1] if len(args) > 1 else kwargs.get("running_mean")
        weight = running if running is not None else kwargs.get("weight")
        return Met("norm", seen.dim(), int(weight.shape[0]), direct, layer) if weight is not None else None


def template_from(met: Met, current: Template) -> Template | None:
    """The input `met` asks for, keeping the current template's rank where it fits."""
    source = f"{met.layer + ': ' if met.layer else ''}first {met.kind} it reaches"
    rank = len(current.dims)
    if met.kind == "conv":
        spatial = {3: ["L"], 4: ["H", "W"], 5: ["D", "H", "W"]}.get(met.rank, ["H", "W"])
        return Template(["B", met.size] + spatial, source=source)
    if met.kind == "linear":
        if met.direct and rank >= 2:
            return Template(list(current.dims[:-1]) + [met.size], source=source)
        if rank >= 4:  # an image-like input flattened into a sequence (`x.flatten(2).permute(2, 0, 1)`)
            return Template(["B", met.size] + list(current.dims[2:]), source=source)
        return Template(["B", "T"][: max(1, met.rank - 1)] + [met.size], source=source)
    if met.kind == "embedding":
        return Template(list(current.dims) if met.direct else ["B", "T"], torch.int64, met.size, source)
    if met.kind == "layer_norm":
        shape = list(met.size)
        lead = current.dims[: rank - len(shape)] if met.direct and rank > len(shape) else ["B", "T"]
        return Template(list(lead) + shape, source=source)
    if met.kind == "norm":
        spatial = {2: [], 3: ["L"], 4: ["H", "W"], 5: ["D", "H", "W"]}.get(met.rank if met.direct else 4, ["H", "W"])
        return Template(["B", met.size] + spatial, source=source)
    return None


def _tensors(args: Any, kwargs: dict) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []

    def visit(value: Any, depth: int) -> None:
        if isinstance(value, torch.Tensor):
            out.append(value)
        elif depth < 2 and isinstance(value, (tuple, list)):
            for item in value[:16]:
                visit(item, depth + 1)

    for value in list(args) + list(kwargs.values()):
        visit(value, 0)
    return out
