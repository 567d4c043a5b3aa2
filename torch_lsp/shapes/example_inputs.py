"""An example input for a constructed module, and the sizes its code accepts (worker side).

Each required `forward` parameter gets templates (first_use.py: from the layer it reaches;
else from its name: `t`/`time` → float `[B]`, `labels` → int64 `[B]`, `mask` → bool), with
symbols for the free sizes (`B`, `T`, `H`=`W`, `L`, `D`). Torch then decides: candidate sizes
are tried on the job's device (meta: each try costs milliseconds), sizes the model itself
mentions first (an `image_size` or `block_size` attribute, a positional embedding's length). Once
one works, each symbol is tried at a second size: a symbol that still works is free (shown by
name), one that fails is pinned, and the layer that failed is the input contract's reason
("H = W = 32 is required by fc1").
"""

from __future__ import annotations

import inspect
import itertools
import math
import re
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from torch_lsp.shapes import containers
from torch_lsp.shapes.context import now
from torch_lsp.shapes.first_op import FirstOps, Met, template_from
from torch_lsp.shapes.first_use import Template, first_use_of, first_uses, template_for

MAX_TRIALS = 48

# Candidate sizes per symbol, most common first; W always follows H (square inputs).
SIZES: dict[str, list[int]] = {
    "B": [2],
    "H": [32, 64, 28, 224, 16, 128, 256, 96, 8, 48, 512],
    "T": [16, 8, 32, 64, 4, 128, 256, 12],
    "L": [32, 64, 16, 128, 256, 8, 28, 512],
    "D": [8, 16, 4, 32],
}
_TIME = re.compile(r"(t|ts|time|times|timestep|timesteps|step|steps|sigma|sigmas|noise_level|noise_levels|log_snr|gamma|"
                   r"noise_cond|.*_(time|times|timesteps|t))")
_LABELS = re.compile(r"(y|label|labels|target|targets|cls|class|classes|class_labels|class_ids|.*_(labels|ids|classes))")
_MASK = re.compile(r"(mask|.*_mask|mask_.*)")
_LENGTHS = re.compile(r"(lengths|lens|seq_lens|seq_lengths|.*_lengths|.*_lens)")
_TOKENS = re.compile(r"(idx|ids|tokens|input_ids|text|token_ids|src_tokens|captions|caption|words)")
_SIZE_ATTRIBUTES = {
    "H": re.compile(r"(image_size|img_size|input_resolution|image_resolution|resolution|input_size|spatial_size|img_res)"),
    "T": re.compile(r"(block_size|context_length|seq_len|max_len|max_length|max_seq_len|n_ctx|num_frames|frames|"
                    r"max_position_embeddings|max_seq_length|seq_length)"),
    "L": re.compile(r"(seq_length|seq_len|length|signal_length)"),
}


@dataclass
class Failure:
    error: BaseException
    layer: str  # attribute path of the innermost module running when it failed ("" = the model)
    met: dict[str, Met] = field(default_factory=dict)  # parameter -> first weight op it reached
    paired: list[tuple[str, str]] = field(default_factory=list)  # inputs that met in arithmetic
    where: str = ""  # the user's line that raised, when no layer was running ("model.py:850")


@dataclass
class ParamInput:
    name: str
    templates: list[Template]
    chosen: int = 0
    stated: str = ""  # where a user-stated input came from (pragma, jaxtyping, ...)
    # An object of a project class (`NestedTensor(tensors, mask)`, containers.py): built from
    # `fields`, each an input of its own (named `param.field`).
    container: type | None = None
    fields: list["ParamInput"] = field(default_factory=list)

    @property
    def template(self) -> Template:
        return self.templates[self.chosen]


def leaves(params: list[ParamInput]) -> list[ParamInput]:
    """The inputs that are tensors (a container's fields in its place)."""
    return [leaf for p in params for leaf in (leaves(p.fields) if p.container is not None else [p])]


