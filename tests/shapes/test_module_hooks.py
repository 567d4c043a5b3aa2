"""The job's module hooks step off torch's global hook tables while a library model runs
(`shapes/module_hooks.py`): its layers take torch's fast path, and shapes, explanations and the
tables afterwards are as with the hooks on."""

import pytest

from tests.shapes.helpers import assert_same_as_cpu, cpu_run

LIBRARY = '''
import torch
import torch.nn as nn


class Spinning(nn.Module):
    """A library layer whose forward never returns: the job's time limit ends it."""
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        while True:
            x = self.lin(x)
'''

TORCHVISION = '''
import torch
import torchvision
model = torchvision.models.resnet18(weights=None)
images = torch.randn(2, 3, 64, 64)
logits = model(images)
again = model(images[:1])
probs = logits.softmax(-1)
'''

WRONG_WIDTH = '''
import torch
import torch.nn as nn
model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 8), nn.Linear(9, 2)))
out = model(torch.randn(3, 4))
'''

WRONG_CHANNELS = '''
import torch
import torchvision
model = torchvision.models.resnet18(weights=None)
out = model(torch.randn(1, 1, 32, 32))
'''


def _global_hooks():
    from torch.nn.modules import module

    return list(module._global_forward_pre_hooks), list(module._global_forward_hooks)


@pytest.fixture
def hook_calls(monkeypatch):
    """The module calls the job's global pre-hook sees."""
    from torch_lsp.shapes.module_hooks import JobModuleHooks

    calls = []
    original = JobModuleHooks._before

    def counted(self, module, inputs):
        calls.append(type(module).__name__)
        return original(self, module, inputs)

    monkeypatch.setattr(JobModuleHooks, "_before", counted)
    return calls


@pytest.fixture
def never_lifted(monkeypatch):
    from torch_lsp.shapes.module_hooks import JobModuleHooks

    monkeypatch.setattr(JobModuleHooks, "_lift", lambda self, module: None)


def test_a_library_models_layers_run_without_the_jobs_hooks_and_the_tables_are_restored(run_meta, hook_calls):
    before = _global_hooks()
    report = run_meta(TORCHVISION)
    assert report.errors == [] and report.stopped is None, report
    assert_same_as_cpu(report, cpu_run(TORCHVISION), "images", "logits", "again", "probs")
    assert hook_calls == ["ResNet", "ResNet"]  # each call of the model, none of its ~60 layers
    assert _global_hooks() == before


def test_with_the_hooks_left_on_they_see_every_layer(run_meta, hook_calls, never_lifted):
    report = run_meta(TORCHVISION)
    assert report.errors == [] and report.stopped is None, report
    assert len(hook_calls) > 100  # what the test above saves: it can tell the two apart


@pytest.mark.parametrize("source", [WRONG_WIDTH, WRONG_CHANNELS], ids=["linear", "conv"])
def test_a_failure_inside_a_library_model_is_explained_as_with_the_hooks_on(run_meta, monkeypatch, source):
    """The failing layer comes from the exception's traceback instead of the hooks."""
    from torch_lsp.shapes.module_hooks import JobModuleHooks

    before = _global_hooks()
    lifted = run_meta(source)
    with monkeypatch.context() as patch:
        patch.setattr(JobModuleHooks, "_lift", lambda self, module: None)
        on = run_meta(source)
    assert lifted.errors and on.errors
    assert [(e.code, e.message, e.range) for e in lifted.errors] == [(e.code, e.message, e.range) for e in on.errors]
    assert lifted.errors[0].code != "TL200", lifted.errors[0]  # explained from the layer, not torch's text
    with pytest.raises(RuntimeError):  # a real failure, on CPU too
        cpu_run(source)
    assert _global_hooks() == before


def test_a_library_model_stopped_by_the_time_limit_leaves_no_hook_behind(run_meta, importable):
    importable("spinning_lib", LIBRARY)
    before = _global_hooks()
    report = run_meta('''
    import torch
    import spinning_lib
    layer = spinning_lib.Spinning()
    out = layer(torch.randn(2, 4))
    ''', timeout=1.0)
    assert report.stopped and "stopped after 1 s" in report.stopped, report
    assert _global_hooks() == before
    after = run_meta(TORCHVISION)  # the next job hooks and lifts as usual
    assert after.errors == [] and after.stopped is None, after


def test_the_layers_a_failure_left_are_read_from_its_traceback_outermost_first():
    import torch
    import torch.nn as nn

    from torch_lsp.shapes.explain.tracking import calls_raised_through

    inner = nn.Linear(9, 2)
    block = nn.Sequential(nn.Linear(8, 8), inner)
    model = nn.Sequential(nn.Linear(4, 8), block)
    x = torch.randn(3, 4)
    with pytest.raises(RuntimeError) as failure:
        model(x)
    calls = calls_raised_through(failure.value, model)
    assert [call.module for call in calls] == [block, inner]
    assert calls[-1].input_shapes == ([3, 8],)
    assert [call.module for call in calls_raised_through(failure.value, None)] == [model, block, inner]
