"""Which layer each `forward` parameter reaches first, and what that layer accepts (worker side).

The forward's source is read with `ast` (stdlib) and followed in evaluation order: the first
call that consumes the parameter, or a name derived from it (`x = x.view(...)`), decides. The
callee is then looked up *on the constructed instance*, so the answer is the layer as built:
`self.conv1` is `Conv2d(3, 6, 5)` → `[B, 3, H, W]`. Containers lead to their first child, a
user submodule or a method of the same class to its own body (recursively), a functional call
(`F.linear(x, self.w)`) to its weight. What the code says about the rank (`B, T, C = x.size()`,
`rearrange(x, 'b c h w -> ...')`) refines the layer's answer (`Linear(f)` → `[B, T, f]`).
"""

from __future__ import annotations

import ast
import copy
import inspect
import re
import textwrap
from dataclasses import dataclass, field

import torch
from torch import nn

from torch_lsp.analysis.syntax import target_key

MAX_DEPTH = 6  # submodules / methods followed


@dataclass
class Template:
    """One parameter's example input: each dim a number or a symbol (`B`, `H`, ...)."""

    dims: list[int | str]
    dtype: torch.dtype = torch.float32
    high: int | None = None  # integer inputs take values below this (an Embedding's size)
    source: str = ""  # "conv1 = Conv2d(3, 6, …)"
    group: int = 1  # a tuple of this many tensors of these dims (an LSTM's `(h0, c0)`)
    listed: bool = False  # ... a list rather than a tuple (`images: List[Tensor]`)
    lengths: bool = False  # not a tensor: a list of B sequence lengths, each T (`pack_padded_sequence`)

    def text(self) -> str:
        return "[" + ", ".join(str(d) for d in self.dims) + "]"


@dataclass
class Use:
    """The first consumer found for one parameter."""

    module: nn.Module | None = None
    path: str = ""  # attribute path on the instance: "conv1", "encoder.layers.0"
    functional: str | None = None  # "linear" / "conv2d" / "embedding" with `weight`
    weight: torch.Tensor | None = None
    rank: int | None = None  # what the code says the parameter's rank is
    concatenated_with: int = 1  # parameters joined by torch.cat before the layer
    concatenated_dim: int = -1  # ... along this dimension
    asserted: list[int | str] | None = None  # `assert x.shape[1:] == (self.channels, ...)`
    state: bool = False  # the parameter is a recurrent layer's initial state (`self.lstm(x, h)`)


def first_uses(instance: nn.Module, method: str = "forward") -> dict[str, Use]:
    """Parameter name -> first consumer, for `instance.<method>`'s parameters."""
    function = _function_node(type(instance), method)
    if function is None:
        return {}
    names = [a.arg for a in function.args.posonlyargs + function.args.args + function.args.kwonlyargs][1:]
    return {name: _follow(instance, function, name, "", 0) for name in names}


def first_use_of(instance: nn.Module, name: str, method: str = "forward") -> Use | None:
    """The first consumer of one value in `instance.<method>`: a parameter, or a dotted name
    (`tensor_list.tensors`: a field of a parameter)."""
    function = _function_node(type(instance), method)
    return _follow(instance, function, name, "", 0) if function is not None else None


def function_node(cls: type, method: str = "forward") -> ast.FunctionDef | None:
    """The method's definition, parsed from its source (None without source)."""
    return _function_node(cls, method)


