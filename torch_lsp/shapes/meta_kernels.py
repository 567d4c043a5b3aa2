"""Faster meta kernels (worker side): torch's own C++ ones where it has them, and batch norm's.

**Torch's C++ meta kernels.** Torch registers a Python meta kernel for every op in its
decomposition tables (`torch._meta_registrations.activate_meta`), on top of the C++ meta kernel
where the op has one: `add`, `mul`, `addmm`, `mm`, `gelu`, `max_pool2d_with_indices` and ~640
more run on meta as Python references (`torch._refs`), ~0.1-0.2 ms a call against ~0.02 ms, so
that a vit_b_16 forward and backward on meta took 157 ms instead of 37. Those Python kernels are
there for symbolic shapes (torch.compile's fake tensors, which use the Python dispatcher's own
table and are not affected here); a shape job's shapes are concrete. The C++ kernel of a
structured op is the meta function the CPU kernel itself runs to size its output, so with it the
job's output shapes, dtypes and strides are those of CPU execution by construction. Checked
against CPU over torch's OpInfo samples (bench/meta_kernels_check.py, docs/benchmarks.md): every
error now has CPU's message (`mat1 and mat2 shapes cannot be multiplied (3x4 and 5x6)`), no
sample that agreed with CPU disagrees, except two in-place ops whose C++ meta kernels are not
CPU's (`_PYTHON_KERNEL_KEPT`: they keep torch's Python one). `relu`, which has no C++ meta
kernel, runs on meta what it runs on CPU: `clamp_min(x, 0)`.
Some ops without a C++ meta kernel have a C++ kernel for every backend made of ops that have
one (`mul.Scalar`, `native_layer_norm`, `_safe_softmax` inside attention): those that models run
often (`_COMPOSITE_ON_META`) use it, layer norm on meta 0.35 -> 0.01 ms a call.
`use_native_kernels` takes torch's Python meta registrations off and puts back those of ops that
have neither; it changes nothing when that library holds a registration it cannot
account for (a newer torch, a registration made later).

**Batch norm.** On the meta device torch runs `native_batch_norm` and `native_batch_norm_backward` (every
BatchNorm layer, and instance norm, in training mode and in eval mode) through their Python
decompositions (`torch._decomp.decompositions`): a dozen tensor operations each, dispatched
and seen by the job's torch-function modes, to produce tensors whose shapes are the input's and
(C,). A ResNet-152 forward on meta took 1.1 s CPU, 0.09 s with the kernels here
(docs/benchmarks.md); in a job, under its recording, a synthesized call of such a model ran past
the 5 s limit.

The kernels here answer with the same shapes, dtypes and layout and nothing else (meta tensors
have no values). They run only where the arguments are what torch's own checks have let through
(C++ checks before the meta kernel: `running_mean should contain C elements`) and every
per-channel tensor is one-dimensional with C elements; anything else goes to torch's
decomposition, so every error is torch's own. Autograd is not involved: its formula for
batch norm sits above the meta kernel, so backward on meta sees the same graph.

Both are installed once in the worker before any job is forked (worker.prepare). Neither is when
this torch lacks what they replace or refuses the override: jobs then run as before.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)
_LIBRARY = None  # the registration lasts as long as this object
# torch's Python meta registrations, once replaced: (its old library, kept so that its finalizer
# does not run; the new one, holding the ops without a C++ kernel)
_REPLACED: tuple | None = None
# Ops whose C++ meta kernel disagrees with CPU where torch's Python one does not
# (bench/meta_kernels_check.py): `a.floor_divide_(b)` with `b` larger than `a` passes on meta;
# `addbmm_` sizes its output as `self`, where CPU resizes it.
_PYTHON_KERNEL_KEPT = frozenset({"aten::floor_divide_.Tensor", "aten::addbmm_"})


def install() -> bool:
    """Batch norm's kernels, torch's C++ meta kernels back, relu's and where's; False if batch
    norm's could not be installed."""
    installed = _install_batch_norm()
    native = use_native_kernels()
    _install_relu()
    if native:  # torch's Python `clamp` calls `where`: where's kernel needs clamp's C++ one
        _install_where()
    return installed


_RELU_LIBRARY = None


def _install_relu() -> None:
    """`relu` on meta as on CPU: booleans refused, then `clamp_min(x, 0)`, whose C++ meta kernel
    is back (use_native_kernels); torch's Python reference took 0.25 ms a call, every `F.relu`
    and `nn.ReLU()` of a model. (`relu_` has a C++ meta kernel of its own.)"""
    global _RELU_LIBRARY
    if _RELU_LIBRARY is not None:
        return
    try:
        import torch

        def relu(input):
            # as CPU: NotImplementedError for booleans
            torch._check_not_implemented(input.dtype != torch.bool, lambda: "Boolean inputs not supported for relu")
            return torch.ops.aten.clamp_min.default(input, 0)

        library = torch.library.Library("aten", "IMPL")
        library.impl("relu", relu, "Meta")
    except Exception as error:  # noqa: BLE001 - keep torch's own kernel
        log.info("meta relu kernel not installed: %r", error)
        return
    _RELU_LIBRARY = library


