"""What a shape job costs the machine, fork included: CPU per job, user and system.

    PYTHONPATH=$PWD python bench/bench_fork_cost.py [--jobs 60] [--rounds 1]

Every shape job runs in a fork of the warm worker (shapes/worker.py): the fork's page tables,
the pages the job writes (copy on write) and the fork's exit are system time that neither the
job's own timing nor a wall-clock figure shows, and while many documents are typed into they
are what the cores wait for. This bench starts a real worker (`ShapeEngine`), lets it warm up
as it would in the editor, then runs seed jobs back to back as typing does (each a new text,
the editor's cost observers on) and reads the CPU time of the worker and of its reaped forks
from /proc: per job, user and system, in the worker and in the forks, and the wall time per
job. Then the same for a resnet50 job without observers. To compare two versions, run this
file of each from its own checkout with `PYTHONPATH=<checkout>`, alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "fixtures" / "cifar10_seed.py"
RESNET_JOB = """
import torch
import torchvision
model = torchvision.models.resnet50(weights=None)
out = model(torch.randn(1, 3, 224, 224))
"""
SETTLE_S = 5.0  # idle time for the worker's warm-up (and its heap's huge pages) before timing
sys.path.insert(0, str(ROOT / "bench"))

from lsp_client import cpu_times  # noqa: E402


async def back_to_back(engine, make_spec, jobs: int) -> dict:
    """`jobs` jobs one after the other, as typing queues them; CPU per job from /proc."""
    await engine.run(make_spec("warm"))  # this kind of job's first run: the worker imports for it
    await asyncio.sleep(SETTLE_S)
    before = cpu_times(engine.pid)
    walls = []
    started = time.perf_counter()
    for run in range(jobs):
        t0 = time.perf_counter()
        await engine.run(make_spec(run))
        walls.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - started
    await asyncio.sleep(1.0)  # the last forks finish tearing down and are reaped
    after = cpu_times(engine.pid)
    worker_user, worker_sys, forks_user, forks_sys = ((b - a) * 1000 / jobs for a, b in zip(before, after))
    return {"wall_per_job_ms": statistics.median(walls), "jobs_per_s": jobs / elapsed,
            "worker_user_ms": worker_user, "worker_sys_ms": worker_sys,
            "forks_user_ms": forks_user, "forks_sys_ms": forks_sys,
            "cpu_per_job_ms": worker_user + worker_sys + forks_user + forks_sys,
            "huge_pages": getattr(engine, "worker_huge_pages", None)}


async def measure(jobs: int) -> dict:
    from torch_lsp.analysis.plan import build_plan
    from torch_lsp.shapes.engine import ShapeEngine
    from torch_lsp.shapes.observers import COST
    from torch_lsp.shapes.spec import JobSpec

    seed = SEED.read_text()
    resnet_file = str(ROOT / "bench" / "resnet_job.py")

    def seed_spec(run) -> JobSpec:
        plan = build_plan(seed + f"\nedit_marker = {run!r}\n", str(SEED))
        return JobSpec(key="seed", main=plan, record=[str(SEED)], cwd=str(SEED.parent), observers=list(COST))

    def resnet_spec(run) -> JobSpec:
        return JobSpec(key="resnet", main=build_plan(RESNET_JOB + f"\n# run {run!r}\n", resnet_file), cwd=str(ROOT))

    engine = ShapeEngine()
    try:
        if not await engine.wait_ready(180):
            raise RuntimeError(f"the shape worker did not start: {engine.startup_error}")
        return {"seed with the cost observers": await back_to_back(engine, seed_spec, jobs),
                "resnet50": await back_to_back(engine, resnet_spec, jobs)}
    finally:
        await engine.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
    for round_ in range(args.rounds):
        for name, figures in asyncio.run(measure(args.jobs)).items():
            huge = figures.pop("huge_pages")
            print(f"round {round_ + 1}, {name}: " + ", ".join(f"{key} {value:.1f}" for key, value in figures.items())
                  + f"; worker heap on huge pages: {huge}", flush=True)


if __name__ == "__main__":
    main()