def _function_node(cls: type, method: str) -> ast.FunctionDef | None:
    function = getattr(cls, method, None)
    function = getattr(function, "__func__", function)
    try:
        source = textwrap.dedent(inspect.getsource(function))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    node = tree.body[0] if tree.body else None
    return node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def _follow(owner: nn.Module, function: ast.FunctionDef, name: str, prefix: str, depth: int) -> Use:
    asserted = asserted_shape(owner, function, name)
    if asserted is not None:
        return Use(asserted=asserted, path=prefix.rstrip("."))
    use = Use(rank=_stated_rank(function, name))
    derived = {name}
    aliases = _loop_aliases(function)
    reshaped = False  # a derived value is the parameter reshaped (flatten, permute, view, ...)
    for statement in _statements_in_order(function):
        for call in _calls_in_evaluation_order(statement):
            hits = [i for i, a in enumerate(call.args) if _mentions(a, derived)]
            hits += [k.arg for k in call.keywords if k.arg and _mentions(k.value, derived)]
            if not hits:
                continue
            found = _consumer(owner, call, hits[0], prefix, depth, aliases)
            if found is not None and reshaped and _through_alias(call, aliases):
                continue  # `x = x.flatten(2).permute(2, 0, 1); for layer in ...`: not x's shape
            if found is not None:
                found.rank = found.rank or use.rank
                found.concatenated_with, found.concatenated_dim = _concatenated_count(function, derived)
                return found
        value = getattr(statement, "value", None)
        if isinstance(statement, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and value is not None \
                and _mentions(value, derived):
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            reshaped = reshaped or any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                                       and n.func.attr in _RESHAPES for n in ast.walk(value))
            derived |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    width = asserted_width(owner, function, name) if use.rank in (None, 2) else None
    if width is not None:  # no layer, but `assert sizes.shape[1] == 2`: a [B, 2] tensor
        return Use(asserted=["B", width], rank=2, path=prefix.rstrip("."))
    return use


def _statements_in_order(function: ast.FunctionDef) -> list[ast.stmt]:
    """Simple statements of the body in source order (inside if/for/with/try too); a compound
    statement's header expressions count as a statement of their own."""
    out: list[ast.stmt] = []

    def visit(body: list[ast.stmt]) -> None:
        for statement in body:
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            inner = [getattr(statement, f, None) for f in ("body", "orelse", "finalbody")]
            handlers = getattr(statement, "handlers", [])
            if any(isinstance(b, list) and b for b in inner):
                header = getattr(statement, "test", None) or getattr(statement, "iter", None)
                if header is not None:
                    out.append(ast.Expr(value=header))
                for block in inner:
                    if isinstance(block, list):
                        visit(block)
                for handler in handlers:
                    visit(handler.body)
            else:
                out.append(statement)

    visit(function.body)
    return out


def asserted_shape(owner: nn.Module, function: ast.FunctionDef, name: str) -> list[int | str] | None:
    """`assert x.shape[1:] == (self.channels, self.image_size, self.image_size)` -> [B, 3, 32, 32]."""
    for node in ast.walk(function):
        if not (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare)
                and len(node.test.ops) == 1 and isinstance(node.test.ops[0], ast.Eq)):
            continue
        left, right = node.test.left, node.test.comparators[0]
        start = None
        if isinstance(left, ast.Attribute) and left.attr == "shape" and _is_name(left.value, name):
            start = 0
        elif isinstance(left, ast.Subscript) and isinstance(left.value, ast.Attribute) and left.value.attr == "shape" \
                and _is_name(left.value.value, name) and isinstance(left.slice, ast.Slice) \
                and left.slice.upper is None and left.slice.step is None and isinstance(left.slice.lower, ast.Constant):
            start = left.slice.lower.value
        if start not in (0, 1):
            continue
        value = _evaluate_on(owner, right)
        if isinstance(value, (tuple, list, torch.Size)) and all(isinstance(v, int) for v in value):
            return (["B"] if start == 1 else []) + [int(v) for v in value]
    return None


