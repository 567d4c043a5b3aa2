"""Shape jobs without dynamo (`shapes/lazy_dynamo.py`): torch's decompositions and optimizers
run without importing it, and give CPU's shapes; anything more of dynamo imports the real
module. In fresh interpreters: the test process may have imported dynamo already."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.shapes.helpers import cpu_run, shape_of

JOB = textwrap.dedent("""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    norm = nn.LayerNorm(16)
    head = nn.Linear(16, 10)
    x = torch.randn(4, 7, 16, requires_grad=True)
    logits = head(norm(x))
    loss = F.cross_entropy(logits.view(-1, 10), torch.randint(0, 10, (28,)), label_smoothing=0.1)
    loss.backward()
    grad = x.grad
    optimizer = torch.optim.AdamW([*norm.parameters(), *head.parameters()], lr=1e-3)
    optimizer.step()
    top, index = torch.topk(logits, 3)
    picked = torch.multinomial(F.softmax(logits[:, -1], -1), 2)
    rolled = torch.roll(logits, 1, dims=1)
""")

PROBE = textwrap.dedent("""
    import json, sys
    from torch_lsp.analysis.plan import build_plan
    from torch_lsp.shapes.job import run_job
    from torch_lsp.shapes.worker import prepare, warm_up
    from torch_lsp.shapes import lazy_dynamo
    prepare()
    warm_up()
    import torch
    before = lazy_dynamo.imported()
    report = run_job(build_plan(sys.argv[1], "/virtual/job.py"), "meta", 60.0)
    wrapped_later = torch._disable_dynamo(lambda value: value + 1)(1)
    print(json.dumps({
        "dynamo_at_ready": before,
        "dynamo_after": lazy_dynamo.imported(),
        "errors": [error.message for error in report.errors],
        "shapes": {v.name: list(v.values[0].shape) for v in report.variables if v.values and v.values[0].shape is not None},
        "wrapped_later": wrapped_later,
    }))
""")


def test_decompositions_run_on_meta_without_importing_dynamo_and_shapes_are_cpus():
    run = subprocess.run([sys.executable, "-c", PROBE, JOB], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.splitlines()[-1])
    assert out["errors"] == []
    assert out["dynamo_at_ready"] is False and out["dynamo_after"] is False
    assert out["wrapped_later"] == 2  # a function torch wraps after the worker started
    namespace = cpu_run(JOB)
    for name in ("logits", "loss", "grad", "top", "index", "picked", "rolled"):
        assert tuple(out["shapes"][name]) == shape_of(namespace[name]), name


MORE_OF_DYNAMO = textwrap.dedent("""
    import json, sys
    from torch_lsp.shapes import lazy_dynamo
    from torch_lsp.shapes.worker import prepare
    prepare()
    import torch
    import torch._dynamo
    steps = [lazy_dynamo.imported()]
    torch._dynamo.graph_break()
    steps.append(lazy_dynamo.imported())
    if sys.argv[1] == "attribute":
        value = torch._dynamo.config.cache_size_limit > 0
    elif sys.argv[1] == "torchvision":  # imports torch._dynamo.utils for one function
        import torchvision
        steps.append(lazy_dynamo.imported())
        from torch._dynamo.utils import is_compile_supported
        value = isinstance(is_compile_supported("cpu"), bool)
    else:
        from torch._dynamo.eval_frame import is_dynamo_supported
        value = callable(is_dynamo_supported)
    steps.append(lazy_dynamo.imported())
    print(json.dumps({"steps": steps, "value": value, "same": sys.modules["torch._dynamo"] is torch._dynamo,
                      "config": isinstance(sys.modules.get("torch._dynamo.config"), type(sys))}))
""")


@pytest.mark.parametrize("how", ["attribute", "submodule", "torchvision"])
def test_more_of_dynamo_than_the_stand_in_answers_imports_the_real_module(how):
    run = subprocess.run([sys.executable, "-c", MORE_OF_DYNAMO, how], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.splitlines()[-1])
    # graph_break answered by the stand-in (and torchvision's import by the utils' one); then the real one
    assert out["steps"] == ([False, False, False, True] if how == "torchvision" else [False, False, True])
    assert out["value"] is True and out["same"] is True and out["config"] is True
