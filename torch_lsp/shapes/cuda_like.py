"""Make a meta run allocate what the same code allocates on CUDA (worker side; torch only).

Two things differ on meta and change the memory of a training step a lot:

- **autocast**: `torch.autocast("cuda")` casts only CUDA tensors; on meta (and on a machine
  without CUDA, where it turns itself off) nothing is cast, so activations would be counted in
  float32 instead of float16. This mode applies autocast's own policy to meta tensors: the ops
  of its lower-precision list (matmul, linear, convolutions, attention...) run with float16 (or
  the given dtype) inputs, those of its float32 list (softmax, norms, losses, exp/log...) with
  float32 inputs, and a parameter is cast once per autocast region (autocast's weight cache).
- **attention**: meta's `scaled_dot_product_attention` takes the math path and saves the full
  attention matrix; CUDA takes flash attention (float16/bfloat16) or memory-efficient attention
  (float32), which save one log-sum-exp per query. The same kernels have meta implementations,
  so the call is routed to the one CUDA would choose.

Shapes are unchanged; dtypes under autocast become what they are on a GPU.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

# torch/csrc/autograd/autocast_mode.cpp (CUDA): lower_precision_fp and fp32 policies.
LOWER_PRECISION = frozenset({
    "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
    "conv_tbc", "prelu", "matmul", "__matmul__", "__rmatmul__", "mm", "mv", "bmm", "addmm", "addmv",
    "addr", "baddbmm", "addbmm", "einsum", "chain_matmul", "multi_dot", "linalg_vecdot",
    "scaled_dot_product_attention", "lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell",
})
FLOAT32 = frozenset({
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p", "reciprocal",
    "rsqrt", "sinh", "tan", "pow", "softplus", "layer_norm", "group_norm", "norm", "cosine_similarity",
    "poisson_nll_loss", "cosine_embedding_loss", "nll_loss", "hinge_embedding_loss", "kl_div", "l1_loss",
    "smooth_l1_loss", "huber_loss", "mse_loss", "margin_ranking_loss", "multilabel_margin_loss",
    "soft_margin_loss", "triplet_margin_loss", "multi_margin_loss", "binary_cross_entropy_with_logits",
    "dist", "pdist", "cdist", "renorm", "logsumexp", "softmax", "log_softmax", "cumsum", "cumprod",
    "prod", "sum", "cross_entropy", "interpolate",
})
_LOW = (torch.float16, torch.bfloat16)


class CudaLikeMode(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.regions: list[tuple[bool, torch.dtype]] = []  # (enabled, dtype) of open autocast blocks
        self._weights: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.autocast_calls = 0
        self.attention_kernels: dict[str, int] = {}

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        if self.regions and self.regions[-1][0]:
            return self.regions[-1][1]
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        dtype = self.autocast_dtype
        if dtype is not None and name in LOWER_PRECISION:
            self.autocast_calls += 1
            args, kwargs = self._cast(args, kwargs, dtype)
        elif dtype is not None and name in FLOAT32:
            args, kwargs = self._cast(args, kwargs, torch.float32, only=_LOW)
        if name == "scaled_dot_product_attention":
            routed = self._attention(args, kwargs)
            if routed is not None:
                return routed
        return func(*args, **kwargs)

    # autocast ----------------------------------------------------------------------------------

    def enter_autocast(self, enabled: bool, dtype: torch.dtype) -> None:
        self.regions.append((enabled, dtype))

    def exit_autocast(self) -> None:
        if self.regions:
            self.regions.pop()
        if not self.regions:
            self._weights.clear()  # autocast's cache lives as long as the outermost region

    def _cast(self, args, kwargs, dtype, only=None):
        def cast(value: Any):
            if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != dtype \
                    and (only is None or value.dtype in only) and value.device.type == "meta":
                if value.is_leaf and value.requires_grad:  # a parameter: cast once per region
                    cached = self._weights.get(id(value))
                    if cached is None or cached[0] is not value or cached[1].dtype != dtype:
                        cached = self._weights[id(value)] = (value, value.to(dtype))
                    return cached[1]
                return value.to(dtype)
            if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
                return type(value)(cast(v) for v in value)
            return value

        return tuple(cast(a) for a in args), {k: cast(v) for k, v in kwargs.items()}

    # attention ---------------------------------------------------------------------------------

    def _attention(self, args, kwargs):
        """`F.scaled_dot_product_attention` through the kernel CUDA would pick, or None."""
        names = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")
        bound = dict(zip(names, args))
        bound.update(kwargs)
        query, key, value = bound.get("query"), bound.get("key"), bound.get("value")
        if not all(isinstance(t, torch.Tensor) and t.device.type == "meta" for t in (query, key, value)):
            return None
        if query.dim() != 4 or bound.get("enable_gqa") or bound.get("attn_mask") is not None \
                or key.shape[1] != query.shape[1] or query.shape[-1] % 8 or query.shape[-1] > 256 \
                or len({query.dtype, key.dtype, value.dtype}) != 1:
            return None  # what the fused kernels do not take: the math path, as on CUDA
        dropout = float(bound.get("dropout_p") or 0.0)
        causal = bool(bound.get("is_causal") or False)
        scale = bound.get("scale")
        ops = torch.ops.aten
        try:
            if query.dtype in _LOW:
                self.attention_kernels["flash"] = self.attention_kernels.get("flash", 0) + 1
                return ops._scaled_dot_product_flash_attention(query, key, value, dropout, causal, False, scale=scale)[0]
            needs_grad = any(t.requires_grad for t in (query, key, value)) and torch.is_grad_enabled()
            self.attention_kernels["efficient"] = self.attention_kernels.get("efficient", 0) + 1
            return ops._scaled_dot_product_efficient_attention(query, key, value, None, needs_grad, dropout, causal,
                                                               scale=scale)[0]
        except (RuntimeError, TypeError, NotImplementedError):
            return None


def create(context) -> "CudaLikeRun":
    return CudaLikeRun()


class CudaLikeRun:
    """Observer: installs CudaLikeMode and routes `torch.autocast` blocks to it, in meta runs
    (on a real device, autocast and attention are the real ones)."""

    name = "cuda_like"

    def __init__(self) -> None:
        self.mode = CudaLikeMode()
        self._undo = None
        self._files: list[str] = []

    def start(self, ctx) -> None:
        self._files = list(ctx.spec.recorded)
        if ctx.device is not None and ctx.device.type != "meta":
            return
        self.mode.__enter__()
        self._undo = _route_autocast(self.mode)

    def stop(self) -> None:
        if self._undo is not None:
            self._undo()
            self._undo = None
            self.mode.__exit__(None, None, None)

    def results(self) -> dict:
        data = {"autocast_calls": self.mode.autocast_calls, "attention": dict(self.mode.attention_kernels)}
        return {path: data for path in self._files}


def _route_autocast(mode: CudaLikeMode):
    autocast = torch.amp.autocast_mode.autocast
    real_enter, real_exit = autocast.__enter__, autocast.__exit__

    def enter(self):
        dtype = getattr(self, "fast_dtype", None) or torch.float16
        enabled = getattr(self, "_torch_lsp_enabled", None)
        if enabled is None:
            enabled = self._torch_lsp_enabled = bool(getattr(self, "_enabled", True))
        mode.enter_autocast(enabled, dtype)
        return real_enter(self)

    def exit(self, *args):
        mode.exit_autocast()
        return real_exit(self, *args)

    original_init = autocast.__init__

    def init(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        self._torch_lsp_enabled = bool(enabled)  # before CUDA's absence turns it off
        with warnings.catch_warnings():  # "CUDA is not available... Disabling autocast": emulated here
            warnings.simplefilter("ignore", UserWarning)
            original_init(self, device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)
        if dtype is None and device_type == "cuda":
            self.fast_dtype = torch.float16

    autocast.__enter__, autocast.__exit__, autocast.__init__ = enter, exit, init

    def undo():
        autocast.__enter__, autocast.__exit__, autocast.__init__ = real_enter, real_exit, original_init

    return undo
