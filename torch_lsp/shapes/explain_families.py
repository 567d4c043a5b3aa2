"""One translator per error family, used by ``explain.explain``.

Each translator recognises its family by torch's text (both the meta-device wording and the
CPU wording) and by what was running (the innermost module, the failing torch call), then
builds the message from shapes and layer configuration only. That is what makes the meta and
CPU messages identical even where torch's own texts differ.
"""

from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

from torch_lsp.shapes.explain import (
    CallTracker,
    Explained,
    ModuleCall,
    TorchCall,
    shape_of,
    torch_first_line,
)


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def fmt(shape: Any) -> str:
    return "[" + ", ".join(str(size) for size in shape) + "]" if shape is not None else "[?]"


def _grid(sizes: Any) -> str:
    return "x".join(str(size) for size in sizes)


def module_kind(module: Any) -> str:
    cls = type(module)
    prefix = "nn." if cls.__module__.startswith("torch.nn") else ""
    return prefix + cls.__name__


@dataclass
class Failure:
    exc: BaseException
    text: str
    call: TorchCall | None
    modules: tuple[ModuleCall, ...]
    names: list[str]

    @classmethod
    def build(cls, exc: BaseException, tracker: CallTracker | None) -> "Failure":
        call = tracker.call_at_failure(exc) if tracker else None
        modules = tracker.modules_at_failure(exc) if tracker else ()
        return cls(exc, str(exc), call, modules, _module_names(exc, modules))

    def has(self, pattern: str) -> re.Match | None:
        return re.search(pattern, self.text)

    @property
    def innermost(self) -> ModuleCall | None:
        return self.modules[-1] if self.modules else None

    def innermost_is(self, *class_names: str) -> bool:
        module = self.innermost
        return module is not None and any(
            base.__name__ in class_names for base in type(module.module).__mro__
        )

    def call_is(self, *names: str) -> bool:
        return self.call is not None and self.call.name in names

    def who(self) -> str:
        """``fc1 (nn.Linear)``; or the failing function's name when no module ran."""
        if self.modules:
            kind = module_kind(self.modules[-1].module)
            name = self.names[-1]
            return f"{name} ({kind})" if name else kind
        return self.call.name.strip("_") if self.call else "torch"

    def module_input(self, index: int = 0) -> Any:
        module = self.innermost
        if module is not None and len(module.inputs) > index:
            return module.inputs[index]
        if self.call is not None and len(self.call.args) > index:
            return self.call.args[index]
        return None

    def tensors_in_call(self) -> list[Any]:
        if self.call is None:
            return []
        values = list(self.call.args) + list(self.call.kwargs.values())
        flat = []
        for value in values:
            flat.extend(value if isinstance(value, (list, tuple)) else [value])
        return [value for value in flat if shape_of(value) is not None]


def _module_names(exc: BaseException, modules: tuple[ModuleCall, ...]) -> list[str]:
    """Attribute path of each module relative to the outermost one (``layer1.0.conv1``)."""
    if not modules:
        return []
    root = modules[0].module
    try:
        paths = {id(module): path for path, module in root.named_modules()}
    except Exception:
        paths = {}
    names = []
    for call in modules:
        path = paths.get(id(call.module), "")
        names.append(path or _variable_name(exc, call.module))
    return names


