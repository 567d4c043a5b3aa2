"""Errors about tensor operations: losses, windows larger than their input, view/reshape,
cat/stack, broadcasting. Messages come from the shapes of the failing call's operands."""

from __future__ import annotations

from torch_lsp.shapes.explain.explained import Explained, torch_first_line
from torch_lsp.shapes.explain.failure import Failure, fmt, grid
from torch_lsp.shapes.explain.layers import CONV_CALLS
from torch_lsp.shapes.explain.tracking import shape_of

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
    dtype = failure.has(
        r"expected target dtype to be Long|Expected dtype int32/int64 for index|"
        r"expected scalar type Long but found|not implemented for '(Float|Double|Half|BFloat16)'|"
        r"Expected floating point type for target with class probabilities"
    )
    if dtype:
        kind = str(getattr(target, "dtype", "?")).replace("torch.", "")
        if getattr(target, "is_floating_point", lambda: False)():
            return Explained(
                "TL209",
                f"{failure.who()} needs integer class-index targets (torch.long) but the "
                f"target is {kind}; {shapes}",
                "convert the target with .long()",
            )
        return Explained(
            "TL209",
            f"{failure.who()} reads a target shaped like the input as class probabilities, "
            f"which must be float, but the target is {kind}; {shapes}",
            f"pass class indices of shape {fmt(out_shape[:1] + out_shape[2:])}, or .float()",
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
    # Convolutions: meta and CPU word this differently (and differently across torch
    # versions), so the sizes come from the layer's configuration and the input.
    convolution = failure.innermost_is("_ConvNd") or failure.call_is(*CONV_CALLS)
    if convolution and x is not None and failure.has(
        r"Output size is too small|Kernel size can't be greater than actual input size"
    ):
        padded, window = _conv_window(failure, x)
        return Explained(
            "TL210",
            f"{failure.who()} kernel {grid(window)} is larger than its padded input "
            f"{grid(padded)}{where}",
            "use a larger input, padding, or a smaller kernel",
        )
    return None


def _conv_window(failure: Failure, x: list[int]) -> tuple[list[int], list[int]]:
    """(padded input size, effective kernel size) per spatial dim of a convolution."""
    if failure.innermost_is("_ConvNd"):
        layer = failure.innermost.module
        kernel, padding, dilation = layer.kernel_size, layer.padding, layer.dilation
    else:
        args, kwargs = failure.call.args, failure.call.kwargs
        kernel = shape_of(args[1])[2:]
        padding = kwargs.get("padding", args[4] if len(args) > 4 else 0)
        dilation = kwargs.get("dilation", args[5] if len(args) > 5 else 1)
    spatial = len(kernel)
    if isinstance(padding, str):  # "valid" (no padding); "same" never shrinks the input
        padding = 0
    padding = padding if isinstance(padding, (tuple, list)) else (padding,) * spatial
    dilation = dilation if isinstance(dilation, (tuple, list)) else (dilation,) * spatial
    window = [step * (size - 1) + 1 for size, step in zip(kernel, dilation)]
    padded = [size + 2 * pad for size, pad in zip(x[-spatial:], padding)]
    return padded, window


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
    unflat = failure.has(
        r"unflatten: Provided sizes \[([\d, ]+)\] don't multiply up to the size of dim (\d+) "
        r"\((\d+)\)"
    )
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


# How an elementwise op reads in a message; `a += b` reaches torch as Tensor.add_.
_OPERATORS = {
    "add": "add (+)", "add_": "in-place add (+=)", "sub": "sub (-)", "sub_": "in-place sub (-=)",
    "mul": "mul (*)", "mul_": "in-place mul (*=)", "div": "div (/)", "div_": "in-place div (/=)",
}


def broadcasting(failure: Failure) -> Explained | None:
    expand = failure.has(
        r"The expanded size of the tensor \((\d+)\) must match the existing size \((\d+)\) "
        r"at non-singleton dimension (\d+)\.\s+Target sizes: (\[.*?\])\.\s+Tensor sizes: (\[.*?\])"
    )
    if expand:
        new, old, dim, target, current = expand.groups()
        return Explained(
            "TL205",
            f"expand to {target} cannot stretch {current}: dim {dim} has size {old}, not 1 "
            f"(only size-1 dims can be expanded to {new})",
        )
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
    differing = _broadcast_conflicts(operands)
    in_place = name.endswith("_") and not name.startswith("__")
    if not differing and in_place:
        return Explained(
            "TL205",
            f"{op} cannot store the broadcast result into {fmt(operands[0])}: the other "
            f"operand is {fmt(operands[1])}",
        )
    listed = " and ".join(fmt(shape) for shape in operands)
    detail = ", ".join(f"dim {d}: {' vs '.join(map(str, sizes))}" for d, sizes in differing)
    hint = ""
    if name in ("add", "add_") and all(
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