def assemble(param: ParamInput, tensors: dict[str, Any]) -> Any:
    """The argument for `param` from its leaves' values."""
    if param.container is None:
        return tensors[param.name]
    if param.container is dict:
        return {f.name[len(param.name) + 1:]: assemble(f, tensors) for f in param.fields}
    return param.container(*[assemble(f, tensors) for f in param.fields])


@dataclass
class Example:
    """What was found for one module: inputs, sizes, which sizes are free and why others are not."""

    params: list[ParamInput]
    sizes: dict[str, int]
    free: dict[str, int] = field(default_factory=dict)  # symbol -> a second size that also works
    pinned: dict[str, str] = field(default_factory=dict)  # symbol -> the layer that requires its size
    attempts: int = 0

    def arguments(self, sizes: dict[str, int] | None = None, device: torch.device | None = None):
        sizes = sizes or self.sizes
        tensors = {leaf.name: make_tensor(leaf.template, sizes, device) for leaf in leaves(self.params)}
        return [assemble(p, tensors) for p in self.params], {}

    def describe(self) -> list[dict]:
        """Per parameter: name, dims (symbols where free), shape, dtype, source, contract; a
        container's fields under `fields`."""
        return [self._describe(param) for param in self.params]

    def _describe(self, param: ParamInput) -> dict:
        if param.container is not None:
            return {"name": param.name, "container": param.container.__name__, "dims": [], "shape": [], "dtype": "",
                    "fields": [self._describe(f) for f in param.fields], "high": None, "stated": False, "contract": "",
                    "source": "a dict, one entry per key forward reads" if param.container is dict
                    else f"{param.container.__name__}, built from its fields"}
        template = param.template
        dims = [d if isinstance(d, int) else (d if d in self.free else self.sizes[d]) for d in template.dims]
        shape = [d if isinstance(d, int) else self.sizes[d] for d in template.dims]
        contract = _contract(template, self.sizes, self.pinned)
        return {"name": param.name, "dims": dims, "shape": shape, "dtype": str(template.dtype).removeprefix("torch."),
                "high": template.high, "source": param.stated or template.source, "stated": bool(param.stated),
                "contract": contract, **({"group": template.group, "listed": template.listed} if template.group > 1 else {})}


def _contract(template: Template, sizes: dict[str, int], pinned: dict[str, str]) -> str:
    """`H = W = 32 is required by fc1`: the sizes of this input that no other value would do,
    grouped by the layer (or check) that refused the other value."""
    by_layer: dict[str, list[str]] = {}
    for symbol in dict.fromkeys(d for d in template.dims if isinstance(d, str)):
        if symbol in pinned:
            by_layer.setdefault(pinned[symbol], []).append(symbol)
    parts = []
    for layer, symbols in by_layer.items():
        same = len({sizes[s] for s in symbols}) == 1
        names = " = ".join(symbols) + f" = {sizes[symbols[0]]}" if same else \
            ", ".join(f"{s} = {sizes[s]}" for s in symbols)
        parts.append(f"{names} {'is' if len(symbols) == 1 or same else 'are'} required by {layer or 'the model'}")
    return "; ".join(parts)


def make_tensor(template: Template, sizes: dict[str, int], device: torch.device | None = None):
    """The template's tensor at these sizes (a tuple of `group` such tensors, e.g. an LSTM's
    `(h0, c0)`)."""
    if template.group > 1:
        single = Template(template.dims, template.dtype, template.high, template.source)
        items = tuple(make_tensor(single, sizes, device) for _ in range(template.group))
        return list(items) if template.listed else items
    if template.lengths:  # every sequence full length: what `pack_padded_sequence` accepts
        return [sizes.get("T", SIZES["T"][0])] * sizes[template.dims[0]]
    shape = [d if isinstance(d, int) else sizes[d] for d in template.dims]
    device = device or torch.get_default_device()
    if template.dtype == torch.bool:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if not template.dtype.is_floating_point:
        return torch.randint(0, max(1, template.high or 2), shape, dtype=template.dtype, device=device)
    return torch.randn(shape, dtype=template.dtype, device=device)