def asserted_width(owner: nn.Module, function: ast.FunctionDef, name: str) -> int | None:
    """`assert x.shape[1] == 2` / `assert x.size(-1) == self.dim`: the asserted size of the
    dimension after the batch, for a parameter that reaches no layer."""
    for node in ast.walk(function):
        if not (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare)
                and len(node.test.ops) == 1 and isinstance(node.test.ops[0], ast.Eq)):
            continue
        left, right = node.test.left, node.test.comparators[0]
        index = None
        if isinstance(left, ast.Subscript) and isinstance(left.value, ast.Attribute) and left.value.attr == "shape" \
                and _is_name(left.value.value, name):
            index = _evaluate_on(owner, left.slice)
        elif isinstance(left, ast.Call) and isinstance(left.func, ast.Attribute) and left.func.attr == "size" \
                and _is_name(left.func.value, name) and len(left.args) == 1:
            index = _evaluate_on(owner, left.args[0])
        value = _evaluate_on(owner, right) if index in (1, -1) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _stated_rank(function: ast.FunctionDef, name: str) -> int | None:
    """`B, T, C = x.size()` / `b, c, h, w = x.shape` / `res, b, c = x, *x.shape` /
    `rearrange(x, 'b c h w -> ...')`."""
    for node in ast.walk(function):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Tuple) \
                and isinstance(node.value, ast.Tuple):
            elements = node.value.elts
            starred = [e for e in elements if isinstance(e, ast.Starred) and isinstance(e.value, ast.Attribute)
                       and e.value.attr == "shape" and _is_name(e.value.value, name)]
            if len(starred) == 1:
                return len(node.targets[0].elts) - (len(elements) - 1)
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Tuple):
            value = node.value
            if isinstance(value, ast.Call):
                value = value.func
            if isinstance(value, ast.Attribute) and value.attr in ("shape", "size") and _is_name(value.value, name) \
                    and not any(isinstance(e, ast.Starred) for e in node.targets[0].elts):
                return len(node.targets[0].elts)
        if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)) and len(node.args) >= 2:
            callee = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            pattern = node.args[1]
            if callee in ("rearrange", "reduce", "repeat") and _is_name(node.args[0], name) \
                    and isinstance(pattern, ast.Constant) and isinstance(pattern.value, str) and "->" in pattern.value:
                left = pattern.value.split("->")[0]
                if "..." not in left:
                    return len(re.findall(r"\([^)]*\)|\S+", left))
    return None


def _calls_in_evaluation_order(statement: ast.AST) -> list[ast.Call]:
    """Calls of one statement, arguments before the call that takes them."""
    out: list[ast.Call] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            return
        for child in ast.iter_child_nodes(node):
            visit(child)
        if isinstance(node, ast.Call):
            out.append(node)

    visit(statement)
    return out


_METADATA = {"shape", "device", "dtype", "ndim", "is_cuda", "requires_grad"}
_METADATA_CALLS = {"size", "dim", "numel", "len", "isinstance", "type", "exists", "default"}


def _mentions(expr: ast.AST, names: set[str]) -> bool:
    """Does the value of `expr` depend on a tensor named in `names`? Reading its shape, device
    or dtype (`batch = x.shape[0]`) does not count: that is metadata, not the tensor."""
    if isinstance(expr, ast.Name):
        return expr.id in names
    if isinstance(expr, ast.Attribute) and target_key(expr) in names:  # a parameter's field
        return True
    if isinstance(expr, (ast.Subscript, ast.Call)) and key_path(expr) in names:  # a dict parameter's entry
        return True
    if isinstance(expr, ast.Attribute) and expr.attr in _METADATA:
        return False
    if isinstance(expr, ast.Call):
        callee = expr.func.attr if isinstance(expr.func, ast.Attribute) else getattr(expr.func, "id", "")
        if callee in _METADATA_CALLS:
            return False
    return any(_mentions(child, names) for child in ast.iter_child_nodes(expr))


def key_path(node: ast.AST) -> str | None:
    """`batch["image"]` or `batch.get("image")` -> "batch.image": an entry of a dict
    parameter, named like a field."""
    if isinstance(node, ast.Subscript):
        base, key = node.value, node.slice
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args:
        base, key = node.func.value, node.args[0]
    else:
        return None
    if isinstance(key, ast.Constant) and isinstance(key.value, str) and target_key(base):
        return f"{target_key(base)}.{key.value}"
    return None


def _is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _concatenated_count(function: ast.FunctionDef, derived: set[str]) -> tuple[int, int]:
    """`torch.cat([xt, hprev], dim=1)`: how many parameters are joined before the layer, and
    along which dimension (the layer's features are shared only along the feature dim)."""
    for node in ast.walk(function):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("cat", "concat") \
                and node.args and isinstance(node.args[0], (ast.List, ast.Tuple)):
            elements = node.args[0].elts
            if any(_mentions(e, derived) for e in elements):
                given = [k.value for k in node.keywords if k.arg == "dim"] + node.args[1:2]
                dim = ast.literal_eval(given[0]) if given and isinstance(given[0], (ast.Constant, ast.UnaryOp)) else 0
                return len(elements), dim if isinstance(dim, int) else 0
    return 1, 0


