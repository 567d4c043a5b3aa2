"""The recording mode steps off torch's mode stack inside library code that needs none of its
work (`shapes/mode_aside.py`): the same shapes, devices and explanations as with it on."""

import pytest

from tests.shapes.helpers import assert_same_as_cpu, cpu_run, variable

LIBRARY = '''
import torch
import torch.nn as nn


class Joined(nn.Module):
    """A library module calling torch directly: explain needs the call, not only the layer."""
    def forward(self, x, y):
        return torch.cat([x, y], dim=1)


class Scaled(nn.Module):
    """A library layer that reads a value in its forward."""
    def __init__(self, n):
        super().__init__()
        self.lin = nn.Linear(n, n)

    def forward(self, x):
        return self.lin(x) * x.abs().sum().item()
'''


@pytest.fixture
def library(importable):
    importable("aside_lib", LIBRARY)


@pytest.fixture
def count_mode_calls(monkeypatch):
    """How many torch calls reach the recording mode."""
    from torch_lsp.shapes.tracer import RecordingMode

    calls = []
    original = RecordingMode.__torch_function__

    def counted(self, func, types, args=(), kwargs=None):
        calls.append(func)
        return original(self, func, types, args, kwargs)

    monkeypatch.setattr(RecordingMode, "__torch_function__", counted)
    return calls


@pytest.fixture
def never_aside(monkeypatch):
    from torch_lsp.shapes.mode_aside import ModeAside

    monkeypatch.setattr(ModeAside, "step_aside", lambda self, owner, values, frame: False)


TORCHVISION = '''
import torch
import torchvision
model = torchvision.models.resnet18(weights=None)
images = torch.randn(2, 3, 64, 64)
logits = model(images)
probs = logits.softmax(-1)
'''


def test_a_library_model_is_built_and_run_without_the_mode_and_its_shapes_are_cpus(run_meta, count_mode_calls):
    import torch

    depth = torch._C._len_torch_function_stack()
    report = run_meta(TORCHVISION)
    assert report.errors == [] and report.stopped is None
    assert_same_as_cpu(report, cpu_run(TORCHVISION), "images", "logits", "probs")
    # resnet18's build and forward make hundreds of torch calls; the user's lines a handful
    # (and torchvision's imports some).
    assert 0 < len(count_mode_calls) < 40, len(count_mode_calls)
    assert torch._C._len_torch_function_stack() == depth


def test_without_stepping_aside_the_mode_sees_the_library_calls(run_meta, count_mode_calls, never_aside):
    report = run_meta(TORCHVISION)
    assert report.errors == [] and report.stopped is None
    assert len(count_mode_calls) > 300  # what the test above saves: it can tell the two apart


DEVICES = '''
import torch
import torch.nn as nn
layer = nn.Linear(4, 2, device="cuda")
norm = nn.LayerNorm(2, device=torch.device("cuda"))
x = torch.randn(3, 4).cuda()
y = norm(layer(x))
table = torch.ones(5, 4)
z = layer(table)
'''


def test_a_device_handed_to_a_library_layer_keeps_the_mode(run_meta):
    """No GPU here: the layer's parameters are put on the job's device by the mode."""
    report = run_meta(DEVICES)
    assert report.errors == [] and report.stopped is None, report
    assert_same_as_cpu(report, cpu_run(DEVICES.replace('"cuda"', '"cpu"').replace(".cuda()", "")), "x", "y", "z")


WRONG_WIDTH = '''
import torch
import torch.nn as nn
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(9, 2))
out = model(torch.randn(3, 4))
'''

WRONG_CHANNELS = '''
import torch
import torchvision
model = torchvision.models.resnet18(weights=None)
out = model(torch.randn(1, 1, 32, 32))
'''


WRONG_JOIN = '''
import torch
import aside_lib
out = aside_lib.Joined()(torch.randn(2, 3), torch.randn(3, 3))
'''


@pytest.mark.parametrize("source", [WRONG_WIDTH, WRONG_CHANNELS, WRONG_JOIN], ids=["linear", "conv", "cat"])
def test_a_failure_inside_a_library_model_is_explained_as_with_the_mode_on(run_meta, monkeypatch, library, source):
    """Layers are explained from the module calls; `torch.cat` from its arguments, which the
    failing call replayed with the mode back on gives explain's tracker."""
    import torch

    from torch_lsp.shapes.mode_aside import ModeAside

    depth = torch._C._len_torch_function_stack()
    aside = run_meta(source)
    with monkeypatch.context() as patch:
        patch.setattr(ModeAside, "step_aside", lambda self, owner, values, frame: False)
        on = run_meta(source)
    assert aside.errors and on.errors
    assert [(e.message, e.range) for e in aside.errors] == [(e.message, e.range) for e in on.errors]
    with pytest.raises(RuntimeError):  # a real failure, on CPU too
        cpu_run(source)
    assert torch._C._len_torch_function_stack() == depth


def test_a_library_forward_reading_a_value_in_a_training_loop_keeps_the_mode(run_meta, library):
    source = '''
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    import aside_lib
    layer = aside_lib.Scaled(4)
    loader = DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=2)
    for epoch in range(3):
        for (batch,) in loader:
            out = layer(batch)
    '''
    report = run_meta(source)
    assert report.errors == [] and report.stopped is None, report
    assert variable(report, "out").values[0].shape == (2, 4)
    assert_same_as_cpu(report, cpu_run(source), "out")


def test_the_mode_stack_is_restored_when_a_library_constructor_fails_uncaught(run_meta):
    import torch

    depth = torch._C._len_torch_function_stack()
    report = run_meta('''
    import torch
    import torch.nn as nn
    x = torch.ones(2)
    layer = nn.Linear(3, -1)
    ''')
    assert report.errors and "negative dimension" in report.errors[0].message
    assert torch._C._len_torch_function_stack() == depth
    assert torch.ones(1).device.type == "cpu"
