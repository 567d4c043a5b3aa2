"""Each error family on small snippets, on meta and on CPU: same code, same message.

The fixtures cover the realistic programs; these cover the other spellings of each family
(functional calls, other layers, other torch wordings) and the fallback TL200.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_lsp.shapes.explain import SHAPE_RULES, explain, is_data_dependent, track_calls

# (id, snippet, expected code, substring of the message)
CASES = [
    ("mm", lambda: torch.mm(torch.randn(4, 16), torch.randn(4, 16)), "TL201",
     "mm cannot multiply [4, 16] by [4, 16]: inner sizes differ (16 vs 4)"),
    ("bmm-batch", lambda: torch.bmm(torch.randn(2, 4, 16), torch.randn(3, 16, 4)), "TL201",
     "bmm: batch sizes differ: [2, 4, 16] and [3, 16, 4]"),
    ("functional-linear", lambda: F.linear(torch.randn(8, 256), torch.randn(10, 400)), "TL201",
     "linear expects 400 input features but got 256; input shape [8, 256]"),
    ("linear-3d", lambda: nn.Linear(400, 10)(torch.randn(2, 5, 256)), "TL201",
     "nn.Linear expects 400 input features but got 256; input shape [2, 5, 256]"),
    ("mha-embed", lambda: nn.MultiheadAttention(64, 4, batch_first=True)(
        torch.randn(2, 5, 32), torch.randn(2, 5, 32), torch.randn(2, 5, 32)), "TL201",
     "nn.MultiheadAttention expects embed_dim 64 but got 32; query shape [2, 5, 32]"),
    ("sdpa", lambda: F.scaled_dot_product_attention(
        torch.randn(2, 4, 5, 16), torch.randn(2, 4, 5, 8), torch.randn(2, 4, 5, 16)), "TL201",
     "query [2, 4, 5, 16], key [2, 4, 5, 8] and value [2, 4, 5, 16] do not fit"),
    ("functional-conv", lambda: F.conv2d(torch.randn(8, 1, 32, 32), torch.randn(6, 3, 5, 5)),
     "TL202", "conv2d expects 3 input channels but got 1; input shape [8, 1, 32, 32]"),
    ("conv-groups", lambda: nn.Conv2d(4, 8, 3, groups=2)(torch.randn(8, 6, 32, 32)), "TL202",
     "nn.Conv2d expects 4 input channels but got 6"),
    ("conv1d", lambda: nn.Conv1d(3, 6, 5)(torch.randn(8, 4, 32)), "TL202",
     "nn.Conv1d expects 3 input channels but got 4; input shape [8, 4, 32]"),
    ("conv-rank", lambda: nn.Conv2d(3, 6, 5)(torch.randn(8, 3)), "TL202",
     "expects 3D (unbatched) or 4D (batched) input but got 2D; input shape [8, 3]"),
    ("reshape-no-wildcard", lambda: torch.randn(8, 16, 5, 5).reshape(8, 300), "TL203",
     "reshape(8, 300) does not fit: it needs 2400 elements but the input [8, 16, 5, 5] has 3200"),
    ("view-stride", lambda: torch.randn(8, 16, 5, 5).transpose(1, 2).view(8, -1), "TL203",
     "view cannot be used on this non-contiguous tensor [8, 5, 16, 5]"),
    ("unflatten", lambda: torch.randn(8, 100).unflatten(1, (3, 33)), "TL203",
     "unflatten sizes [3, 33] do not multiply to 100"),
    ("stack", lambda: torch.stack([torch.randn(3, 4), torch.randn(3, 5)]), "TL204",
     "torch.stack(dim=0) needs equal shapes, but tensor 0 is [3, 4] and tensor 1 is [3, 5]"),
    ("cat-rank", lambda: torch.cat([torch.randn(1, 64, 25), torch.randn(1, 64, 24, 24)], 1),
     "TL204", "needs tensors with the same number of dims"),
    ("broadcast-mul", lambda: torch.randn(8, 64) * torch.randn(8, 32), "TL205",
     "mul (*) cannot broadcast [8, 64] and [8, 32] (dim 1: 64 vs 32)"),
    ("broadcast-in-place", lambda: torch.randn(8, 64).add_(torch.randn(2, 8, 64)), "TL205",
     "in-place add (+=) cannot store the broadcast result into [8, 64]"),
    ("expand", lambda: torch.randn(2, 3).expand(2, 5), "TL205",
     "expand to [2, 5] cannot stretch [2, 3]: dim 1 has size 3"),
    ("batchnorm2d", lambda: nn.BatchNorm2d(128)(torch.randn(8, 64, 4, 4)), "TL206",
     "nn.BatchNorm2d expects 128 features (channels) but got 64"),
    ("batchnorm-rank", lambda: nn.BatchNorm2d(64)(torch.randn(8, 64)), "TL206",
     "nn.BatchNorm2d expects 4D input but got 2D"),
    ("layernorm", lambda: nn.LayerNorm(128)(torch.randn(8, 64)), "TL206",
     "nn.LayerNorm normalizes the last dims [128] but the input ends in [64]"),
    ("groupnorm", lambda: nn.GroupNorm(4, 128)(torch.randn(8, 64, 4, 4)), "TL206",
     "nn.GroupNorm expects 128 channels but got 64"),
    ("gru", lambda: nn.GRU(128, 64)(torch.randn(20, 8, 100)), "TL207",
     "nn.GRU expects input_size 128 but got 100 features; input shape [20, 8, 100]"),
    ("lstm-cell", lambda: nn.LSTMCell(128, 64)(torch.randn(8, 100)), "TL207",
     "nn.LSTMCell expects input_size 128 but got 100 features"),
    ("lstm-rank", lambda: nn.LSTM(128, 64)(torch.randn(20, 8, 4, 128)), "TL207",
     "nn.LSTM expects 2D or 3D input but got 4D"),
    ("embedding-float", lambda: nn.Embedding(100, 32)(torch.randn(4, 10)), "TL208",
     "nn.Embedding needs integer indices (torch.long) but got float32"),
    ("ce-batch", lambda: nn.CrossEntropyLoss()(torch.randn(8, 10), torch.randint(0, 10, (4,))),
     "TL209", "input batch size 8 does not match target batch size 4"),
    ("ce-spatial", lambda: F.cross_entropy(torch.randn(8, 10, 4, 4), torch.randint(0, 10, (8, 4))),
     "TL209", "expects class-index targets of shape [8, 4, 4] for input [8, 10, 4, 4]"),
    ("nll-float-target", lambda: F.nll_loss(torch.randn(8, 10), torch.randn(8)), "TL209",
     "nll_loss needs integer class-index targets (torch.long) but the target is float32"),
    ("mse", lambda: nn.MSELoss()(torch.randn(8, 10), torch.randn(8, 5)), "TL209",
     "nn.MSELoss needs input and target of the same shape but got input [8, 10], target [8, 5]"),
    ("bce", lambda: nn.BCEWithLogitsLoss()(torch.randn(8, 1), torch.rand(8)), "TL209",
     "input [8, 1], target [8]"),
    ("functional-pool", lambda: F.max_pool2d(torch.randn(8, 16, 1, 1), 2), "TL210",
     "max_pool2d leaves no output: input size 16x1x1 gives output size 16x0x0"),
    ("conv-kernel", lambda: nn.Conv2d(3, 6, 5)(torch.randn(8, 3, 3, 3)), "TL210",
     "nn.Conv2d kernel 5x5 is larger than its padded input 3x3"),
    ("conv-dilated-kernel", lambda: nn.Conv2d(3, 6, 3, padding=1, dilation=3)(
        torch.randn(2, 3, 4, 4)), "TL210",
     "nn.Conv2d kernel 7x7 is larger than its padded input 6x6"),
    ("functional-conv-kernel", lambda: F.conv1d(torch.randn(2, 3, 4), torch.randn(6, 3, 5)),
     "TL210", "conv1d kernel 5 is larger than its padded input 4"),
    ("construct-transformer", lambda: nn.TransformerEncoderLayer(100, 3), "TL211",
     "nn.TransformerEncoderLayer(d_model=100, nhead=3) cannot be built: embed_dim must be"),
    ("construct-groups", lambda: nn.Conv2d(3, 6, 3, groups=2), "TL211",
     "groups=2) cannot be built: in_channels must be divisible by groups"),
    ("construct-missing-arg", lambda: nn.Linear(400), "TL211",
     "Linear cannot be built: missing 1 required positional argument: 'out_features'"),
    ("other", lambda: torch.einsum("bij,bjk->bik", torch.randn(2, 3, 4), torch.randn(2, 5, 6)),
     "TL200", "einsum(): subscript j has size 5"),
]


def explained_on(device: str, snippet):
    """The explanation of the snippet's error on ``device``; None when it ran without one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.device(device), track_calls() as tracker:
                snippet()
        except Exception as exc:
            assert not is_data_dependent(exc)
            return explain(exc, tracker)
    return None