_FUNCTIONALS = {"linear", "conv1d", "conv2d", "conv3d", "embedding", "layer_norm"}


def _loop_aliases(function: ast.FunctionDef) -> dict[str, ast.expr]:
    """Loop variables as the first item they take: `for attn, ff in self.layers` -> attn is
    `self.layers[0][0]`, ff is `self.layers[0][1]`; `for i, block in enumerate(self.blocks)` ->
    block is `self.blocks[0]` (the first layer a parameter meets is in the first iteration)."""
    aliases: dict[str, ast.expr] = {}

    def first(value: ast.expr, index: int) -> ast.expr:
        return ast.Subscript(value=value, slice=ast.Constant(index), ctx=ast.Load())

    for node in ast.walk(function):
        if not isinstance(node, ast.For):
            continue
        iterable, target = node.iter, node.target
        if isinstance(iterable, ast.Call) and isinstance(iterable.func, ast.Name) and iterable.func.id == "enumerate" \
                and len(iterable.args) == 1 and isinstance(target, ast.Tuple) and len(target.elts) == 2:
            iterable, target = iterable.args[0], target.elts[1]
        if isinstance(target, ast.Name):
            aliases.setdefault(target.id, first(iterable, 0))
        elif isinstance(target, ast.Tuple):
            for index, element in enumerate(target.elts):
                if isinstance(element, ast.Name):
                    aliases.setdefault(element.id, first(first(iterable, 0), index))
    return aliases


_RESHAPES = {"flatten", "permute", "view", "reshape", "transpose", "unsqueeze", "squeeze", "movedim"}


def _through_alias(call: ast.Call, aliases: dict[str, ast.expr]) -> bool:
    """Is the callee a loop variable (`layer(x)` in `for layer in self.layers`)?"""
    return any(isinstance(n, ast.Name) and n.id in aliases for n in ast.walk(call.func))