# -- templates ------------------------------------------------------------------------------------


def plan_inputs(instance: nn.Module, stated: dict[str, tuple[Template, str]] | None = None) -> list[ParamInput]:
    """The parameters to pass (required ones, and stated ones) with their candidate templates."""
    stated = stated or {}
    try:
        signature = inspect.signature(instance.forward)
    except (TypeError, ValueError):
        return []
    uses = first_uses(instance)
    annotations = containers.annotations(instance.forward)
    params: list[ParamInput] = []
    for name, parameter in signature.parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if name in stated:
            template, origin = stated[name]
            params.append(ParamInput(name, [template], stated=origin))
            continue
        if parameter.default is not inspect.Parameter.empty or parameter.kind == parameter.KEYWORD_ONLY:
            break  # keep this default and every later one: arguments are passed by position
        if containers.is_tensor_list(annotations.get(name)):
            params.append(ParamInput(name, _list_templates(_templates(name, uses.get(name), instance))))
            continue
        container = containers.container_class(annotations.get(name))
        fields = containers.fields(container, instance, name) if container is not None else None
        if fields:
            params.append(ParamInput(name, [], container=container,
                                     fields=[ParamInput(f"{name}.{f}", _templates(f, use, instance)) for f, use in fields]))
            continue
        keys = containers.dict_keys(instance, name) if not _tensor_annotation(annotations.get(name)) else None
        if keys:  # `batch["image"]`: a dict with one input per key
            params.append(ParamInput(name, [], container=dict, fields=[
                ParamInput(f"{name}.{key}", _templates(key, first_use_of(instance, f"{name}.{key}"), instance))
                for key in keys]))
            continue
        params.append(ParamInput(name, _templates(name, uses.get(name), instance)))
    variadic = [n for n, p in signature.parameters.items() if p.kind == p.VAR_POSITIONAL]
    if not params and variadic:  # `forward(self, *args, **kwargs)` passing them on: one input
        params.append(ParamInput(variadic[0], _templates(variadic[0], uses.get(variadic[0]), instance)))
    return params


def _tensor_annotation(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, torch.Tensor)


def _templates(name: str, use, instance: nn.Module) -> list[Template]:
    out: list[Template] = []
    found = template_for(use) if use is not None else None
    lower = name.lower()
    if found is not None and _LABELS.fullmatch(lower) and not found.dtype.is_floating_point:
        out.append(Template(["B"], found.dtype, found.high, found.source))  # class labels: one per sample
    if found is not None:
        out.append(found)
        out += _rank_variants(found)
    if _TIME.fullmatch(lower):
        out.insert(0 if found is None else len(out), Template(["B"], source=f"`{name}` reads as a time step"))
    if _LABELS.fullmatch(lower):
        high = _class_count(instance)
        out.append(Template(["B"], torch.int64, high, source=f"`{name}` reads as class labels"))
    if _MASK.fullmatch(lower):
        out.append(Template(["B", "T"], torch.bool, source=f"`{name}` reads as a mask"))
        out.append(Template(["B", "H", "W"], torch.bool, source=f"`{name}` reads as an image mask"))
    if _LENGTHS.fullmatch(lower):  # first: what it feeds (a packed sequence) says nothing of it
        out.insert(0, Template(["B"], torch.int64, source=f"`{name}` reads as sequence lengths", lengths=True))
    if _TOKENS.fullmatch(lower) and found is None:
        out.append(Template(["B", "T"], torch.int64, 2, source=f"`{name}` reads as token ids"))
    if found is None and not (_MASK.fullmatch(lower) or _TOKENS.fullmatch(lower) or _LENGTHS.fullmatch(lower)):
        fallbacks = [Template(["B", 3, "H", "W"], source="no layer found: tried an image"),
                     Template(["B", "T", 64], source="no layer found: tried a sequence"),
                     Template(["B", 64], source="no layer found: tried features"),
                     Template(["B"], source="no layer found: tried a vector"),
                     Template(["B", 3, "D", "H", "W"], source="no layer found: tried a volume")]
        rank = use.rank if use is not None else None
        out += sorted(fallbacks, key=lambda t: len(t.dims) != rank)
    return out


