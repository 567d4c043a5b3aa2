"""execution.device: meta (default), cpu, cuda, auto. Nothing requires CUDA; with a GPU present
the cuda and auto jobs run there (forked from a worker that never initialised CUDA)."""

import textwrap

import pytest
import pytest_asyncio

from tests.shapes.helpers import cpu_run, shape_of, variable
from torch_lsp.analysis.plan import build_plan
from torch_lsp.shapes.engine import JobSettings, ShapeEngine

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]  # a real worker process

SOURCE = textwrap.dedent("""
    import torch
    import torch.nn as nn
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device)
    batch = torch.randn(5, 3, 16, 16, device=device)
    logits = model(batch)
    top = logits.argmax(dim=1).tolist()
""")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def engine():
    engine = ShapeEngine()
    assert await engine.wait_ready(180)
    yield engine
    await engine.close()


@pytest.mark.parametrize("device", ["meta", "cpu", "cuda", "auto"])
async def test_every_device_setting_gives_the_cpu_shapes(engine, tmp_path, device):
    path = tmp_path / "model.py"
    path.write_text(SOURCE)
    report = await engine.analyse(f"dev-{device}", build_plan(SOURCE, str(path)), JobSettings(device=device))
    assert report.errors == [] and report.stopped is None, report
    expected_device = {"meta": "meta", "cpu": "cpu"}.get(device, "cuda" if _cuda_available() else "meta")
    # `.tolist()` cannot run on meta: that job re-runs on CPU, which is not the user's error.
    assert report.device == ("cpu" if expected_device == "meta" else expected_device)
    assert report.reran_on_cpu == (expected_device == "meta")
    reference = cpu_run(SOURCE)
    assert variable(report, "logits").values[0].shape == shape_of(reference["logits"])


DEFAULT_CUDA = textwrap.dedent("""
    import torch
    import torch.nn as nn
    torch.set_default_device("cuda")  # common in scripts written for a GPU box
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    batch = torch.randn(4, 8)
    logits = model(batch)
""")


@pytest.mark.parametrize("device", ["meta", "cpu"])
async def test_a_script_that_sets_a_default_device_runs_on_the_jobs_device(engine, tmp_path, device):
    import torch

    path = tmp_path / "gpu_script.py"
    path.write_text(DEFAULT_CUDA)
    report = await engine.analyse(f"default-{device}", build_plan(DEFAULT_CUDA, str(path)), JobSettings(device=device))
    assert report.errors == [] and report.stopped is None, report  # no "no NVIDIA driver" on a CPU box
    assert report.device == device
    try:
        reference = cpu_run(DEFAULT_CUDA.replace('"cuda"', '"cpu"'))
    finally:
        torch.set_default_device(None)
    assert variable(report, "logits").values[0].shape == shape_of(reference["logits"])
