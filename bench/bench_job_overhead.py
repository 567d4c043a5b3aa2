"""What a shape job adds to torch's own work, in process: resnet50 (or another torchvision model)
built and run on meta, bare and as a shape job (line tracer, recording mode, module hooks,
explain's tracker).

    python bench/bench_job_overhead.py [--runs 15] [--rounds 1] [--model resnet50]

Each round times both, interleaved in one warm interpreter (load drift on a shared machine
hits both alike), and prints the medians and their ratio; `--rounds` repeats that and prints
the median ratio too. The shape job is what the worker's fork does with the message it reads:
decode the spec (its plan built by the server, from the parse it already holds) and run it.
Building the plan is timed beside it, and the ratio with it counted in the job is printed too
(how this bench measured until 2026-12-05). No fork, no worker: `bench_shapes.py` measures the
job as the editor runs it (in a fork of the warm worker). To compare two versions, run this
file of each from its own checkout with `PYTHONPATH=<checkout>`, alternating.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torchvision

from explain_overhead import interleaved_medians_ms  # bench/ is the script's directory
from torch_lsp.analysis.plan import build_plan
from torch_lsp.shapes.job import run_spec
from torch_lsp.shapes.spec import JobSpec
from torch_lsp.shapes.worker import prepare, warm_up

JOB = """
import torch
import torchvision
model = torchvision.models.{model}(weights=None)
out = model(torch.randn(1, 3, 224, 224))
"""


def bare(model: str) -> None:
    with torch.device("meta"):
        getattr(torchvision.models, model)(weights=None)(torch.randn(1, 3, 224, 224))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--model", default="resnet50", help="a torchvision model that takes 224 x 224 images")
    args = parser.parse_args()
    prepare()  # as the worker does before its first job
    warm_up()
    edits = iter(range(10**9))
    filename = str(Path(__file__).with_name("resnet_job.py"))

    def source() -> str:  # a new text each time, as after an edit: nothing cached
        return JOB.format(model=args.model) + f"\n# edit {next(edits)}\n"

    def message() -> str:  # what the server sends the worker
        spec = JobSpec(key=filename, main=build_plan(source(), filename), device="meta", timeout=60.0)
        return json.dumps({"spec": spec.to_dict()})

    messages = [message() for _ in range((args.runs + 1) * args.rounds)]  # each round warms up once

    def job() -> None:
        spec = JobSpec.from_dict(json.loads(messages.pop())["spec"])
        report = run_spec(spec)[filename]
        assert not report.errors and report.stopped is None, report

    def plan() -> None:
        build_plan(source(), filename)

    ratios, with_plan = [], []
    steps = {"bare build + forward": lambda: bare(args.model), "shape job": job, "plan": plan}
    for round_ in range(args.rounds):
        medians = interleaved_medians_ms(steps, args.runs)
        ratio = medians["shape job"] / medians["bare build + forward"]
        ratios.append(ratio)
        with_plan.append((medians["shape job"] + medians["plan"]) / medians["bare build + forward"])
        print(f"round {round_ + 1}: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in medians.items())
              + f", ratio {ratio:.3f} (with the plan built in the job {with_plan[-1]:.3f})", flush=True)
    if args.rounds > 1:
        print(f"median ratio {statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}); "
              f"with the plan built in the job {statistics.median(with_plan):.3f}")


if __name__ == "__main__":
    sys.exit(main())