LIST_LENGTH = 2  # tensors in a synthesized `List[Tensor]` (one per sample: a batch of 2)


def _list_templates(templates: list[Template]) -> list[Template]:
    """`images: List[Tensor]`: a list of per-sample tensors, each a template without its batch
    dimension (`[B, 3, H, W]` -> a list of `[3, H, W]`)."""
    out = []
    for template in templates:
        if template.dims[:1] == ["B"] and len(template.dims) > 1 and not template.lengths:
            out.append(Template(list(template.dims[1:]), template.dtype, template.high, template.source,
                                group=LIST_LENGTH, listed=True))
    return out


def _rank_variants(template: Template) -> list[Template]:
    dims = template.dims
    if template.dtype.is_floating_point and dims[:1] == ["B"] and len(dims) == 2:  # Linear(f): also [B, T, f]
        return [Template(["B", "T", dims[1]], template.dtype, template.high, template.source)]
    if dims[:2] == ["B", "T"] and len(dims) == 3:
        return [Template(["B", dims[2]], template.dtype, template.high, template.source)]
    if dims[:2] == ["T", "B"]:
        return [Template(["B", "T"] + dims[2:], template.dtype, template.high, template.source)]
    return []


def _class_count(instance: nn.Module) -> int:
    for name, module in instance.named_modules():
        if isinstance(module, nn.Embedding) and "class" in name.lower():
            return module.num_embeddings
    count = getattr(instance, "num_classes", None)
    return count if isinstance(count, int) and count > 0 else 10


def _model_sizes(instance: nn.Module) -> dict[str, list[int]]:
    """Sizes the model names itself: `self.image_size`, `config.block_size`, a positional
    embedding's length. Tried before the generic candidates."""
    found: dict[str, list[int]] = {symbol: [] for symbol in _SIZE_ATTRIBUTES}
    holders = [instance] + [v for v in vars(instance).values() if not isinstance(v, (nn.Module, torch.Tensor, dict, list))
                            and hasattr(v, "__dict__")]
    for holder in holders:
        for key, value in list(vars(holder).items()):
            if isinstance(value, tuple) and len(value) >= 2 and all(isinstance(v, int) for v in value):
                value = value[-1]
            if isinstance(value, int) and not isinstance(value, bool) and 1 < value <= 4096:
                for symbol, pattern in _SIZE_ATTRIBUTES.items():
                    if pattern.fullmatch(key.lower()):
                        found[symbol].append(value)
    for name, parameter in instance.named_parameters():
        if "pos" in name.lower() and parameter.dim() >= 2:
            found["T"].append(int(parameter.shape[-2]))
            found["H"] += _grid_sides(int(parameter.shape[-2]), instance)
    for name, module in instance.named_modules():
        if isinstance(module, nn.Embedding) and "pos" in name.lower():
            found["T"].append(module.num_embeddings)
    return found


def _grid_sides(length: int, instance: nn.Module) -> list[int]:
    """Image sizes a positional table of `length` rows fits, when it is a square grid (plus one
    class token): the grid's side, and that side times the first strided conv's stride (the
    patch size of a ViT's patch embedding)."""
    stride = next((m.stride[0] for m in instance.modules() if isinstance(m, nn.Conv2d) and m.stride[0] > 1), 1)
    sides = []
    for cells in (length, length - 1):
        side = math.isqrt(max(cells, 0))
        if side > 1 and side * side == cells:
            sides += [side * stride, side] if stride > 1 else [side]
    return sides


# -- the search -----------------------------------------------------------------------------------

MAX_LESSONS = 6  # templates learned from failed trials (first_op.py) before giving up