_WHERE_LIBRARY = None


def _install_where() -> None:
    """`torch.where(condition, input, other)` on meta as on CPU, without torch's Python reference
    (0.1 ms a call: every attention's `_safe_softmax`, every `masked_fill` of a mask). CPU builds
    a TensorIterator over (condition, input, other) with the two values' promoted type
    (TensorCompare.cpp); `clamp.Tensor`'s C++ meta kernel builds one over its three operands in
    that order, so its output has CPU's shape, layout and broadcasting errors. Anything else (a
    condition that is not boolean, values that are not floating point, another device) goes to
    torch's reference."""
    global _WHERE_LIBRARY
    if _WHERE_LIBRARY is not None:
        return
    try:
        import torch
        from torch._decomp import global_decomposition_table

        reference = global_decomposition_table["post_autograd"][torch.ops.aten.where.self]
        clamp = torch.ops.aten.clamp.Tensor
        floating = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

        reference_out = global_decomposition_table["post_autograd"][torch.ops.aten.where.self_out]

        def usual(condition, input, other) -> bool:
            return condition.dtype == torch.bool and torch.result_type(input, other) in floating \
                and condition.device.type == input.device.type == other.device.type == "meta"

        def where(condition, input, other):
            if usual(condition, input, other):
                result = clamp(condition, input, other)
                if result.dtype == torch.result_type(input, other):
                    return result
            return reference(condition, input, other)

        def where_out(condition, input, other, *, out):
            # `_safe_softmax` (every attention) writes into its softmax: a TensorIterator given
            # an output of the right shape and type keeps it as it is.
            if usual(condition, input, other) and out.device.type == "meta":
                result = clamp(condition, input, other)
                if result.shape == out.shape and out.dtype == result.dtype == torch.result_type(input, other):
                    return out
            return reference_out(condition, input, other, out=out)

        library = torch.library.Library("aten", "IMPL")
        library.impl("where.self", where, "Meta")
        library.impl("where.self_out", where_out, "Meta")
    except Exception as error:  # noqa: BLE001 - keep torch's own kernel
        log.info("meta where kernel not installed: %r", error)
        return
    _WHERE_LIBRARY = library


def use_native_kernels() -> int:
    """Give every op that has a C++ meta kernel that kernel back (Python meta registrations
    shadow it); the number of such ops, 0 when nothing was changed."""
    global _REPLACED
    if _REPLACED is not None:
        return _REPLACED[2]
    try:
        import torch
        import torch._meta_registrations as registrations
        from torch._decomp import global_decomposition_table

        old = registrations._meta_lib_dont_use_me_use_register_meta
        # The kernels it holds, as activate_meta chose them: the most specific table first.
        chosen: dict = {}
        for table in ("meta", "post_autograd", "pre_autograd"):
            for op, kernel in global_decomposition_table[table].items():
                chosen.setdefault(op, kernel)
        keyed = {_impl_key(op): (op, kernel) for op, kernel in chosen.items() if isinstance(op, torch._ops.OpOverload)}
        held = {key: entry for key, entry in keyed.items() if key in old._op_impls}
    except Exception as error:  # noqa: BLE001 - another torch: keep its kernels
        log.info("torch's C++ meta kernels not restored: %r", error)
        return 0
    if set(held) != set(old._op_impls):
        log.info("torch's C++ meta kernels not restored: %d Python meta registrations of unknown origin",
                 len(set(old._op_impls) - set(held)))
        return 0
    old._destroy()
    new = torch.library.Library("aten", "IMPL", "Meta")
    native = 0
    for op, kernel in held.values():
        if op.name() not in _PYTHON_KERNEL_KEPT and _runs_in_cpp_on_meta(op.name()):
            native += 1  # its C++ kernel (or batch norm's above) is active again
            continue
        try:
            new.impl(op, kernel)
        except Exception as error:  # noqa: BLE001 - never lose more than this one op's kernel
            log.warning("meta kernel of %s not registered again: %r", op.name(), error)
    registrations._meta_lib_dont_use_me_use_register_meta = new  # for torch's later registrations
    _REPLACED = (old, new, native)
    log.info("%d ops use torch's C++ meta kernels", native)
    return native


def _runs_in_cpp_on_meta(name: str) -> bool:
    """A C++ meta kernel, or one of the ops below whose C++ kernel for every backend is made of
    other ops that have one."""
    import torch

    return torch._C._dispatch_has_kernel_for_dispatch_key(name, "Meta") or (
        name in _COMPOSITE_ON_META and torch._C._dispatch_has_kernel_for_dispatch_key(name, "CompositeExplicitAutograd"))


