"""A job's fork imports nothing torch-lsp or torch could have imported once in the worker.

Every module a fork imports is imported again by the next job's fork (~1 ms to ~10 ms each;
torchvision's dataset wrapper was 32 modules): the worker imports what jobs need before it
forks them (worker._imports_for) and warms up with the observers jobs ask for (worker.warm_up).
A fresh interpreter goes through the worker's start-up steps, then forks each job as the worker
does (isolated: worker._isolate) and lists the modules the job imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.shapes.helpers import cpu_run, shape_of

ROOT = Path(__file__).resolve().parents[2]

WORKER_START_UP_THEN_FORKED_JOBS = """
import importlib, json, os, sys
from torch_lsp.analysis.plan import build_plan
from torch_lsp.shapes import sandbox, worker
from torch_lsp.shapes.job import run_spec
from torch_lsp.shapes.spec import JobSpec

observers, warm_up_observers, files, prepared = json.loads(sys.argv[1])
worker.prepare()
worker.warm_up(warm_up_observers)
results = {}
for path in files:
    spec = JobSpec(key=path, main=build_plan(open(path).read(), path), cwd=os.path.dirname(path),
                   observers=observers, timeout=60.0)
    for name in worker._imports_for(spec):
        importlib.import_module(name)
    if prepared:
        worker.prepare_for_forks()
    read_fd, write_fd = os.pipe()
    if os.fork() == 0:
        before = set(sys.modules)
        from torch_lsp.shapes import datasets
        made, stand_in = [], datasets._stand_in
        datasets._stand_in = lambda *args: made.append(args[0]) or stand_in(*args)
        worker._isolate(spec, sandbox.job_directory())
        worker._enter_project(spec)
        report = run_spec(spec)[path]
        shapes = {v.name: list(v.values[-1].shape) for v in report.variables if v.values and v.values[-1].shape}
        result = {"imported": [name for name in sys.modules if name not in before], "errors": len(report.errors),
                  "stopped": report.stopped, "shapes": shapes, "stand-ins made": len(made)}
        os.write(write_fd, json.dumps(result).encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        results[path] = json.loads(pipe.read())
    os.wait()
print(json.dumps(results))
"""


def forked_jobs(files: list[Path], observers: list[str], warm_up_observers: list[str], prepared: bool = True) -> dict:
    argument = json.dumps([observers, warm_up_observers, [str(f) for f in files], prepared])
    run = subprocess.run([sys.executable, "-c", WORKER_START_UP_THEN_FORKED_JOBS, argument], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return {Path(path).name: result for path, result in json.loads(run.stdout.splitlines()[-1]).items()}


SEED = ROOT / "fixtures" / "cifar10_seed.py"  # torchvision, FakeData, a training loop
BROKEN = ROOT / "fixtures" / "shapes" / "lenet_broken.py"  # a shape error, explained
PLAIN = """
import torch
import torch.nn as nn
model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
out = model(torch.randn(4, 8))
"""


def test_jobs_forked_after_the_worker_warmed_up_with_their_observers_import_nothing(tmp_path):
    from torch_lsp.shapes.observers import COST

    plain = tmp_path / "plain.py"
    plain.write_text(PLAIN)
    results = forked_jobs([SEED, BROKEN, plain], list(COST), list(COST))
    for name, result in results.items():
        assert result["imported"] == [], name
        assert result["stand-ins made"] == 0, name  # the worker made torchvision's dataset stand-ins
    assert results["cifar10_seed.py"]["stopped"] is None and results["cifar10_seed.py"]["errors"] == 0
    assert results["lenet_broken.py"]["errors"] == 1
    assert results["plain.py"]["shapes"]["out"] == list(shape_of(cpu_run(PLAIN)["out"]))


def test_without_the_observers_in_the_warm_up_every_fork_imports_what_they_report_with(tmp_path):
    """The control: the same job after a warm-up without observers imports the memory
    observer's report (as every job did before the warm-up ran them)."""
    from torch_lsp.shapes.observers import COST

    plain = tmp_path / "plain.py"
    plain.write_text(PLAIN)
    result = forked_jobs([plain], list(COST), [])["plain.py"]
    assert "torch_lsp.shapes.memory_report" in result["imported"]
    assert result["shapes"]["out"] == list(shape_of(cpu_run(PLAIN)["out"]))


def test_without_the_worker_preparing_them_every_fork_makes_the_dataset_stand_ins():
    """The control: torchvision imported but the stand-ins not made before the fork."""
    from torch_lsp.shapes.observers import COST

    result = forked_jobs([SEED], list(COST), list(COST), prepared=False)["cifar10_seed.py"]
    assert result["stand-ins made"] > 10
    assert result["stopped"] is None and result["errors"] == 0