def search(instance: nn.Module, params: list[ParamInput], deadline: float,
           quiet: Callable[[], Any] = nullcontext, free_until: float | None = None) -> Example | Failure:
    """The first templates and sizes with which the module runs; else the last failure.

    Templates are tried in order with each size preset; a failed trial that shows an input
    meeting a layer its template did not expect puts the learned template first and starts
    over (bounded)."""
    model_sizes = _model_sizes(instance)
    candidates = {s: list(dict.fromkeys(model_sizes.get(s, []) + sizes)) for s, sizes in SIZES.items()}
    candidates["W"] = candidates["H"]
    inputs = leaves(params)
    for param in inputs:  # symbols a user stated (`x=[batch, 3, size, size]`)
        for index, symbol in enumerate(param.templates[0].dims if param.stated else ()):
            if isinstance(symbol, str) and symbol not in candidates:
                candidates[symbol] = SIZES["B"] if index == 0 else [16, 32, 8, 64, 28, 224]
    failure: Failure | None = None
    trials = lessons = 0
    while True:
        learned = False
        combinations = _combinations([len(p.templates) for p in inputs])
        # Every combination of templates at the common sizes first, then other sizes: a wrong
        # template is the usual failure, a size the model pins the rarer one.
        for step, combination in itertools.product(_size_steps(candidates), combinations):
            for param, chosen in zip(inputs, combination):
                param.chosen = chosen
            used = {d for p in inputs for d in p.template.dims if isinstance(d, str)}
            if step and not any(step.get(s, 0) < len(candidates[s]) for s in used if step.get(s)):
                continue  # this step only moves sizes these inputs do not have
            if trials >= MAX_TRIALS or now() > deadline:
                return failure or Failure(TimeoutError("no input found in time"), "")
            sizes = {s: c[min(step.get(s, 0), len(c) - 1)] for s, c in candidates.items()}
            sizes["W"] = sizes["H"]  # square first: W is varied on its own once something works
            trials += 1
            failure = try_call(instance, params, sizes, quiet)
            if failure is None:
                example = Example(params, sizes, attempts=trials)
                # Which sizes are free decides what the user reads: it may use more time than the
                # search's share (a first call pays torch's one-time costs), up to `free_until`.
                _find_free_sizes(instance, example, used, quiet, max(deadline, free_until or deadline))
                return example
            if lessons < MAX_LESSONS and _learn(inputs, failure):
                lessons += 1
                learned = True
                break
        if not learned:
            return failure or Failure(RuntimeError("the module takes no inputs that could be built"), "")


def _combinations(counts: list[int], limit: int = 24) -> list[tuple[int, ...]]:
    """Which template each input uses, the most plausible first: fewest moves away from every
    input's first template (each input's second choice before two inputs' second choices)."""
    total = 1
    for count in counts:
        total *= count
    everything = itertools.product(*[range(c) for c in counts])
    if total > 4096:
        return list(itertools.islice(everything, limit))
    return sorted(everything, key=lambda c: (sum(1 for i in c if i), sum(c)))[:limit]


def _size_steps(candidates: dict[str, list[int]]) -> list[dict[str, int]]:
    """Which candidate of each size a trial uses (symbol -> index; absent: the first): all the
    first ones; then one size moved at a time (a model that pins one size and names another
    needs the first of one and a later one of the other); then all moved together."""
    moving = [s for s in candidates if s not in ("B", "W")]
    longest = max((len(candidates[s]) for s in moving), default=1)
    steps: list[dict[str, int]] = [{}]
    steps += [{s: i} for i in range(1, longest) for s in moving if i < len(candidates[s])]
    steps += [{s: i for s in moving} for i in range(1, longest)]
    return steps


def _learn(params: list[ParamInput], failure: Failure) -> bool:
    """Put what the failed trial's inputs met first in line; True when something new was learned."""
    changed = False
    for param in params:
        met = failure.met.get(param.name)
        if met is None or param.stated or param.template.lengths:  # lengths are a list: nothing to learn
            continue
        learned = template_from(met, param.template)
        if learned is None or any(t.dims == learned.dims and t.dtype == learned.dtype for t in param.templates):
            continue
        param.templates.insert(0, learned)
        changed = True
    changed = _learn_pairs(params, failure) or changed
    if changed:
        for param in params:
            param.chosen = 0
    return changed