def _with_aliases(expr: ast.expr, aliases: dict[str, ast.expr]) -> ast.expr:
    """`attn` -> `self.layers[0][0]` wherever a loop variable is named (a copy of `expr`)."""
    if not aliases or not any(isinstance(n, ast.Name) and n.id in aliases for n in ast.walk(expr)):
        return expr

    class Substitute(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.expr:
            return copy.deepcopy(aliases[node.id]) if node.id in aliases else node

    return ast.fix_missing_locations(Substitute().visit(copy.deepcopy(expr)))


def _consumer(owner: nn.Module, call: ast.Call, position: int | str, prefix: str, depth: int,
              aliases: dict[str, ast.expr] | None = None) -> Use | None:
    """What `call` is, when it consumes a derived value at argument `position` (an index, or a
    keyword's name). A module or method that consumes it but says nothing readable still ends
    the search (an empty Use): later calls see what it made, not the parameter."""
    func = _with_aliases(call.func, aliases or {})
    if isinstance(func, ast.Attribute) and func.attr in _FUNCTIONALS and position == 0 and len(call.args) >= 2:
        weight = _evaluate_on(owner, call.args[1])
        if isinstance(weight, torch.Tensor):
            return Use(functional=func.attr, weight=weight, path=prefix + ast.unparse(call.args[1]).removeprefix("self."))
        return None
    target = _evaluate_on(owner, func)
    if target is None:
        return None
    if isinstance(target, nn.Module):
        path = prefix + ast.unparse(func).removeprefix("self.")
        return _into_module(target, path, position, depth)
    bound = getattr(target, "__self__", None)
    if bound is owner and depth < MAX_DEPTH and callable(target):  # self.encode_image(image)
        node = _function_node(type(owner), target.__name__)
        name = _parameter_name(node, position) if node is not None else None
        return _follow(owner, node, name, prefix, depth + 1) if name else Use()
    return None


def _parameter_name(function: ast.FunctionDef, position: int | str) -> str | None:
    names = [a.arg for a in function.args.posonlyargs + function.args.args][1:]
    if isinstance(position, str):
        return position if position in names + [a.arg for a in function.args.kwonlyargs] else None
    return names[position] if position < len(names) else None


def _into_module(module: nn.Module, path: str, position: int | str, depth: int) -> Use:
    if isinstance(module, nn.Sequential):
        for index, child in enumerate(module):
            if not isinstance(child, _TRANSPARENT):
                return _into_module(child, f"{path}.{index}", 0, depth)
        return Use()
    if type(module).__module__.startswith("torch.nn") or _known_library_layer(module):
        if position in (1, "hx") and isinstance(module, _RECURRENT):
            return Use(module=module, path=path, state=True)
        return Use(module=module, path=path) if position == 0 or _is_attention(module) else Use()
    node = _function_node(type(module), "forward") if depth < MAX_DEPTH else None
    name = _parameter_name(node, position) if node is not None else None
    return _follow(module, node, name, path + ".", depth + 1) if name else Use()


_RECURRENT = (nn.RNN, nn.LSTM, nn.GRU, nn.RNNCell, nn.LSTMCell, nn.GRUCell)
_TRANSPARENT = (nn.Identity, nn.Dropout, nn.ReLU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.Mish,
                nn.Softmax, nn.LogSoftmax)


def _known_library_layer(module: nn.Module) -> bool:
    return type(module).__module__.startswith("torchvision.models")


def _is_attention(module: nn.Module) -> bool:
    return isinstance(module, (nn.MultiheadAttention, nn.TransformerDecoderLayer, nn.TransformerDecoder, nn.Transformer))


def _evaluate_on(owner: nn.Module, expr: ast.AST):
    """`self.conv1`, `self.blocks[0]`, `self.net.weight` on the instance; None for anything else."""
    allowed = (ast.Attribute, ast.Name, ast.Subscript, ast.Constant, ast.Load, ast.UnaryOp, ast.USub, ast.Tuple,
               ast.List, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Pow)
    if not all(isinstance(n, allowed) for n in ast.walk(expr)):
        return None
    if any(isinstance(n, ast.Name) and n.id != "self" for n in ast.walk(expr)):
        return None
    try:
        return eval(compile(ast.Expression(expr), "<first use>", "eval"), {"__builtins__": {}}, {"self": owner})  # noqa: S307
    except Exception:  # noqa: BLE001 - a property that raises, an index out of range
        return None


# -- what a layer accepts ---------------------------------------------------------------------


def template_for(use: Use) -> Template | None:
    """The example input that `use`'s layer accepts, with symbolic batch and free sizes."""
    if use.asserted is not None:
        return Template(list(use.asserted), source=f"the assert in {use.path or 'forward'}")
    if use.functional is not None:
        return _functional_template(use)
    module = use.module
    if module is None:
        return None
    source = f"{use.path} = {_short_repr(module)}" if use.path else _short_repr(module)
    if use.state:
        return _state_template(module, source)
    def share(rank: int) -> int:  # joined along the features (the last dim) of a rank-`rank` input
        return max(1, use.concatenated_with) if use.concatenated_dim in (-1, rank - 1) else 1

    if isinstance(module, nn.Embedding) or isinstance(module, nn.EmbeddingBag):
        return Template(["B", "T"] if (use.rank or 2) >= 2 else ["B"], torch.int64, module.num_embeddings, source)
    if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d, nn.BatchNorm1d, nn.InstanceNorm1d)) and _channels(module):
        channels = _channels(module)
        if isinstance(module, nn.BatchNorm1d) and (use.rank or 2) == 2:
            return Template(["B", channels], source=source)
        return Template(["B", channels, "L"], source=source)
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d, nn.InstanceNorm2d)) and _channels(module):
        return Template(["B", _channels(module), "H", "W"], source=source)
    if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d, nn.BatchNorm3d, nn.InstanceNorm3d)) and _channels(module):
        return Template(["B", _channels(module), "D", "H", "W"], source=source)
    if isinstance(module, nn.GroupNorm):
        return Template(["B", module.num_channels, "H", "W"][: use.rank or 4], source=source)
    if isinstance(module, nn.Linear) and module.in_features:
        rank = 3 if use.rank == 3 else 2
        parts = share(rank)
        features = module.in_features // parts if module.in_features % parts == 0 else module.in_features
        return Template(["B", "T", features] if rank == 3 else ["B", features], source=source)
    if isinstance(module, nn.Bilinear):
        return Template(["B", module.in1_features], source=source)
    if isinstance(module, nn.LayerNorm):
        shape = list(module.normalized_shape)
        lead = ["B", "T"] if (use.rank or len(shape) + 2) - len(shape) >= 2 else ["B"]
        return Template(lead + shape, source=source)
    if isinstance(module, (nn.RNN, nn.LSTM, nn.GRU)):
        parts = share(3)
        features = module.input_size // parts if module.input_size % parts == 0 else module.input_size
        return Template(["B", "T", features] if module.batch_first else ["T", "B", features], source=source)
    if isinstance(module, (nn.RNNCell, nn.LSTMCell, nn.GRUCell)):
        return Template(["B", module.input_size], source=source)
    if isinstance(module, nn.MultiheadAttention):
        return Template(["B", "T", module.embed_dim] if module.batch_first else ["T", "B", module.embed_dim], source=source)
    d_model, batch_first = _transformer_width(module)
    if d_model:
        return Template(["B", "T", d_model] if batch_first else ["T", "B", d_model], source=source)
    if _known_library_layer(module):
        return Template(["B", 3, "H", "W"], source=source)
    return None