# Ops without a C++ meta kernel that models run often (counted over torchvision's vit, convnext,
# swin, resnet, efficientnet, nn.Transformer, LSTM and GRU forwards and backwards on meta), whose
# C++ kernel for all backends (CompositeExplicitAutograd) calls ops that have one: `mul.Scalar`
# calls `mul.Tensor`, `native_layer_norm` the batch norm kernel on a view (CPU's own layout:
# contiguous). Not all such ops: `convolution`'s reaches `convolution_overrideable`, which meta
# does not have, and a few read values (`linspace` of tensors); checked against CPU over
# torch's OpInfo samples (bench/meta_kernels_check.py).
_COMPOSITE_ON_META = frozenset({
    "aten::_unsafe_view", "aten::native_layer_norm", "aten::_safe_softmax",
    "aten::mul.Scalar", "aten::div.Scalar", "aten::add.Scalar", "aten::sub.Scalar", "aten::div_.Scalar",
    "aten::mul_.Scalar", "aten::add_.Scalar", "aten::sub_.Scalar", "aten::scalar_tensor",
    "aten::slice_backward", "aten::new_zeros", "aten::new_ones", "aten::new_full", "aten::unsafe_split.Tensor",
    "aten::index_put", "aten::ones_like", "aten::zeros_like", "aten::empty_like", "aten::full_like",
    "aten::masked_fill.Scalar", "aten::sum", "aten::zeros", "aten::ones", "aten::randn", "aten::rand",
})


def _impl_key(op) -> str:
    """How torch.library names an op's Meta registration (Library.impl)."""
    overload = op._schema.overload_name
    return f"{op.namespace}/{op._schema.name.split('::')[-1]}{'.' + overload if overload else ''}/Meta"


def _install_batch_norm() -> bool:
    global _LIBRARY
    if _LIBRARY is not None:
        return True
    try:
        import torch
        from torch._decomp import decomposition_table

        forward = decomposition_table[torch.ops.aten.native_batch_norm.default]
        backward = decomposition_table[torch.ops.aten.native_batch_norm_backward.default]
        library = torch.library.Library("aten", "IMPL")
        library.impl("native_batch_norm", _native_batch_norm(forward), "Meta")
        library.impl("native_batch_norm_backward", _native_batch_norm_backward(backward), "Meta")
    except Exception as error:  # noqa: BLE001 - an older or newer torch: keep its own kernel
        log.info("meta batch norm kernel not installed: %r", error)
        return False
    _LIBRARY = library
    return True


def _channels(input, *per_channel) -> int | None:
    """C when the arguments are the usual ones (a floating input of two or more dimensions,
    each per-channel tensor given one-dimensional with C elements); None sends the call to
    torch's decomposition."""
    if input.dim() < 2 or not input.is_floating_point():
        return None
    channels = input.shape[1]
    if any(t is not None and (t.dim() != 1 or t.shape[0] != channels) for t in per_channel):
        return None
    return channels


def _native_batch_norm(decomposed):
    import torch
    from torch._prims_common import get_computation_dtype

    def native_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps):
        channels = _channels(input, weight, bias, running_mean, running_var)
        if channels is None or (not training and (running_mean is None or running_var is None)):
            return decomposed(input, weight, bias, running_mean, running_var, training, momentum, eps)
        # As the decomposition: the output in the input's dtype and layout, the saved
        # statistics in the computation dtype (float32 for half-precision inputs).
        computation = get_computation_dtype(input.dtype)
        output = torch.empty_like(input)
        if training:
            return output, input.new_empty((channels,), dtype=computation), input.new_empty((channels,), dtype=computation)
        return output, running_mean.to(computation, copy=True), running_var.to(computation, copy=True)

    return native_batch_norm


def _native_batch_norm_backward(decomposed):
    import torch

    def native_batch_norm_backward(grad_out, input, weight, running_mean, running_var, save_mean, save_invstd,
                                   train, eps, output_mask):
        channels = _channels(input, weight, running_mean, running_var, save_mean, save_invstd)
        statistics = (save_mean, save_invstd) if train else (running_mean, running_var)
        if (channels is None or any(t is None for t in statistics)
                or grad_out.shape != input.shape or grad_out.stride() != input.stride()):
            return decomposed(grad_out, input, weight, running_mean, running_var, save_mean, save_invstd,
                              train, eps, output_mask)
        # As the decomposition: the input's gradient always, in the input's dtype and layout;
        # the weight's and bias's as the mask asks, in the weight's dtype (the input's without one).
        per_channel = weight.dtype if weight is not None else input.dtype
        return (torch.empty_like(input),
                input.new_empty((channels,), dtype=per_channel) if output_mask[1] else None,
                input.new_empty((channels,), dtype=per_channel) if output_mask[2] else None)

    return native_batch_norm_backward