def _learn_pairs(params: list[ParamInput], failure: Failure) -> bool:
    """Two inputs that met in arithmetic (`src + pos`) with the same rank: the one with no
    layer of its own (a fallback template) takes the other's template."""
    by_name = {p.name: p for p in params}
    changed = False
    for a, b in failure.paired:
        if a not in by_name or b not in by_name:
            continue
        for known, guessed in ((by_name[a], by_name[b]), (by_name[b], by_name[a])):
            if guessed.stated or _is_fallback(known.template) or not _is_fallback(guessed.template):
                continue
            template = known.template
            if len(template.dims) == len(guessed.template.dims) and template.dims != guessed.template.dims \
                    and not any(t.dims == template.dims for t in guessed.templates[:1]):
                guessed.templates.insert(0, Template(list(template.dims), template.dtype, template.high,
                                                     f"as {known.name.rpartition('.')[2]} (they are added)"))
                changed = True
    return changed


def _is_fallback(template: Template) -> bool:
    return template.source.startswith("no layer found")


def variant_size(symbol: str, size: int) -> int:
    """The second size tried for a symbol: 3 for the batch, half a sequence (positional tables
    cap it), twice a spatial size (strides divide it)."""
    if symbol == "B" or size == 2:
        return 3
    if symbol == "T":
        return size // 2 if size >= 4 else size + 1
    return size * 2


def _find_free_sizes(instance: nn.Module, example: Example, used: set[str], quiet, deadline: float) -> None:
    """Each size on its own at a second value: free when the module still runs, else pinned
    by the layer that refused it."""
    for symbol in sorted(used, key="BTLDHW".find):
        if now() > deadline:
            break
        variant = variant_size(symbol, example.sizes[symbol])
        failure = try_call(instance, example.params, {**example.sizes, symbol: variant}, quiet)
        if failure is None:
            example.free[symbol] = variant
        else:
            example.pinned[symbol] = failure.layer or failure.where


def try_call(instance: nn.Module, params: list[ParamInput], sizes: dict[str, int], quiet=nullcontext) -> Failure | None:
    """Call the module once with these sizes; None when it ran."""
    names = {id(m): n for n, m in instance.named_modules()}
    stack: list[str] = []

    def enter(module, args):
        stack.append(names.get(id(module), ""))

    def leave(module, args, output):
        if stack:
            stack.pop()

    def current_layer() -> str:
        return next((n for n in reversed(stack) if n), "")

    handles = (torch.nn.modules.module.register_module_forward_pre_hook(enter),
               torch.nn.modules.module.register_module_forward_hook(leave))
    observer = None
    try:
        with quiet(), torch.no_grad():
            tensors = {leaf.name: make_tensor(leaf.template, sizes) for leaf in leaves(params)}
            observer = FirstOps({n: t for n, t in tensors.items() if isinstance(t, torch.Tensor)}, current_layer)
            with observer:
                instance(*[assemble(p, tensors) for p in params])
        return None
    except Exception as error:  # noqa: BLE001 - the user's model may raise anything
        return Failure(error, current_layer(), met=dict(observer.met) if observer is not None else {},
                       paired=list(observer.paired) if observer is not None else [], where=_user_line(error))
    finally:
        for handle in handles:
            handle.remove()


def _user_line(error: BaseException) -> str:
    """`file.py:12` of the innermost traceback frame outside torch and the standard library."""
    import os

    torch_dir = os.path.dirname(torch.__file__)
    stdlib = os.path.dirname(os.__file__)
    found = ""
    tb = error.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.startswith((torch_dir, stdlib, os.path.dirname(__file__))) and "site-packages" not in filename:
            found = f"the check at {os.path.basename(filename)}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found
