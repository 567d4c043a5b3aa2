"""Synthesized calls in background jobs after the driver: which classes go to which job, the
next waves, and how the runs' reports merge (pure: no torch, no worker)."""

from __future__ import annotations

import asyncio

from torch_lsp.shapes import probe_jobs
from torch_lsp.shapes.report import ExpressionShapes, Note, Range, ShapeReport, Value, VariableShapes
from torch_lsp.shapes.spec import JobSpec, Probe
from torch_lsp.analysis.plan import ExecutionPlan

DOC = "/project/model.py"


def probe(name: str, line: int, end: int, size: int | None = None, uses: tuple[str, ...] = ()) -> Probe:
    return Probe(DOC, name, line, {"size": size or end - line + 1, "end": end, "forward": [line + 2, end],
                                   "uses": list(uses)})


def tensor(*shape: int) -> Value:
    return Value("tensor", tuple(shape), "float32")


def report(lines: dict[int, tuple[int, ...]], synthesized: list[str] = (), probed: dict | None = None,
           notes: list[Note] = ()) -> ShapeReport:
    found = ShapeReport(path=DOC, variables=[VariableShapes("x", line, line, [tensor(*shape)]) for line, shape in lines.items()],
                        notes=list(notes))
    if synthesized:
        found.extras["synthesized"] = [{"class": name, "line": 0, "inputs": []} for name in synthesized]
    if probed is not None:
        found.extras["probed"] = probed
    return found


# Unet (lines 40-90) names Block (10-20) and Attention (22-38); Diffusion (92-130) names none.
BLOCK, ATTENTION = probe("Block", 10, 20), probe("Attention", 22, 38)
UNET = probe("Unet", 40, 90, uses=("Block", "Attention"))
DIFFUSION = probe("Diffusion", 92, 130)
ALL = [BLOCK, ATTENTION, UNET, DIFFUSION]


def test_first_wave_keeps_a_class_with_the_classes_it_names_largest_first():
    groups = probe_jobs.first_wave(ALL, jobs=4)
    names = sorted([p.class_name for p in g] for g in groups)
    assert names == [["Diffusion"], ["Unet", "Attention", "Block"]]
    assert probe_jobs.first_wave(ALL, jobs=1) == [[UNET, ATTENTION, BLOCK, DIFFUSION]]


def test_unreached_classes_are_those_whose_forward_has_no_shapes():
    driver = report({45: (2, 8)})  # a line inside Unet.forward
    assert [p.class_name for p in probe_jobs.unreached(ALL, driver)] == ["Block", "Attention", "Diffusion"]
    assert probe_jobs.unreached(ALL, None) == ALL


def test_next_wave_gives_an_interrupted_class_a_job_of_its_own_and_never_retries_failures():
    status = {"Unet": "started", "Block": "late", "Attention": None, "Diffusion": "failed"}
    groups = probe_jobs.next_wave(ALL, status, alone=set(), jobs=4)
    assert [UNET] in groups
    assert sorted(p.class_name for g in groups if g != [UNET] for p in g) == ["Attention", "Block"]
    # A class that ran out of time alone is given up.
    assert probe_jobs.next_wave([UNET], {"Unet": "started"}, alone={"Unet"}, jobs=4) == []


def test_merge_takes_each_class_lines_from_one_run_and_keeps_every_value_elsewhere():
    driver = report({5: (1,)}, notes=[Note("from the driver")])
    # Run 1 probed Unet (its call also reached Block's lines); run 2 probed Block itself.
    run1 = report({12: (2, 64, 8, 8), 50: (2, 3, 32, 32), 5: (4,)}, synthesized=["Unet"], notes=[Note("n1", 40)])
    run2 = report({12: (3, 64, 16, 16), 5: (1,)}, synthesized=["Block"])
    merged = probe_jobs.merge(DOC, {DOC: driver}, [run1, run2], ALL)[DOC]
    shapes = {(v.line, v.values[0].shape) for v in merged.variables}
    assert (12, (3, 64, 16, 16)) in shapes and (12, (2, 64, 8, 8)) not in shapes  # Block's own probe wins
    assert (50, (2, 3, 32, 32)) in shapes
    line5 = next(v for v in merged.variables if v.line == 5)
    assert [value.shape for value in line5.values] == [(1,), (4,)]  # outside classes: every distinct value
    assert [e["class"] for e in merged.extras["synthesized"]] == ["Unet", "Block"]
    assert [n.message for n in merged.notes] == ["from the driver", "n1"]
    assert "probed" not in merged.extras


