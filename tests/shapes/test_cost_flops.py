"""FLOPs per module call and per line, from the shape run on meta, against torch's own
FlopCounterMode around the same training step executed for real on CPU."""

from __future__ import annotations

import textwrap

import pytest

from tests.conftest import FIXTURES
from tests.shapes.cost_helpers import run_observed, without_cuda_kernels
from tests.shapes.helpers import line_of
from torch_lsp.shapes import cost_view

LENET = (FIXTURES / "shapes" / "lenet_ok.py").read_text()  # the seed's LeNet, batch 8
SGD_STEP = """
optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
labels = torch.randint(0, 10, (8,))
for step in range(1):
    optimizer.zero_grad()
    loss = F.cross_entropy(net(images), labels)
    loss.backward()
    optimizer.step()
"""
LENET_STEP = LENET.replace("outputs = net(images)\n", "") + SGD_STEP  # one forward: the step's

GPT_STEP = """
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    def __init__(self, vocab=512, dim=64, heads=4, layers=2, context=32):
        super().__init__()
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(context, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, idx):
        x = self.tokens(idx) + self.positions(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(x)


model = GPT()
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
idx = torch.randint(0, 512, (4, 32))
for step in range(1):
    logits = model(idx)
    loss = F.cross_entropy(logits.view(-1, 512), idx.view(-1))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
"""


def _reference(source: str, model_name: str):
    """FlopCounterMode around the same step, for real on CPU: (total fwd, total, per module)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    head, _, _ = textwrap.dedent(source).partition("for step in range(1):")
    namespace: dict = {"__name__": "__main__"}
    exec(compile(head, "reference", "exec"), namespace)
    model = namespace[model_name]
    batch = [value for key, value in namespace.items() if key in ("images", "idx")][0]
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # CPU's fused attention has no FLOP formula (it would count 0); the math path's matmuls count
    # what the CUDA kernels' formulas count on meta.
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        out = model(batch)
        forward = counter.get_total_flops()
        target = namespace.get("labels", batch.reshape(-1) if batch.dtype == torch.long else None)
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), target)
        loss.backward()
    per_module = {name: sum(counts.values()) for name, counts in counter.get_flop_counts().items()}
    return forward, counter.get_total_flops(), per_module


@pytest.mark.parametrize("source, model_name, root", [(LENET_STEP, "net", "Net"), (GPT_STEP, "model", "GPT")])
def test_flops_equal_flop_counter_mode_on_real_tensors(source, model_name, root):
    # Attention as the CPU computes it (the math path), not routed to CUDA's kernels.
    _, found = run_observed(source, observers=without_cuda_kernels())
    flops = found["flops"]
    forward, total, per_module = _reference(source, model_name)
    assert flops["total"]["forward"] == forward
    assert flops["total"]["forward"] + flops["total"]["backward"] == total
    rows = found["modules"]["rows"]
    checked = 0
    for row in rows:
        key = f"{root}.{row['name']}" if row["name"] else root
        if row["repeat"] or key not in per_module or row["class"] == "CrossEntropyLoss":
            continue
        fwd, bwd = cost_view.call_flops(flops, row["index"])
        assert fwd + bwd == per_module[key], key
        checked += 1
    assert checked >= 6


def test_attention_routed_to_cuda_kernels_counts_their_recomputation():
    """CUDA's fused attention recomputes the scores in backward: one more T x T matmul."""
    _, math = run_observed(GPT_STEP, observers=without_cuda_kernels())
    _, fused = run_observed(GPT_STEP)
    assert fused["cuda_like"]["attention"] == {"efficient": 2}
    assert fused["flops"]["total"]["forward"] == math["flops"]["total"]["forward"]
    batch, heads, tokens, head_dim, layers = 4, 4, 32, 16, 2
    recomputed = layers * 2 * batch * heads * tokens * tokens * head_dim
    assert fused["flops"]["total"]["backward"] - math["flops"]["total"]["backward"] == recomputed


def test_backward_flops_are_twice_forward_for_layers_that_need_input_gradients():
    _, found = run_observed(LENET_STEP)
    rows = {row["name"]: row for row in found["modules"]["rows"] if not row["repeat"]}
    conv1 = cost_view.call_flops(found["flops"], rows["conv1"]["index"])
    conv2 = cost_view.call_flops(found["flops"], rows["conv2"]["index"])
    assert conv1[1] == conv1[0]  # the images need no gradient: only the weight's
    assert conv2[1] == 2 * conv2[0]  # the weight's and the input's


