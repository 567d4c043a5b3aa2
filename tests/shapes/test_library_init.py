"""Library layers' constructors run without the line tracer (`shapes/library_init.py`), and
everything the user's files run around them is still recorded.

"The library" here is a module outside the job's recorded files, as torchvision is: it notes
whether a trace function was set while its constructor ran."""

import sys
import textwrap

import pytest

from tests.shapes.helpers import assert_same_as_cpu, cpu_run, line_of, variable

FAKELIB = '''
import sys
import torch.nn as nn

class Layer(nn.Module):
    def __init__(self, n, make=None):
        super().__init__()
        self.traced = sys.gettrace() is not None
        self.lin = nn.Linear(n, n)  # raises for n < 0
        self.extra = make(n) if make is not None else self.build(n)

    def build(self, n):
        return nn.Identity()
'''


@pytest.fixture
def fakelib(importable):
    importable("fakelib_layers", FAKELIB)


def test_a_library_layer_is_built_untraced_and_the_lines_after_it_are_recorded(run_meta, fakelib):
    source = '''
    import torch
    import fakelib_layers
    layer = fakelib_layers.Layer(4)
    flag = torch.zeros(2 if layer.traced else 3)
    y = layer.lin(torch.randn(2, 4))
    z = torch.cat([y, y], 1)
    '''
    report = run_meta(source)
    assert report.errors == [] and report.stopped is None
    namespace = cpu_run(source)
    assert variable(report, "flag").values[0].shape == (3,)  # no trace function inside the constructor
    assert_same_as_cpu(report, namespace, "y", "z")
    assert sys.gettrace() is None


def test_user_code_handed_to_a_library_constructor_or_overriding_its_methods_is_traced(run_meta, fakelib):
    source = '''
    import torch
    import torch.nn as nn
    import fakelib_layers

    class Gate(nn.Module):
        def __init__(self, n):
            super().__init__()
            w = torch.zeros(n, 2)
            self.w = nn.Parameter(w)

    class Wider(fakelib_layers.Layer):
        def build(self, n):
            h = torch.ones(n, 3)
            return nn.Linear(3, n)

    gated = fakelib_layers.Layer(4, make=Gate)
    wide = Wider(5)
    '''
    report = run_meta(source)
    assert report.errors == [] and report.stopped is None
    namespace = cpu_run(source)
    assert variable(report, "w", line_of(source, "w = torch.zeros")).values[0].shape == (4, 2)
    assert variable(report, "h", line_of(source, "h = torch.ones")).values[0].shape == (5, 3)
    assert tuple(namespace["gated"].extra.w.shape) == (4, 2)
    assert tuple(namespace["wide"].extra.weight.shape) == (5, 3)


def test_a_partial_of_library_layers_is_built_untraced_and_one_of_a_user_layer_traced(run_meta, fakelib):
    """torchvision's `norm_layer=partial(nn.LayerNorm, eps=1e-6)` (every vision transformer)."""
    source = '''
    import functools
    import torch
    import torch.nn as nn
    import fakelib_layers

    class Gate(nn.Module):
        def __init__(self, n, scale=1.0):
            super().__init__()
            w = torch.zeros(n, 2) * scale
            self.w = nn.Parameter(w)

    library = fakelib_layers.Layer(4, make=functools.partial(nn.LayerNorm, eps=1e-6))
    flag = torch.zeros(2 if library.traced else 3)
    mine = fakelib_layers.Layer(3, make=functools.partial(Gate, scale=2.0))
    other = torch.zeros(2 if mine.traced else 3)
    x = torch.randn(5, 4)
    y = library.extra(library.lin(x))
    '''
    report = run_meta(source)
    assert report.errors == [] and report.stopped is None, report
    namespace = cpu_run(source)
    assert variable(report, "flag").values[0].shape == (3,)  # no trace function inside the constructor
    assert variable(report, "other").values[0].shape == (2,)  # traced: it is handed the user's class
    assert variable(report, "w", line_of(source, "w = torch.zeros")).values[0].shape == (3, 2)  # traced
    assert_same_as_cpu(report, namespace, "x", "y")


@pytest.mark.parametrize("keep", ["", "kept = error"])
def test_a_constructor_that_raises_leaves_no_stale_value_and_tracing_comes_back(run_meta, fakelib, keep):
    """Whether the user drops the exception or keeps it (and with it the constructor's frame),
    tracing and the recording mode come back: when the frame is freed, else at the next module
    call of a user line (the mode, stepped aside for the constructor, sees no torch call), with
    that line's statement."""
    source = f'''
    import torch
    import fakelib_layers
    x = torch.ones(2)
    try:
        x = fakelib_layers.Layer(-1)
    except RuntimeError as error:
        {keep or "pass"}
    y = torch.nn.Identity()(torch.zeros(3, 4))
    w = y.t()
    '''
    report = run_meta(source)
    assert report.errors == [], report.errors
    namespace = cpu_run(source)
    assert [v.line for v in report.variables if v.name == "x"] == [line_of(source, "x = torch.ones")]
    assert_same_as_cpu(report, namespace, "x", "y", "w")
    assert sys.gettrace() is None


def test_torchvision_model_shapes_after_the_untraced_build(run_meta):
    source = '''
    import torch
    import torchvision
    model = torchvision.models.resnet18(weights=None)
    images = torch.randn(2, 3, 64, 64)
    logits = model(images)
    probs = logits.softmax(-1)
    '''
    report = run_meta(source)
    assert report.errors == [] and report.stopped is None
    assert_same_as_cpu(report, cpu_run(source), "images", "logits", "probs")


def test_values_that_may_run_user_code_keep_the_tracer():
    import functools

    import torch

    from torch_lsp.shapes.library_init import LibraryInit

    user_file = "/virtual/user_code.py"
    scope: dict = {}
    exec(compile(textwrap.dedent('''
        import torch
        class Mine(torch.nn.Module):
            def forward(self, x):
                return x
        class Plain(torch.nn.Linear):
            pass
        def act(x):
            return x
        lam = lambda x: x
    '''), user_file, "exec"), scope)
    check = LibraryInit({user_file: None}, forget=print, rejoin=print)._may_hold_user_code
    for library_value in (None, 3, "relu", torch.float32, torch.nn.ReLU, torch.nn.ReLU(), torch.relu,
                          torch.zeros(2), [torch.nn.Linear(2, 2), (1, 2)], {"bias": False}, scope["Plain"],
                          functools.partial(torch.relu), functools.partial(torch.nn.LayerNorm, eps=1e-6)):
        assert not check(library_value), library_value
    for user_value in (scope["Mine"], scope["Mine"](), scope["act"], scope["lam"], functools.partial(scope["act"]),
                       functools.partial(torch.nn.Sequential, scope["Mine"]()), functools.partial(torch.nn.GELU, act=scope["lam"]),
                       [1, [scope["Mine"]()]], {"act": scope["act"]}, scope["Mine"]().forward, list(range(100))):
        assert check(user_value), user_value
