"""Shape jobs without sympy (`shapes/lazy_symbolic.py`): torch's guards on plain sizes are
answered by the stand-in as the real module answers them, jobs give the same reports and CPU's
shapes without importing sympy, and anything more of either module imports the real one. Jobs
run in fresh interpreters: the test process may have imported sympy already."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.fx.experimental.symbolic_shapes as real_module

from tests.shapes.helpers import cpu_run, shape_of
from torch_lsp.shapes.lazy_symbolic import _ShapesStandIn

VALUES = [True, False, 0, 1, 7, 2.5, None, "text", (1, 2), [3, 4], (1, (2, True)), {"a": 1},
          torch.empty(2, 3), torch.empty(2, 3, device="meta").t(), torch.nn.Parameter(torch.ones(2))]
ONE_ARGUMENT = ["guard_or_false", "guard_or_true", "guard_bool", "expect_true", "statically_known_true",
                "statically_known_false", "guard_scalar", "guarding_hint_or_throw", "optimization_hint",
                "is_symbolic", "has_guarding_hint", "is_concrete_int", "has_static_value", "is_nested_int",
                "has_free_symbols", "has_free_unbacked_symbols", "free_symbols", "free_unbacked_symbols"]


def _outcome(function, *args):
    try:
        value = function(*args)
    except Exception as error:  # noqa: BLE001 - the error's type is part of the answer
        return ("raises", type(error).__name__)
    return ("returns", type(value).__name__, value if isinstance(value, (bool, int, float, str, type(None))) else list(value) if hasattr(value, "__iter__") and not isinstance(value, torch.Tensor) else id(value))


@pytest.mark.parametrize("name", ONE_ARGUMENT)
def test_each_answer_of_the_stand_in_is_the_real_modules(name):
    for value in VALUES:
        assert _outcome(getattr(_ShapesStandIn, name), value) == _outcome(getattr(real_module, name), value), (name, value)


@pytest.mark.parametrize("args", [(True,), (True, False), (False, True, True), (True, True, True), (1, 3), (0, 2, 4)])
@pytest.mark.parametrize("name", ["sym_and", "sym_or"])
def test_the_combinators_are_the_real_ones(name, args):
    assert _outcome(getattr(_ShapesStandIn, name), *args) == _outcome(getattr(real_module, name), *args)


@pytest.mark.parametrize("pair", [(1, 1), (1, 2), (True, 1), ((1, 2), (1, 2)), ([1, 2], (1, 3)), ((1,), (1, 2)),
                                  ([], []), (((1, 2), 3), ((1, 2), 3)), (1.5, 1.5), ("a", "a"), (None, 1)])
def test_sym_eq_is_the_real_one(pair):
    assert _outcome(_ShapesStandIn.sym_eq, *pair) == _outcome(real_module.sym_eq, *pair)


JOB = textwrap.dedent("""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    x = torch.randn(4, 3, 16, 16)
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
    features = conv(x)
    pooled = F.adaptive_avg_pool2d(features, 1).flatten(1)
    mean = features.mean((2, 3))
    scaled = F.interpolate(features, scale_factor=2, mode="bilinear")
    joined = torch.cat([pooled, mean], dim=1)
    stacked = torch.stack([pooled, mean]).expand(3, 2, 4, 8)
    lstm = nn.LSTM(8, 6, batch_first=True)
    sequence, _ = lstm(features.flatten(2).transpose(1, 2))
    attention = F.scaled_dot_product_attention(sequence, sequence, sequence, is_causal=True)
    picked = torch.gather(joined, 1, torch.zeros(4, 2, dtype=torch.long))
    loss = F.cross_entropy(joined, torch.randint(0, 16, (4,)))
    loss.backward()
    optimizer = torch.optim.SGD(conv.parameters(), lr=0.1, momentum=0.9)
    optimizer.step()
    wrong = torch.cat([pooled, torch.ones(3, 8)], dim=1)