def test_per_line_totals_and_hover_text():
    source = textwrap.dedent(LENET_STEP)
    report, found = run_observed(source)
    lines = cost_view.line_flops(report)
    conv_line = line_of(source, "self.pool(F.relu(self.conv1(x)))")
    rows = {row["name"]: row for row in found["modules"]["rows"] if not row["repeat"]}
    conv1 = cost_view.call_flops(found["flops"], rows["conv1"]["index"])
    assert lines[conv_line] == conv1  # only conv1 computes on that line (pool and relu: no FLOPs)
    # 6 x 3 x 5 x 5 weights, 8 x 28 x 28 positions, 2 FLOPs each
    assert conv1[0] == 2 * 6 * 3 * 5 * 5 * 8 * 28 * 28 == 5_644_800
    column = source.splitlines()[conv_line].index("self.conv1") + 6
    assert cost_view.flops_hover(report, conv_line, column) == "conv1: 5.64 MFLOP fwd / 5.64 bwd at B = 8"
    # On the model call in the loop: the whole network.
    call_line = line_of(source, "net(images)")
    column = source.splitlines()[call_line].index("net(images)") + 1
    assert cost_view.flops_hover(report, call_line, column).startswith("Net: ")


def test_shapes_output_has_flops_per_line():
    from torch_lsp.shapes import view

    source = (FIXTURES / "cifar10_seed.py").read_text()
    report, _ = run_observed(source, str(FIXTURES / "cifar10_seed.py"))
    annotated = view.annotate(source, report).splitlines()
    conv_line = line_of(source, "self.pool(F.relu(self.conv1(x)))")
    assert annotated[conv_line].endswith("# x: Tensor[32, 6, 14, 14] float32; 22.6 MFLOP fwd / 22.6 MFLOP bwd")


def test_formats():
    assert cost_view.format_flops(0.35e9) == "0.35 GFLOP"
    assert cost_view.format_flops(1.2e12) == "1.2 TFLOP"
    assert cost_view.format_flops(22_579_200) == "22.6 MFLOP"
    assert cost_view.format_flops(512) == "512 FLOP"
    assert cost_view.format_bytes(3.1 * 2**30) == "3.1 GiB"
    assert cost_view.format_bytes(250 * 2**20) == "250 MiB"


def test_flops_under_inference_mode_match_flop_counter_mode():
    """Under inference_mode composite ops (linear on 3-d input, attention) reach the counter
    undecomposed: they are decomposed to count their matmuls, as FlopCounterMode does."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    source = """
    import torch
    import torch.nn as nn
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 8))
    attention = nn.MultiheadAttention(64, 4, batch_first=True)
    with torch.inference_mode():
        y = model(torch.randn(4, 10, 32))
        h = torch.randn(4, 10, 64)
        a, _ = attention(h, h, h, need_weights=False)
    """
    _, found = run_observed(source, observers=without_cuda_kernels())
    namespace: dict = {}
    exec(textwrap.dedent(source).replace("with torch.inference_mode():", "if True:"), namespace)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    # CPU's fused attention has no formula (it would count 0): the math path, as on meta.
    with FlopCounterMode(display=False) as counter, torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
        namespace["model"](torch.randn(4, 10, 32))
        h = torch.randn(4, 10, 64)
        namespace["attention"](h, h, h, need_weights=False)
    assert found["flops"]["total"]["forward"] == counter.get_total_flops() > 0


def test_hover_shows_the_training_call_when_the_model_also_ran_before():
    source = LENET + SGD_STEP  # the fixture's own `outputs = net(images)` first
    report, _ = run_observed(source)
    conv_line = line_of(source, "self.pool(F.relu(self.conv1(x)))")
    column = source.splitlines()[conv_line].index("self.conv1") + 6
    assert cost_view.flops_hover(report, conv_line, column) == "conv1: 5.64 MFLOP fwd / 5.64 bwd at B = 8"


@pytest.mark.slow  # a fresh process that imports torch: what the worker's own imports cost
def test_the_flop_counter_is_imported_without_triton_and_triton_still_imports_after():
    import subprocess
    import sys

    probe = textwrap.dedent("""
        import importlib.util, sys
        import torch_lsp.shapes.observe_cost as observe_cost
        print("triton" in sys.modules, len(observe_cost.flop_registry) > 20)
        if importlib.util.find_spec("triton") is not None:  # installed with CUDA builds of torch
            import triton
            print("triton", "triton.runtime.jit" in sys.modules or hasattr(triton, "__version__"))
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "False True", done.stdout
    assert lines[1:] in ([], ["triton True"])
    assert "triton not found" not in done.stderr  # flop_counter's warning when it cannot import it
