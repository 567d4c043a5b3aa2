"""Errors about one layer: Linear/matmul, conv channels, norms, RNNs, embeddings, and layers
that cannot be built. Messages come from the layer's configuration and its input's shape."""

from __future__ import annotations

import inspect
import re
from typing import Any

from torch_lsp.shapes.explain.explained import Explained, torch_first_line
from torch_lsp.shapes.explain.failure import (
    Failure,
    first_line,
    fmt,
    is_library_file,
    module_kind,
)
from torch_lsp.shapes.explain.tracking import shape_of

_MATMUL_TEXT = (
    r"mat1 and mat2 shapes cannot be multiplied|must have same reduction dim|"
    r"Expected size for first two dimensions of batch2|size mismatch, got input"
)
_MATMUL_CALLS = ("matmul", "mm", "bmm", "mv", "baddbmm", "addmm")


def linear_or_matmul(failure: Failure) -> Explained | None:
    attention = failure.has(r"was expecting embedding dimension of (\d+), but got (\d+)")
    if attention:
        return Explained(
            "TL201",
            f"{failure.who()} expects embed_dim {attention.group(1)} but got "
            f"{attention.group(2)}; query shape {fmt(shape_of(failure.module_input(0)))}",
        )
    if not failure.has(_MATMUL_TEXT):
        return None
    if failure.call_is("scaled_dot_product_attention"):
        q, k, v = (fmt(shape) for shape in failure.call.arg_shapes[:3])
        return Explained(
            "TL201",
            f"scaled_dot_product_attention: query {q}, key {k} and value {v} do not fit "
            "(query and key need the same last dim, key and value the same length)",
        )
    if failure.call_is("linear") or (failure.call is None and failure.innermost_is("Linear")):
        x = failure.module_input(0)
        if failure.innermost_is("Linear"):
            layer = failure.innermost.module
            expected, out = layer.in_features, layer.out_features
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
    op = failure.call.name  # `a @ b` reaches torch as matmul
    if op == "bmm" and len(a) == 3 and len(b) == 3 and a[0] != b[0]:
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


CONV_CALLS = (
    "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
)


def conv_channels(failure: Failure) -> Explained | None:
    conv = failure.innermost_is("_ConvNd") or failure.call_is(*CONV_CALLS)
    if not conv:
        return None
    x = shape_of(failure.module_input(0))
    rank = failure.has(r"Expected (\d+D \(unbatched\) or \d+D \(batched\)) input")
    if rank and x is not None:
        return Explained(
            "TL202", f"{failure.who()} expects {rank.group(1)} input but got {len(x)}D; "
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
        args = failure.call.args
        groups = failure.call.kwargs.get("groups", args[6] if len(args) > 6 else 1)
        expected, spatial, out = weight[1] * groups, len(weight) - 2, weight[0]
    got = x[1] if len(x) == spatial + 2 else x[0]
    if got == 1 and expected == 3:
        hint = ("a grayscale image into an RGB conv: convert the images to 3 channels "
                "(transforms.Grayscale(num_output_channels=3) or x.expand(-1, 3, -1, -1)), "
                "or build the layer with in_channels=1")
    elif got == 3 and expected == 1:
        hint = "an RGB image into a single-channel conv: build the layer with in_channels=3"
    else:
        kind = module_kind(failure.innermost.module) if failure.innermost else f"nn.Conv{spatial}d"
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
    rows = (failure.innermost.module.num_embeddings if failure.innermost
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
                and is_library_file(frame.f_code.co_filename)):
            return frame
        tb = tb.tb_next
    return None


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
