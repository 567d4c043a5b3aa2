"""A DataLoader's batch is made with the job's modes off torch's mode stacks
(`tracer.loading_data(unobserved=True)`): the cost observers count the model's step, not the
dataset's transforms, and a mode of the user's own still sees everything."""

from __future__ import annotations

from tests.shapes.cost_helpers import run_observed, without_cuda_kernels
from tests.shapes.helpers import cpu_run, line_of, shape_of

SOURCE = """
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset


class Features(Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, index):
        raw = torch.randn(8)
        features = raw @ torch.ones(8, 4)
        return features, index % 2


model = nn.Linear(4, 2)
loader = DataLoader(Features(), batch_size=4)
for x, y in loader:
    out = model(x)
    loss = nn.functional.cross_entropy(out, y)
    loss.backward()
"""


def _model_step_flops_on_cpu() -> int:
    """torch's FlopCounterMode around the model's forward and backward, for real on CPU."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model, x = torch.nn.Linear(4, 2), torch.randn(4, 4)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 0, 1])).backward()
    return counter.get_total_flops()


def _flops_by_line(extras) -> dict[int, int]:
    return {row["line"]: row["forward"] + row["backward"] for row in extras["flops"]["lines"]}


def test_the_dataset_s_work_is_not_counted_as_the_model_s():
    report, extras = run_observed(SOURCE, observers=without_cuda_kernels())
    assert report.errors == [] and report.stopped is None, report
    flops = _flops_by_line(extras)
    assert line_of(SOURCE, "features = raw @") not in flops  # the dataset's matmul
    assert flops[line_of(SOURCE, "out = model(x)")] == _model_step_flops_on_cpu()
    assert [v.values[-1].shape for v in report.variables if v.name == "out"] == [shape_of(cpu_run(SOURCE)["out"])]


def test_with_the_modes_left_on_the_dataset_s_matmul_was_counted(monkeypatch):
    """The control: the same job with the modes left on the stacks counts the dataset's matmul."""
    from torch_lsp.shapes import tracer

    monkeypatch.setattr(tracer, "_modes_aside", lambda: ([], []))
    report, extras = run_observed(SOURCE, observers=without_cuda_kernels())
    assert report.errors == [] and report.stopped is None, report
    assert _flops_by_line(extras)[line_of(SOURCE, "features = raw @")] > 0


def test_a_mode_of_the_users_own_still_sees_the_dataset():
    source = SOURCE.replace("for x, y in loader:", """
from torch.overrides import TorchFunctionMode


class Counting(TorchFunctionMode):
    calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        Counting.calls += 1
        return func(*args, **(kwargs or {}))


with Counting():
    batches = list(loader)
seen = torch.zeros(Counting.calls)
for x, y in loader:""")
    report, _ = run_observed(source, observers=without_cuda_kernels())
    assert report.errors == [] and report.stopped is None, report
    [seen] = [v for v in report.variables if v.name == "seen"]
    assert seen.values[-1].shape[0] > 0  # the dataset's randn, ones and matmul went through it