@pytest.mark.parametrize("snippet,code,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_family_message_is_the_same_on_meta_and_cpu(snippet, code, message):
    on_meta, on_cpu = explained_on("meta", snippet), explained_on("cpu", snippet)
    assert on_cpu is not None, "the snippet must fail with data"
    if on_meta is None:
        # Some torch versions' meta kernels skip a check (e.g. 2.11: embedding index dtype).
        pytest.skip(f"meta kernels of torch {torch.__version__} do not check this")
    assert on_meta == on_cpu
    if torch.cuda.is_available():
        assert explained_on("cuda", snippet) == on_cpu
    assert on_meta.code == code and message in on_meta.message, on_meta
    assert on_meta.code in SHAPE_RULES


def test_nested_module_names_are_attribute_paths():
    from collections import OrderedDict

    def snippet():
        block = nn.Sequential(nn.Linear(8, 4), nn.Linear(5, 2))
        nn.Sequential(OrderedDict(block=block))(torch.randn(3, 8))

    explained = explained_on("meta", snippet)
    assert explained.message.startswith("block.1 (nn.Linear) expects 5 input features but got 4")


def test_explain_without_tracker_still_translates_torch_text():
    try:
        torch.mm(torch.randn(4, 16), torch.randn(4, 16))
    except RuntimeError as exc:
        assert explain(exc, None).message == "cannot multiply [4, 16] by [4, 16]"


def test_explain_never_raises_on_odd_exceptions():
    class Weird(Exception):
        def __str__(self):
            return "mat1 and mat2 shapes cannot be multiplied (garbage)"

    assert explain(Weird(), None).code == "TL200"
    assert explain(KeyboardInterrupt(), None).code == "TL200"
    assert explain(ValueError(""), None).message == "ValueError"


class OwnLinear(nn.Module):
    """A user's module calling a torch function itself: the function is blamed, not the module."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(10, 400))

    def forward(self, x):
        return F.linear(x, self.weight)


def test_users_own_module_calling_torch_blames_the_call():
    explained = explained_on("meta", lambda: OwnLinear()(torch.randn(8, 256)))
    expected = "linear expects 400 input features but got 256; input shape [8, 256]"
    assert explained.message == expected
