"""The training step's peak memory, accounted on meta, against real CPU execution of the same
code (the CPU allocator's own running total, through the profiler, in a fresh process:
bench/memory_reference.py) and against a closed form; the batch search on that closed form."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT
from tests.shapes.cost_helpers import run_observed
from tests.shapes.helpers import line_of
from torch_lsp.shapes import cost_view, memory_fit

D, L = 64, 4  # a stack of L bias-free Linear(D, D) layers


def linear_stack(batch: int, steps: int = 1) -> str:
    return textwrap.dedent(f"""
    import torch
    import torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset

    model = nn.Sequential(*[nn.Linear({D}, {D}, bias=False) for _ in range({L})])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(TensorDataset(torch.randn(4096, {D})), batch_size={batch})
    for step, (x,) in zip(range({steps}), loader):
        optimizer.zero_grad()
        w = torch.ones({D})
        loss = (model(x) * w).sum()
        loss.backward()
        optimizer.step()
    """)


def closed_form(batch: int) -> int:
    """The stack's peak, by hand: at the last layer's backward, the weights, that layer's weight
    gradient, the L saved inputs plus the gradients flowing in and out (L + 2 tensors of
    batch x D floats), `w`, and two scalars (the loss and its gradient). Holds once the batch
    terms dominate (batch >= 64 here); SGD without momentum keeps no state."""
    return (L + 1) * D * D * 4 + (L + 2) * batch * D * 4 + D * 4 + 2 * 4


def real_cpu_peak(source: str, tmp_path, name: str = "case.py") -> int:
    script = tmp_path / name
    script.write_text(source)
    result = subprocess.run([sys.executable, str(ROOT / "bench" / "memory_reference.py"), "--device", "cpu",
                             str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])["peak"]


def exact_memory(source: str, **options) -> dict:
    report, found = run_observed(source, memory_rounding="exact", **options)
    assert not report.errors and not report.stopped, (report.errors, report.stopped)
    return found["memory"]


@pytest.mark.slow  # runs the model for real on CPU (a few seconds) to compare
@pytest.mark.parametrize("batch", [128, 512])
def test_linear_stack_peak_is_the_closed_form_and_the_real_cpu_peak(batch, tmp_path):
    memory = exact_memory(linear_stack(batch))
    assert memory["batch"] == batch and memory["training"]
    assert memory["peak"] == closed_form(batch)
    dataset = 4096 * D * 4  # made before the loop: CPU memory in a GPU run, not counted
    assert real_cpu_peak(linear_stack(batch, steps=3), tmp_path) - dataset == closed_form(batch)


def test_batch_search_finds_the_closed_form_limit():
    source = linear_stack(128)
    runs = []

    def run_at(batch):
        runs.append(batch)
        return exact_memory(source, **({"batch_size": batch} if batch else {}))

    usable = closed_form(1000) + 100
    found = memory_fit.search(run_at, usable)
    assert found["largest_batch"] == 1000
    assert runs == [None, 256, 1000]  # the file's batch, twice it, the check at the prediction
    assert found["bytes_per_sample"] == (L + 2) * D * 4
    assert found["fixed_bytes"] == closed_form(0)
    too_small = memory_fit.search(run_at, closed_form(0) // 2)
    assert too_small["largest_batch"] == 0 and "even batch 1" in too_small["reason"]


def test_in_process_jobs_leave_the_real_data_loader_behind():
    """The stand-ins a job installs (one batch, on the job's device) are undone after it, so a
    later test in this process runs code for real on CPU (tests/shapes/helpers.py: cpu_run)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    exact_memory(linear_stack(64), batch_size=128)
    batches = list(DataLoader(TensorDataset(torch.randn(100, D)), batch_size=32))
    assert [(tuple(x.shape), x.device.type) for (x,) in batches] == [((32, D), "cpu")] * 3 + [((4, D), "cpu")]


def test_search_without_a_dataloader_says_why():
    source = """
    import torch, torch.nn as nn
    model = nn.Linear(8, 8)
    for step in range(2):
        loss = model(torch.randn(16, 8)).sum()
        loss.backward()
    """
    found = memory_fit.search(lambda batch: exact_memory(source, **({"batch_size": batch} if batch else {})), 1e9)
    assert found["largest_batch"] is None and "DataLoader" in found["reason"]


MLP_ADAM = """
import torch
import torch.nn as nn

model = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
loss_fn = nn.CrossEntropyLoss()
for step in range(3):
    x, y = torch.randn(256, 512), torch.randint(0, 10, (256,))
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
"""

CNN_SGD = """
import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 8 * 8, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))


model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, foreach=True)
for step in range(3):
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
"""

TRANSFORMER_ADAMW = """
import torch
import torch.nn as nn

layer = nn.TransformerEncoderLayer(d_model=128, nhead=4, dim_feedforward=512, batch_first=True, dropout=0.1)
model = nn.Sequential(nn.Embedding(1000, 128), nn.TransformerEncoder(layer, num_layers=2), nn.Linear(128, 1000))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
for step in range(3):
    tokens = torch.randint(0, 1000, (16, 64))
    optimizer.zero_grad()
    logits = model(tokens)
    loss = nn.functional.cross_entropy(logits.reshape(-1, 1000), tokens.reshape(-1))
    loss.backward()
    optimizer.step()
"""

ZEROED_NOT_NONE = """
import torch
import torch.nn as nn

model = nn.Sequential(nn.Linear(512, 2048), nn.GELU(), nn.Linear(2048, 512))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, foreach=True)
for step in range(3):
    x = torch.randn(128, 512)
    optimizer.zero_grad(set_to_none=False)
    loss = (model(x) - x).pow(2).mean()
    loss.backward()
    optimizer.step()
"""

AUTOCAST_BF16 = """
import torch
import torch.nn as nn

model = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=True)
loss_fn = nn.CrossEntropyLoss()
for step in range(3):
    x, y = torch.randn(256, 512), torch.randint(0, 10, (256,))
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = loss_fn(out, y)
    loss.backward()
    optimizer.step()
"""

BF16_MODEL = """
import torch
import torch.nn as nn

model = nn.Sequential(nn.Linear(512, 1024), nn.GELU(), nn.Linear(1024, 1024), nn.GELU(),
                      nn.Linear(1024, 10)).to(torch.bfloat16)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)
loss_fn = nn.CrossEntropyLoss()
for step in range(3):
    x, y = torch.randn(256, 512, dtype=torch.bfloat16), torch.randint(0, 10, (256,))
    optimizer.zero_grad()
    loss = loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
"""

# (source, the largest error against the real CPU allocator, what the difference is)
REAL_CPU_CASES = {
    "mlp_adam": (MLP_ADAM, 0.01),
    "cnn_sgd_batchnorm": (CNN_SGD, 0.03),  # CPU convolution's internal buffers are not tensors
    "transformer_adamw": (TRANSFORMER_ADAMW, 0.05),
    "zero_grad_set_to_none_false": (ZEROED_NOT_NONE, 0.08),
    "autocast_bf16": (AUTOCAST_BF16, 0.01),
    "bf16_model_adamw": (BF16_MODEL, 0.01),
}


@pytest.mark.slow  # runs the model for real on CPU (a few seconds) to compare
@pytest.mark.parametrize("name", sorted(REAL_CPU_CASES))
def test_meta_estimate_against_a_real_cpu_step(name, tmp_path):
    source, tolerance = REAL_CPU_CASES[name]
    estimate = exact_memory(source)["peak"]
    real = real_cpu_peak(source, tmp_path)
    assert abs(estimate - real) / real <= tolerance, (estimate, real)


def test_breakdown_of_an_adam_step():
    memory = exact_memory(MLP_ADAM)
    params = 4 * (512 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10)
    assert memory["training"] and memory["batch"] == 256
    assert memory["phase"] == "optimizer step"  # foreach Adam's temporaries: one more copy of the weights
    split = memory["breakdown"]
    assert split["weights"] == params and split["grads"] == params
    assert split["optimizer"] == 2 * params  # exp_avg, exp_avg_sq (the step counters stay on the CPU)
    assert memory["optimizers"][0]["type"] == "Adam" and memory["optimizers"][0]["ran"]
    assert memory["errors"] == []
    loop, backward = line_of(MLP_ADAM, "for step in range(3)"), line_of(MLP_ADAM, "loss.backward()")
    assert memory["line"] == {"file": "/virtual/user_code.py", "line": loop, "end_line": loop + 5,
                              "backward_line": backward}
    forward_backward = memory["phases"][0]
    assert forward_backward["breakdown"]["optimizer"] == 2 * params  # alive from the second step on


def test_a_bf16_model_keeps_its_weights_grads_and_state_in_two_bytes():
    memory = exact_memory(BF16_MODEL)
    params = 512 * 1024 + 1024 + 1024 * 1024 + 1024 + 1024 * 10 + 10
    split = memory["breakdown"]
    assert split["weights"] == split["grads"] == 2 * params
    assert split["optimizer"] == 2 * 2 * params  # AdamW's exp_avg, exp_avg_sq: the parameters' dtype


def test_code_lens_and_hover_texts():
    memory = exact_memory(MLP_ADAM)
    title = cost_view.memory_title(memory)
    assert title.startswith("step peak ≈ 30.7 MiB at batch 256 (weights 6.05, grads 6.05, Adam 12.1, activations 0.5")
    hover = cost_view.memory_hover(memory, {"largest_batch": 4096, "capacity_gb": 80})
    assert "largest batch that fits in 80 GB: **4096**" in hover
    assert "optimizer step" in hover


def test_cuda_autocast_on_meta_halves_the_activations():
    fp32 = """
    import torch, torch.nn as nn
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(3):
        x, y = torch.randn(4096, 256), torch.randint(0, 10, (4096,))
        optimizer.zero_grad()
        out = model(x)
        loss = nn.functional.cross_entropy(out, y)
        loss.backward()
        optimizer.step()
    """
    amp = fp32.replace("        out = model(x)\n        loss", "        with torch.autocast('cuda'):\n"
                                                           "            out = model(x)\n        loss")
    report, found = run_observed(amp)
    out = [v for v in report.variables if v.name == "out"][0]
    assert out.values[0].dtype == "float16"  # as on a GPU
    assert found["cuda_like"]["autocast_calls"] == 3
    plain = run_observed(fp32)[1]["memory"]["breakdown"]["activations"]
    assert 0.45 * plain < found["memory"]["breakdown"]["activations"] < 0.6 * plain


def test_forward_only_file():
    memory = exact_memory("""
    import torch, torch.nn as nn
    model = nn.Linear(256, 256)
    with torch.no_grad():
        y = model(torch.randn(32, 256))
    """)
    assert memory["training"] is False and memory["batch"] == 32
    assert memory["breakdown"]["weights"] == 4 * (256 * 256 + 256)
    assert cost_view.memory_title(memory).startswith("forward peak ≈ ")


def test_an_optimizer_that_cannot_step_on_meta_is_estimated_from_its_type():
    memory = exact_memory("""
    import torch, torch.nn as nn

    class Broken(torch.optim.SGD):
        def step(self, closure=None):
            raise RuntimeError("needs a GPU")

    model = nn.Linear(100, 100)
    optimizer = Broken(model.parameters(), lr=0.1, momentum=0.9)
    for step in range(2):
        optimizer.zero_grad()
        model(torch.randn(8, 100)).sum().backward()
        optimizer.step()
    """)
    assert memory["optimizers"][0]["ran"] is False
    assert memory["persistent"]["optimizer"] == 4 * (100 * 100 + 100)  # momentum: one per parameter
    assert any("estimated from the optimizer's type" in note for note in memory["notes"])


def test_user_code_that_confuses_the_accounting_still_runs():
    report, found = run_observed("""
    import torch, torch.nn as nn

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(4, 4)

        def parameters(self, recurse=True):
            raise RuntimeError("no parameters for you")

        def forward(self, x):
            return self.layer(x)

    model = Odd()
    y = model(torch.randn(2, 4))
    y.sum().backward()
    """)
    assert report.errors == [] and report.stopped is None
    assert [v.values[0].shape for v in report.variables if v.name == "y"] == [(2, 4)]
    assert found["memory"]["training"] and found["modules"]["rows"][0]["params"] == 0