def _variable_name(exc: BaseException, obj: Any) -> str:
    """The name the user's code gave ``obj`` (``fc``, ``criterion``, ``self.attn``)."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for name, value in frame.f_locals.items():
            if value is obj and name != "self":
                return name
        owner = frame.f_locals.get("self")
        children = getattr(owner, "_modules", None)
        if isinstance(children, dict):
            for name, child in children.items():
                if child is obj:
                    return name
    return ""


# --- families ---------------------------------------------------------------------------

_MATMUL_TEXT = (
    r"mat1 and mat2 shapes cannot be multiplied|must have same reduction dim|"
    r"Expected size for first two dimensions of batch2|size mismatch, got input"
)
_MATMUL_CALLS = ("matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "mv", "baddbmm", "addmm")


def linear_or_matmul(failure: Failure) -> Explained | None:
    if not failure.has(_MATMUL_TEXT):
        return None
    if failure.call_is("linear") or (failure.call is None and failure.innermost_is("Linear")):
        x = failure.module_input(0)
        if failure.innermost_is("Linear"):
            expected, out = failure.innermost.module.in_features, failure.innermost.module.out_features
        else:
            weight_shape = shape_of(failure.call.args[1])
            expected, out = weight_shape[-1], weight_shape[0]
        got = shape_of(x)[-1]
        return Explained(
            "TL201",
            f"{failure.who()} expects {expected} input features but got {got}; "
            f"input shape {fmt(shape_of(x))}",
            f"build the layer as nn.Linear({got}, {out}), or change what feeds it",
        )
    operands = failure.tensors_in_call()[:2] if failure.call_is(*_MATMUL_CALLS) else []
    if len(operands) < 2:
        shapes = _shapes_from_matmul_text(failure.text)
        if shapes is None:
            return None
        return Explained("TL201", f"cannot multiply {fmt(shapes[0])} by {fmt(shapes[1])}")
    a, b = (shape_of(t) for t in operands)
    op = "matmul (@)" if failure.call.name in ("__matmul__", "__rmatmul__") else failure.call.name
    if failure.call.name == "__rmatmul__":
        a, b = b, a
    if failure.call.name == "bmm" and len(a) == 3 and len(b) == 3 and a[0] != b[0]:
        return Explained("TL201", f"{op}: batch sizes differ: {fmt(a)} and {fmt(b)}")
    inner_b = b[-2] if len(b) >= 2 else b[-1]
    hint = ""
    if len(b) >= 2 and a[-1] == b[-1]:
        hint = "transpose the second operand (for attention scores: q @ k.transpose(-2, -1))"
    return Explained(
        "TL201",
        f"{op} cannot multiply {fmt(a)} by {fmt(b)}: inner sizes differ ({a[-1]} vs {inner_b})",
        hint,
    )


def _shapes_from_matmul_text(text: str) -> tuple[list[int], list[int]] | None:
    cpu = re.search(r"\((\d+)x(\d+) and (\d+)x(\d+)\)", text)
    if cpu:
        sizes = [int(g) for g in cpu.groups()]
        return sizes[:2], sizes[2:]
    meta = re.search(r"got \[([\d, ]+)\] X \[([\d, ]+)\]", text)
    if meta:
        return tuple([int(s) for s in group.split(",")] for group in meta.groups())
    return None


_CONV_CALLS = ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")


def conv_channels(failure: Failure) -> Explained | None:
    conv = failure.innermost_is("_ConvNd") or failure.call_is(*_CONV_CALLS)
    if not conv:
        return None
    x = shape_of(failure.module_input(0))
    rank = failure.has(r"Expected (\d+D \(unbatched\) or \d+D \(batched\)) input")
    if rank and x is not None:
        return Explained(
            "TL202", f"{failure.who()} expects {rank.group(1)} input but got {len(x)}-D; "
            f"input shape {fmt(x)}"
        )
    if not failure.has(r"Invalid channel dimensions|expected input\[.*\] to have \d+ channels"):
        return None
    if failure.innermost_is("_ConvNd"):
        layer = failure.innermost.module
        expected, spatial = layer.in_channels, len(layer.kernel_size)
        out = layer.out_channels
    else:
        weight = shape_of(failure.call.args[1])
        groups = failure.call.kwargs.get("groups", failure.call.args[6] if len(failure.call.args) > 6 else 1)
        expected, spatial, out = weight[1] * groups, len(weight) - 2, weight[0]
    got = x[1] if len(x) == spatial + 2 else x[0]
    if got == 1 and expected == 3:
        hint = ("a grayscale image into an RGB conv: convert the images to 3 channels "
                "(transforms.Grayscale(num_output_channels=3) or x.expand(-1, 3, -1, -1)), "
                "or build the layer with in_channels=1")
    elif got == 3 and expected == 1:
        hint = "an RGB image into a single-channel conv: build the layer with in_channels=3"
    else:
        kind = module_kind(failure.innermost.module) if failure.modules else f"nn.Conv{spatial}d"
        hint = f"build the layer with in_channels={got} (e.g. {kind}({got}, {out}, ...))"
    return Explained(
        "TL202",
        f"{failure.who()} expects {expected} input channels but got {got}; input shape {fmt(x)}",
        hint,
    )


def norm_sizes(failure: Failure) -> Explained | None:
    x = shape_of(failure.module_input(0))
    rank = failure.has(r"expected (\d+D(?: or \d+D)?) input \(got (\d+)D input\)")
    if rank and failure.innermost_is("_NormBase"):
        return Explained(
            "TL206",
            f"{failure.who()} expects {rank.group(1)} input but got {rank.group(2)}D; "
            f"input shape {fmt(x)}",
        )
    if failure.has(r"running_mean should contain \d+ elements") and x is not None:
        expected = re.search(r"elements not (\d+)", failure.text).group(1)
        return Explained(
            "TL206",
            f"{failure.who()} expects {expected} features (channels) but got {x[1]}; "
            f"input shape {fmt(x)}",
            f"build it with num_features={x[1]} to match the layer before it",
        )
    if failure.has(r"Given normalized_shape=") and x is not None:
        if failure.innermost_is("LayerNorm"):
            expected = list(failure.innermost.module.normalized_shape)
        else:
            expected = shape_of(failure.call.args[1]) if failure.call else None
            expected = list(failure.call.args[1]) if expected is None and failure.call else expected
        if expected is None:
            return None
        tail = x[-len(expected):]
        return Explained(
            "TL206",
            f"{failure.who()} normalizes the last dims {fmt(expected)} but the input ends in "
            f"{fmt(tail)}; input shape {fmt(x)}",
            f"build it as nn.LayerNorm({tail[-1] if len(tail) == 1 else fmt(tail)})",
        )
    if failure.has(r"number of channels in input, but got weight of shape") and x is not None:
        expected = re.search(r"weight of shape \[(\d+)\]", failure.text).group(1)
        return Explained(
            "TL206",
            f"{failure.who()} expects {expected} channels but got {x[1]}; input shape {fmt(x)}",
        )
    return None


def rnn_input(failure: Failure) -> Explained | None:
    if not failure.innermost_is("RNNBase", "RNNCellBase"):
        return None
    x = shape_of(failure.module_input(0))
    size = failure.has(
        r"Expected (\d+), got (\d+)|inconsistent input_size: got (\d+) expected (\d+)"
    )
    if size and "input_size" in failure.text:
        expected = failure.innermost.module.input_size
        got = x[-1]
        hidden = failure.innermost.module.hidden_size
        return Explained(
            "TL207",
            f"{failure.who()} expects input_size {expected} but got {got} features; "
            f"input shape {fmt(x)}",
            f"the layer before it (e.g. the embedding) is {got} wide: build "
            f"{module_kind(failure.innermost.module)}({got}, {hidden}, ...) or change that width",
        )
    rank = failure.has(r"Expected input to be (\dD or \dD), got (\d)D")
    if rank:
        return Explained(
            "TL207",
            f"{failure.who()} expects {rank.group(1)} input but got {rank.group(2)}D; "
            f"input shape {fmt(x)}",
        )
    if failure.has(r"Expected hidden(\[\d\])? size"):
        return Explained("TL207", f"{failure.who()}: {torch_first_line(failure.exc)}")
    return None


def embedding_indices(failure: Failure) -> Explained | None:
    if not (failure.innermost_is("Embedding", "EmbeddingBag") or failure.call_is("embedding")):
        return None
    indices = failure.module_input(0)
    x = shape_of(indices)
    if failure.has(r"'indices' to have one of the following scalar types"):
        dtype = str(getattr(indices, "dtype", "?")).replace("torch.", "")
        return Explained(
            "TL208",
            f"{failure.who()} needs integer indices (torch.long) but got {dtype}; "
            f"input shape {fmt(x)}",
            "convert the token ids with .long()",
        )
    if not failure.has(r"index out of range"):
        return None
    rows = (failure.innermost.module.num_embeddings if failure.modules
            else shape_of(failure.call.args[1])[0])
    worst = _extreme_index(indices, rows)
    found = f"got index {worst}" if worst is not None else "an index is outside that range"
    return Explained(
        "TL208",
        f"{failure.who()} has {rows} rows (valid indices 0..{rows - 1}) but {found}; "
        f"input shape {fmt(x)}",
        "build the embedding with num_embeddings = vocabulary size (largest id + 1)",
    )


def _extreme_index(indices: Any, rows: int) -> int | None:
    try:  # needs data: works on CPU, not on meta
        low, high = int(indices.min()), int(indices.max())
    except Exception:
        return None
    return low if low < 0 else high if high >= rows else None


_LOSS_CALLS = (
    "cross_entropy", "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div",
)


def loss_shapes(failure: Failure) -> Explained | None:
    if not (failure.innermost_is("_Loss") or failure.call_is(*_LOSS_CALLS)):
        return None
    output, target = failure.module_input(0), failure.module_input(1)
    out_shape, target_shape = shape_of(output), shape_of(target)
    if out_shape is None or target_shape is None:
        return None
    shapes = f"input {fmt(out_shape)}, target {fmt(target_shape)}"
    batch = failure.has(r"Expected input batch_size \((\d+)\) to match target batch_size \((\d+)\)")
    if batch:
        return Explained(
            "TL209",
            f"{failure.who()}: input batch size {batch.group(1)} does not match target batch "
            f"size {batch.group(2)}; {shapes}",
        )
    if failure.has(
        r"multi-target not supported|only batches of spatial targets|"
        r"Index tensor must have the same number of dimensions"
    ):
        expected = [out_shape[0], *out_shape[2:]] if len(out_shape) > 1 else []
        hint = ("squeeze the class dimension: target.squeeze(1)"
                if target_shape == [*expected[:1], 1, *expected[1:]] else
                f"pass class indices of shape {fmt(expected)} (or probabilities of shape "
                f"{fmt(out_shape)})")
        return Explained(
            "TL209",
            f"{failure.who()} expects class-index targets of shape {fmt(expected)} for input "
            f"{fmt(out_shape)} but the target has shape {fmt(target_shape)}",
            hint,
        )
    bounds = failure.has(r"Target (-?\d+) is out of bounds")
    if bounds:
        classes = out_shape[1] if len(out_shape) > 1 else out_shape[0]
        return Explained(
            "TL209",
            f"{failure.who()}: target contains class {bounds.group(1)} but the input has "
            f"{classes} classes (valid 0..{classes - 1}); {shapes}",
        )
    if out_shape != target_shape and failure.has(
        r"must be the same as input size|Using a target size|must match the size of tensor|"
        r"Attempting to broadcast"
    ):
        return Explained(
            "TL209",
            f"{failure.who()} needs input and target of the same shape but got {shapes}",
        )
    return None


def output_too_small(failure: Failure) -> Explained | None:
    x = shape_of(failure.module_input(0))
    where = f"; input shape {fmt(x)}" if x is not None else ""
    pooled = failure.has(r"Given input size: \(([\dx]+)\)\. Calculated output size: \(([-\dx]+)\)")
    if pooled:
        return Explained(
            "TL210",
            f"{failure.who()} leaves no output: input size {pooled.group(1)} gives output size "
            f"{pooled.group(2)}{where}",
            "the feature map is smaller than the window: use a larger input, fewer "
            "downsampling steps, or an adaptive pool (nn.AdaptiveAvgPool2d)",
        )
    kernel = failure.has(
        r"padded input size per channel: \(([\d x]+)\)\. Kernel size: \(([\d x]+)\)"
    )
    if kernel:
        padded, window = (_grid(g.split(" x ")) for g in kernel.groups())
        return Explained(
            "TL210",
            f"{failure.who()} kernel {window} is larger than its padded input {padded}{where}",
            "use a larger input, padding, or a smaller kernel",
        )
    return None


_VIEW_CALLS = ("view", "reshape", "flatten", "unflatten", "view_as", "reshape_as")


def view_sizes(failure: Failure) -> Explained | None:
    source = failure.call.args[0] if failure.call_is(*_VIEW_CALLS) and failure.call.args else None
    x = shape_of(source)
    op = failure.call.name if source is not None else "view"
    invalid = failure.has(r"shape '\[([-\d, ]*)\]' is invalid for input of size (\d+)")
    if invalid:
        target = [int(s) for s in invalid.group(1).split(",") if s.strip()]
        numel = int(invalid.group(2))
        requested = ", ".join(str(s) for s in target)
        known = 1
        for size in target:
            known *= size if size != -1 else 1
        origin = f"the input {fmt(x)}" if x is not None else "the input"
        if -1 in target:
            problem = f"{numel} elements of {origin} do not divide into groups of {known}"
        else:
            problem = f"it needs {known} elements but {origin} has {numel}"
        hint = ""
        if x is not None and len(x) >= 2 and x[0]:
            per_sample = numel // x[0]
            parts = " * ".join(str(s) for s in x[1:])
            hint = (f"each of the {x[0]} samples has {parts} = {per_sample} features; "
                    "use x.view(x.size(0), -1) or torch.flatten(x, 1)")
        return Explained("TL203", f"{op}({requested}) does not fit: {problem}", hint)
    unflat = failure.has(r"unflatten: Provided sizes \[([\d, ]+)\] don't multiply up to the size of dim (\d+) \((\d+)\)")
    if unflat:
        return Explained(
            "TL203",
            f"unflatten sizes [{unflat.group(1)}] do not multiply to {unflat.group(3)}, the size "
            f"of dim {unflat.group(2)}" + (f" of {fmt(x)}" if x is not None else ""),
        )
    if failure.has(r"view size is not compatible with input tensor's size and stride"):
        return Explained(
            "TL203",
            f"{op} cannot be used on this non-contiguous tensor"
            + (f" {fmt(x)}" if x is not None else ""),
            "use .reshape(...) or .contiguous().view(...)",
        )
    return None


_CAT_CALLS = ("cat", "concat", "concatenate", "stack", "hstack", "vstack")


def cat_sizes(failure: Failure) -> Explained | None:
    if not failure.has(
        r"Sizes of tensors must match except in dimension|same number of dimensions|"
        r"Number of dimensions of tensors must match|stack expects each tensor to be equal size"
    ):
        return None
    if not failure.call_is(*_CAT_CALLS) or not failure.call.args:
        return Explained("TL204", torch_first_line(failure.exc))
    tensors = list(failure.call.args[0])
    dim = failure.call.kwargs.get("dim", failure.call.args[1] if len(failure.call.args) > 1 else 0)
    shapes = [shape_of(t) for t in tensors]
    op = "torch.stack" if failure.call.name == "stack" else f"torch.{failure.call.name}"
    first = shapes[0]
    for index, shape in enumerate(shapes[1:], start=1):
        if len(shape) != len(first):
            return Explained(
                "TL204",
                f"{op} needs tensors with the same number of dims, but tensor 0 is {fmt(first)} "
                f"and tensor {index} is {fmt(shape)}",
            )
        cat_dim = None if failure.call.name == "stack" else dim % len(first)
        differing = [d for d in range(len(first)) if d != cat_dim and shape[d] != first[d]]
        if differing:
            detail = ", ".join(f"dim {d}: {first[d]} vs {shape[d]}" for d in differing)
            rule = "equal shapes" if cat_dim is None else f"equal sizes outside dim {cat_dim}"
            hint = ""
            if cat_dim is not None and all(abs(first[d] - shape[d]) == 1 for d in differing):
                hint = ("a skip connection from an odd-sized feature map: crop or pad one side "
                        "(e.g. F.interpolate(x, size=skip.shape[2:])) or use an input size "
                        "divisible by 2**depth")
            return Explained(
                "TL204",
                f"{op}(dim={dim}) needs {rule}, but tensor 0 is {fmt(first)} and tensor "
                f"{index} is {fmt(shape)} ({detail})",
                hint,
            )
    return Explained("TL204", torch_first_line(failure.exc))


_OPERATORS = {
    "__add__": "+", "__radd__": "+", "__iadd__": "+=", "__sub__": "-", "__rsub__": "-",
    "__isub__": "-=", "__mul__": "*", "__rmul__": "*", "__imul__": "*=", "__truediv__": "/",
    "__rtruediv__": "/", "__itruediv__": "/=",
}


def broadcasting(failure: Failure) -> Explained | None:
    if not failure.has(
        r"must match the size of tensor b|Attempting to broadcast a dimension|"
        r"doesn't match the broadcast shape"
    ):
        return None
    operands = [shape_of(t) for t in failure.tensors_in_call()]
    if failure.call is None or len(operands) < 2:
        return Explained("TL205", torch_first_line(failure.exc))
    name = failure.call.name
    op = _OPERATORS.get(name, name)
    if name.startswith("__r"):
        operands = operands[::-1]
    differing = _broadcast_conflicts(operands)
    in_place = name.endswith("_") and not name.startswith("__") or name.startswith("__i")
    if not differing and in_place:
        return Explained(
            "TL205",
            f"{op} in place cannot store the broadcast result into {fmt(operands[0])}: the other "
            f"operand is {fmt(operands[1])}",
        )
    listed = " and ".join(fmt(shape) for shape in operands)
    detail = ", ".join(f"dim {d}: {' vs '.join(map(str, sizes))}" for d, sizes in differing)
    hint = ""
    if name in ("__add__", "__iadd__", "__radd__", "add", "add_") and all(
        len(shape) == 4 for shape in operands
    ):
        hint = ("a residual add with a shortcut of another shape? give the shortcut a "
                "projection (1x1 conv with the block's stride, plus BatchNorm)")
    return Explained("TL205", f"{op} cannot broadcast {listed} ({detail})", hint)


def _broadcast_conflicts(shapes: list[list[int]]) -> list[tuple[int, list[int]]]:
    rank = max(len(shape) for shape in shapes)
    padded = [[1] * (rank - len(shape)) + list(shape) for shape in shapes]
    conflicts = []
    for dim in range(rank):
        sizes = [shape[dim] for shape in padded]
        if len({size for size in sizes if size != 1}) > 1:
            conflicts.append((dim, sizes))
    return conflicts


def construction(failure: Failure) -> Explained | None:
    missing = re.match(r"(\w+)\.__init__\(\) (missing .*|takes .*|got .*)", failure.text)
    if isinstance(failure.exc, TypeError) and missing:
        return Explained("TL211", f"{missing.group(1)} cannot be built: {missing.group(2)}")
    frame = _library_init_frame(failure.exc)
    if frame is None:
        return None
    layer = frame.f_locals["self"]
    arguments = _non_default_arguments(type(layer), frame.f_locals)
    return Explained(
        "TL211",
        f"{module_kind(layer)}({arguments}) cannot be built: {first_line(failure.exc)}",
    )


def _library_init_frame(exc: BaseException):
    """The outermost library ``nn.Module.__init__`` frame the exception passed through."""
    import torch

    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if (frame.f_code.co_name == "__init__"
                and isinstance(frame.f_locals.get("self"), torch.nn.Module)
                and _is_library_file(frame.f_code.co_filename)):
            return frame
        tb = tb.tb_next
    return None


def _is_library_file(filename: str) -> bool:
    import torch

    roots = [os.path.dirname(os.path.dirname(torch.__file__))]
    return any(os.path.abspath(filename).startswith(root + os.sep) for root in roots)


def _non_default_arguments(cls: type, values: dict) -> str:
    try:
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return ""
    shown = []
    for parameter in parameters:
        if parameter.name not in values or parameter.name in ("device", "dtype"):
            continue
        value = values[parameter.name]
        try:
            if parameter.default is not inspect.Parameter.empty and value == parameter.default:
                continue
        except Exception:  # tensors compare elementwise
            pass
        shown.append(f"{parameter.name}={_short_repr(value)}")
    return ", ".join(shown)


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# Order matters: construction and losses first (their errors contain broadcasting or matmul
# texts too), generic families (view, cat, broadcasting) last.
TRANSLATORS: list[Callable[[Failure], Explained | None]] = [
    construction,
    loss_shapes,
    linear_or_matmul,
    conv_channels,
    norm_sizes,
    rnn_input,
    embedding_indices,
    output_too_small,
    view_sizes,
    cat_sizes,
    broadcasting,
]
