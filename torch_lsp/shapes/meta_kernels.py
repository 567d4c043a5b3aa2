"""Faster meta kernels for ops whose meta implementation is a Python decomposition (worker side).

On the meta device torch runs `native_batch_norm` and `native_batch_norm_backward` (every
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

Installed once in the worker before any job is forked (worker.prepare). Not installed when this
torch lacks the decomposition or refuses the override: jobs then run as before.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)
_LIBRARY = None  # the registration lasts as long as this object


def install() -> bool:
    """Register the kernels; False (and torch's own kernels kept) if this torch cannot."""
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