""")

PROBE = textwrap.dedent("""
    import json, sys
    from torch_lsp.analysis.plan import build_plan
    from torch_lsp.shapes.job import run_job
    from torch_lsp.shapes.worker import prepare, warm_up
    from torch_lsp.shapes import lazy_symbolic
    prepare()
    if sys.argv[2] == "real":
        lazy_symbolic.import_real()
    warm_up()
    at_ready = lazy_symbolic.imported()
    report = run_job(build_plan(sys.argv[1], "/virtual/job.py"), "meta", 60.0)
    print(json.dumps({
        "at_ready": at_ready, "after": lazy_symbolic.imported(), "sympy_loaded": "sympy.core" in sys.modules,
        "errors": [[error.code, error.message, error.raw] for error in report.errors],
        "shapes": {v.name: [list(value.shape) for value in v.values if value.shape is not None] for v in report.variables},
    }))
""")


def _probe(job: str, mode: str) -> dict:
    run = subprocess.run([sys.executable, "-c", PROBE, job, mode], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.splitlines()[-1])


def test_a_job_on_plain_sizes_never_imports_sympy_and_reports_what_it_would_with_it():
    lazy, real = _probe(JOB, "stand-in"), _probe(JOB, "real")
    assert lazy["at_ready"] is False and lazy["after"] is False and lazy["sympy_loaded"] is False
    assert real["after"] is True
    assert lazy["errors"] == real["errors"] and len(lazy["errors"]) == 1  # torch.cat's, at the last line
    assert lazy["shapes"] == real["shapes"]
    namespace = cpu_run(JOB.rsplit("wrong =", 1)[0])
    for name in ("features", "pooled", "mean", "scaled", "joined", "stacked", "sequence", "attention", "picked", "loss"):
        assert tuple(lazy["shapes"][name][0]) == shape_of(namespace[name]), name


MORE = textwrap.dedent("""
    import json, sys
    from torch_lsp.shapes import lazy_symbolic
    from torch_lsp.shapes.worker import prepare
    prepare()
    import sympy
    import torch.fx.experimental.symbolic_shapes as shapes
    def checks():  # as torch's type promotion reads it: inside a function
        return [lazy_symbolic.imported(), isinstance(1, sympy.Basic), shapes.guard_or_false(True)]
    steps = checks()
    steps.append(lazy_symbolic.imported())
    how = sys.argv[1]
    if how == "attribute":
        value = sympy.Integer(2) + 1 == 3
    elif how == "star import":
        namespace = {}
        exec("from sympy import *", namespace)
        value = namespace["Integer"](2) + namespace["Rational"](1, 2) == namespace["Rational"](5, 2)
        exec("from torch.fx.experimental.symbolic_shapes import *", namespace)
        value = value and "ShapeEnv" in namespace
    elif how == "submodule":
        from sympy.core.numbers import Integer
        value = Integer(5).is_integer
    elif how == "module-level import":
        namespace = {}
        exec("from sympy import Basic", namespace)
        value = namespace["Basic"] is sys.modules["sympy"].Basic and namespace["Basic"].__module__.startswith("sympy")
    elif how == "class attribute":
        class Kinds:
            kinds = (sympy.Basic,)  # kept: the real class
        value = Kinds.kinds[0] is sys.modules["sympy"].Basic and Kinds.kinds[0].__module__.startswith("sympy")
    elif how == "symbolic size":
        from torch.fx.experimental.symbolic_shapes import ShapeEnv
        env = ShapeEnv()
        size = env.create_unbacked_symint()
        value = shapes.guard_or_false(size == 3) is False and shapes.is_symbolic(size) is True
    steps.append(lazy_symbolic.imported())
    real_basic = sys.modules["sympy"].Basic
    print(json.dumps({"steps": steps, "value": bool(value), "stand_in_basic_is_real": sympy.Basic is real_basic,
                      "instance": isinstance(sys.modules["sympy"].Integer(1), sympy.Basic)}))
""")


@pytest.mark.parametrize("how", ["attribute", "star import", "submodule", "module-level import", "class attribute", "symbolic size"])
def test_more_than_the_stand_ins_answer_imports_the_real_modules(how):
    run = subprocess.run([sys.executable, "-c", MORE, how], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.splitlines()[-1])
    assert out["steps"] == [False, False, True, False, True]  # answered by the stand-ins, then the real modules
    assert out["value"] is True
    # a module that bound the stand-in before sees the real sympy through it afterwards
    assert out["stand_in_basic_is_real"] is True and out["instance"] is True