def _state_template(module: nn.Module, source: str) -> Template:
    """A recurrent layer's initial state: `[layers * directions, B, hidden]` (a pair for an
    LSTM: `(h0, c0)`); a cell's: `[B, hidden]`."""
    pair = 2 if isinstance(module, (nn.LSTM, nn.LSTMCell)) else 1
    if isinstance(module, (nn.RNNCell, nn.LSTMCell, nn.GRUCell)):
        return Template(["B", module.hidden_size], source=f"initial state of {source}", group=pair)
    layers = module.num_layers * (2 if module.bidirectional else 1)
    return Template([layers, "B", module.hidden_size], source=f"initial state of {source}", group=pair)


def _channels(module: nn.Module) -> int | None:
    return getattr(module, "in_channels", None) or getattr(module, "num_features", None) or None


def _transformer_width(module: nn.Module) -> tuple[int | None, bool]:
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        return module.self_attn.embed_dim, module.self_attn.batch_first
    if isinstance(module, (nn.TransformerEncoder, nn.TransformerDecoder)) and len(module.layers):
        return _transformer_width(module.layers[0])
    if isinstance(module, nn.Transformer):
        return module.d_model, module.batch_first
    return None, False


def _functional_template(use: Use) -> Template | None:
    weight, kind = use.weight, use.functional
    source = f"F.{kind}(…, {use.path})"
    if kind == "linear" and weight.dim() == 2:
        return Template(["B", "T", weight.shape[1]] if use.rank == 3 else ["B", weight.shape[1]], source=source)
    if kind == "embedding":
        return Template(["B", "T"], torch.int64, weight.shape[0], source)
    if kind.startswith("conv") and weight.dim() >= 3:
        spatial = {1: ["L"], 2: ["H", "W"], 3: ["D", "H", "W"]}[weight.dim() - 2]
        return Template(["B", weight.shape[1]] + spatial, source=source)
    if kind == "layer_norm":
        return Template(["B", "T", weight.shape[-1]], source=source)
    return None


def _short_repr(module: nn.Module) -> str:
    """`Conv2d(3, 6, …)`: the layer's first two constructor values."""
    extra = module.extra_repr()
    parts = [p.strip() for p in re.split(r",(?![^()]*\))", extra)] if extra else []
    parts = [re.sub(r"^(in_features|out_features|num_embeddings|embedding_dim|in_channels|out_channels|"
                    r"input_size|hidden_size|embed_dim)=", "", p) for p in parts]
    head = ", ".join(parts[:2])
    return f"{type(module).__name__}({head}{', …' if len(parts) > 2 else ''})"