def test_merge_prefers_the_driver_for_a_class_it_reached():
    driver = report({45: (8, 3, 32, 32)})
    run = report({45: (2, 3, 64, 64)}, synthesized=["Unet"])
    merged = probe_jobs.merge(DOC, {DOC: driver}, [run], ALL)[DOC]
    assert [v.values[0].shape for v in merged.variables if v.line == 45] == [(8, 3, 32, 32)]
    assert "synthesized" not in merged.extras


def test_merge_of_expressions_keys_by_range():
    rng = Range(95, 4, 95, 20)
    driver = ShapeReport(path=DOC)
    run = ShapeReport(path=DOC, expressions=[ExpressionShapes(rng, [tensor(2, 10)], "Linear(4, 10)")])
    run.extras["synthesized"] = [{"class": "Diffusion", "inputs": []}]
    merged = probe_jobs.merge(DOC, {DOC: driver}, [run], ALL)[DOC]
    assert merged.expressions[0].range == rng and merged.expressions[0].module == "Linear(4, 10)"


def test_synthesize_runs_waves_until_every_class_has_shapes_or_is_given_up():
    """A fake engine: the first job of each class runs out of time, the second gives shapes."""
    runs: list[JobSpec] = []
    tried: dict[str, int] = {}

    async def run(spec: JobSpec):
        runs.append(spec)
        found, probed = {}, {}
        for index, p in enumerate(spec.probes):
            tried[p.class_name] = tried.get(p.class_name, 0) + 1
            if tried[p.class_name] == 1:
                probed[p.class_name] = "started" if index == 0 else "late"
            else:
                found[p.hints["forward"][0]] = (2, 4)
                probed[p.class_name] = "synthesized"
        return {DOC: report(found, synthesized=[n for n, s in probed.items() if s == "synthesized"], probed=probed)}

    def spec_for(group, key):
        return JobSpec(key=key, main=ExecutionPlan(DOC, ""), record=[DOC], probes=group, background=True)

    merged = asyncio.run(probe_jobs.synthesize(run, spec_for, "doc", DOC, ALL, {DOC: report({})}, parallel=2, timeout=5))
    # Wave 0: [Unet, Attention, Block] stops in Unet; [Diffusion] alone stops in Diffusion.
    # Wave 1: Unet alone, then Attention and Block (in the jobs left); Diffusion, which already
    # had a job of its own, is given up.
    assert probe_jobs.unreached(ALL, merged[DOC]) == [DIFFUSION]
    assert [n.message for n in merged[DOC].notes] == [
        "Diffusion: no call was synthesized: out of time (execution.timeout is 5 s)"]
    assert all(spec.background and spec.key.startswith("doc#probes-") for spec in runs)
    assert [[p.class_name for p in spec.probes] for spec in runs] == [
        ["Unet", "Attention", "Block"], ["Diffusion"], ["Unet"], ["Attention"], ["Block"]]


def test_synthesize_notes_classes_out_of_time_after_the_last_wave():
    async def run(spec: JobSpec):
        return {DOC: report({}, probed={p.class_name: "started" if i == 0 else "late" for i, p in enumerate(spec.probes)})}

    def spec_for(group, key):
        return JobSpec(key=key, main=ExecutionPlan(DOC, ""), record=[DOC], probes=group, background=True)

    merged = asyncio.run(probe_jobs.synthesize(run, spec_for, "doc", DOC, [UNET, DIFFUSION], {DOC: report({})},
                                               parallel=1, timeout=5))
    messages = [n.message for n in merged[DOC].notes]
    assert "Unet: no call was synthesized: out of time (execution.timeout is 5 s)" in messages
    assert "Diffusion: no call was synthesized: out of time (execution.timeout is 5 s)" in messages


def test_a_cancelled_probe_job_cancels_the_merge():
    async def run(spec: JobSpec):
        return None

    def spec_for(group, key):
        return JobSpec(key=key, main=ExecutionPlan(DOC, ""), probes=group)

    assert asyncio.run(probe_jobs.synthesize(run, spec_for, "doc", DOC, ALL, {DOC: report({})}, 2, 5)) is None
