"""Run a file in this process as a job with the cost observers (module-call tree, FLOPs,
training-step memory, CUDA-like autocast and attention), as the worker does in a fork."""

from __future__ import annotations

import contextlib
import sys
import textwrap

from torch_lsp.shapes.observers import COST


def run_observed(source: str, filename: str = "/virtual/user_code.py", device: str = "meta",
                 observers: list[str] | None = None, timeout: float = 60.0, **options):
    """(report, extras) of the file run through plan + job with the observers named
    (default: all the cost observers). `options` go to the job (e.g. `batch_size=64`)."""
    from torch_lsp.analysis.plan import build_plan
    from torch_lsp.shapes.job import run_spec
    from torch_lsp.shapes.spec import JobSpec

    plan = build_plan(textwrap.dedent(source), filename)
    assert plan.error is None, plan.error
    spec = JobSpec(key=filename, main=plan, observers=list(COST if observers is None else observers),
                   options=options, device=device, timeout=timeout)
    with job_inputs():
        report = run_spec(spec)[filename]
    return report, report.extras


def without_cuda_kernels() -> list[str]:
    """The cost observers without the CUDA-like run (attention as the CPU computes it)."""
    return [name for name in COST if name != "cuda_like"]


@contextlib.contextmanager
def job_inputs():
    """What the worker's fork installs before a job (the DataLoader / dataset / weights
    stand-ins), for one job only: the fork dies with its patches, this process does not, and a
    later test that runs code for real on CPU here (`cpu_run`) needs the real DataLoader."""
    import torch
    import torchvision.datasets
    import torchvision.models._api
    from torch.utils.data import DataLoader

    from torch_lsp.shapes import inputs
    from torch_lsp.shapes.worker import warm_up

    _warm_up_once(warm_up)
    # Whatever inputs.install() replaces in these (which names is its business) is put back;
    # dataset classes are also replaced in the torchvision.datasets submodule that defines them.
    datasets = [module for name, module in list(sys.modules.items())
                if name.startswith("torchvision.datasets") and module is not None]
    owners = [DataLoader, torch.nn.Module, torch.hub, torchvision.models._api,
              torchvision.models._api.WeightsEnum, *datasets]
    saved = [(owner, dict(vars(owner))) for owner in owners]
    finders = list(sys.meta_path)
    inputs.install()
    try:
        yield
    finally:
        sys.meta_path[:] = finders
        inputs.set_batch_size(None)
        for owner, before in saved:
            for name, value in before.items():
                if vars(owner).get(name) is not value:
                    setattr(owner, name, value)


_warmed = False


def _warm_up_once(warm_up) -> None:
    global _warmed
    if not _warmed:
        warm_up()
        _warmed = True
