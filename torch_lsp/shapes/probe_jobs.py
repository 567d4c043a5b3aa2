"""Synthesized calls in jobs of their own, after the driver (server side; no torch).

The document's driver job runs first and alone, so its shapes never wait for synthesis. Then the
classes of the document whose `forward` it gave no shapes are constructed and called by
*background* jobs (shapes/synthesize.py inside; the worker starts them only when no driver job
waits), several at once in the worker's slots, each bounded by `execution.timeout`:

1. **first wave**: the classes in groups, a class with the classes its body names (`Unet` with
   its `ResnetBlock`s: the model's call usually reaches them, and a class already reached is
   not probed again), the groups packed by size into a few jobs;
2. **later waves**: classes a job did not get to in time (or was probing when its time ran
   out) go to jobs with fewer classes each; one that runs out of time alone is given up, with a
   note. At most `MAX_WAVES` waves.

The reports are merged per file: each class's lines come from one run (the driver's when it
reached the class, else the job that probed it), so a line never mixes sizes of two different
synthesized calls; other lines (helpers called from several classes) keep every distinct value.
Probe jobs never add errors, stops or TL299 notes to the document: a synthesized input is a
guess, never the user's mistake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

from torch_lsp.shapes.report import Note, ShapeReport
from torch_lsp.shapes.spec import JobSpec, Probe

MAX_WAVES = 3
JOBS_PER_SLOT = 2  # jobs per wave for each of the worker's slots: short jobs, and all slots busy
MAX_VALUES = 8  # distinct values kept per line when several runs reach it (as the recorder does)
# Statuses the worker reports per probe (shapes/synthesize.py)
LATE, STARTED, FAILED, UNDEFINED = "late", "started", "failed", "undefined"

Reports = dict[str, ShapeReport]
SpecFor = Callable[[list[Probe], str], JobSpec]  # (probes, key) -> the job that runs them


def probe_key(key: str, wave: int, index: int) -> str:
    """The key of a probe job: a newer version's job with the same key replaces a queued one."""
    return f"{key}#probes-{wave}.{index}"


def is_probe_key(job_key: str, key: str) -> bool:
    return job_key.startswith(f"{key}#probes-")


# -- which classes ----------------------------------------------------------------------------


def forward_has_shapes(report: ShapeReport | None, probe: Probe) -> bool:
    """Did `report` record anything inside the probe's forward body?"""
    span = probe.hints.get("forward")
    if report is None or not span:
        return False
    first, last = span
    return any(first <= v.line <= last for v in report.variables) or \
        any(first <= e.range.line <= last for e in report.expressions)


def unreached(probes: list[Probe], report: ShapeReport | None) -> list[Probe]:
    return [p for p in probes if not forward_has_shapes(report, p)]


def first_wave(probes: list[Probe], jobs: int) -> list[list[Probe]]:
    """Each class with the classes its body names (transitively, those not in a group yet),
    largest first; the groups packed into at most `jobs` jobs of similar total size."""
    by_name = {p.class_name: p for p in probes}
    placed: set[str] = set()
    groups: list[list[Probe]] = []
    for probe in _largest_first(probes):
        if probe.class_name in placed:
            continue
        group, todo = [], [probe.class_name]
        while todo:
            name = todo.pop(0)
            if name in placed or name not in by_name:
                continue
            placed.add(name)
            group.append(by_name[name])
            todo += by_name[name].hints.get("uses") or []
        groups.append(_largest_first(group))
    return _pack(groups, jobs)


def _pack(groups: list[list[Probe]], jobs: int) -> list[list[Probe]]:
    """Largest group first into the lightest job: at most `jobs` jobs, none empty."""
    bins: list[list[Probe]] = [[] for _ in range(max(1, min(jobs, len(groups))))]
    for group in sorted(groups, key=lambda g: -_size(g)):
        lightest = min(bins, key=_size)
        lightest.extend(group)
    return [b for b in bins if b]


def next_wave(todo: list[Probe], status: dict[str, str | None], alone: set[str], jobs: int) -> list[list[Probe]]:
    """Jobs for the classes still without shapes that ran out of time: a class whose job
    stopped while probing it gets a job of its own; the others (not reached in time, or in a job
    that said nothing) share the rest. A class that ran out of time in a job of its own, or
    failed, is not tried again."""
    retry = [p for p in todo if status.get(p.class_name) in (LATE, STARTED, None) and p.class_name not in alone]
    single = [[p] for p in retry if status.get(p.class_name) == STARTED]
    shared = [p for p in retry if status.get(p.class_name) != STARTED]
    if not shared:
        return single
    return single + _pack([[p] for p in shared], max(1, jobs - len(single)))


def _largest_first(probes: list[Probe]) -> list[Probe]:
    return sorted(probes, key=lambda p: -int(p.hints.get("size", 0)))


def _size(group: list[Probe]) -> int:
    return sum(int(p.hints.get("size", 0)) for p in group)


# -- running them ---------------------------------------------------------------------------


async def synthesize(run: Callable, spec_for: SpecFor, key: str, document: str, probes: list[Probe],
                     driver: Reports, parallel: int, timeout: float) -> Reports | None:
    """Run the probe jobs for the classes of `document` that the driver's reports leave without
    shapes, wave after wave, and return the merged reports (None: a job was cancelled, a newer
    version of the document replaced it)."""
    todo = unreached(probes, driver.get(document))
    jobs = max(1, parallel * JOBS_PER_SLOT)
    runs: list[ShapeReport] = []
    status: dict[str, str | None] = {}
    groups = first_wave(todo, jobs)
    alone: set[str] = set()  # classes that had a job of their own: never retried
    for wave in range(MAX_WAVES):
        if not groups:
            break
        specs = [spec_for(group, probe_key(key, wave, index)) for index, group in enumerate(groups)]
        results = await asyncio.gather(*(run(spec) for spec in specs))
        if any(result is None for result in results):
            return None
        for group, result in zip(groups, results):
            report = result.get(document) or ShapeReport(path=document)
            runs.append(report)
            probed = (report.extras.get("probed") or {})
            for probe in group:
                status[probe.class_name] = probed.get(probe.class_name) if isinstance(probed, dict) else None
        merged = merge(document, driver, runs, probes)
        todo = unreached(todo, merged[document])
        alone |= {g[0].class_name for g in groups if len(g) == 1}
        groups = next_wave(todo, status, alone, jobs) if wave + 1 < MAX_WAVES else []
    merged = merge(document, driver, runs, probes)
    _out_of_time_notes(merged[document], unreached(probes, merged[document]), status, timeout)
    return merged


def _out_of_time_notes(report: ShapeReport, left: list[Probe], status: dict[str, str | None], timeout: float) -> None:
    for probe in left:
        if status.get(probe.class_name) in (LATE, STARTED) or (probe.class_name in status and status[probe.class_name] is None):
            note = Note(f"{probe.class_name}: no call was synthesized: out of time (execution.timeout is {timeout:g} s)",
                        probe.line)
            if note not in report.notes:
                report.notes.append(note)


# -- merging ----------------------------------------------------------------------------------


def merge(document: str, driver: Reports, runs: list[ShapeReport], probes: list[Probe]) -> Reports:
    """The driver's reports with the probe runs' shapes, notes and synthesized inputs added to
    the document's report (see the module docstring for which run gives which lines)."""
    base = driver.get(document) or ShapeReport(path=document)
    sources = [base] + runs
    owner = _owners(probes)
    chosen = {p.class_name: _source_of(p, base, runs) for p in probes}

    def keep(index: int, line: int) -> bool:
        cls = owner(line)
        if cls is None:
            return True
        return chosen.get(cls, 0) == index if chosen.get(cls) is not None else index == 0

    variables: dict[tuple[str, int], object] = {}
    expressions: dict[object, object] = {}
    for index, source in enumerate(sources):
        for variable in source.variables:
            if keep(index, variable.line):
                _add(variables, (variable.name, variable.line), variable)
        for expression in source.expressions:
            if keep(index, expression.range.line):
                _add(expressions, expression.range, expression)
    merged = replace(base, variables=sorted(variables.values(), key=lambda v: (v.line, v.end_line)),
                     expressions=sorted(expressions.values(), key=lambda e: (e.range.line, e.range.col)),
                     notes=list(base.notes), extras=dict(base.extras))
    entries = [e for e in base.extras.get("synthesized") or [] if isinstance(e, dict)]
    for index, run in enumerate(runs, start=1):
        for note in run.notes:
            if note not in merged.notes:
                merged.notes.append(note)
        entries += [e for e in run.extras.get("synthesized") or []
                    if isinstance(e, dict) and chosen.get(e.get("class")) == index]
    if entries:
        merged.extras["synthesized"] = entries
    _merge_module_rows(merged, runs, set(chosen.values()))
    merged.extras.pop("probed", None)
    return {**driver, document: merged}


def _merge_module_rows(merged: ShapeReport, runs: list[ShapeReport], chosen: set) -> None:
    """The module calls of the probe runs that give classes their lines, after the driver's:
    the summary and the class code lens of a class nothing calls come from them."""
    tree = dict(merged.extras.get("modules") or {})
    rows = list(tree.get("rows") or [])
    added = [row for index, run in enumerate(runs, start=1) if index in chosen
             for row in (run.extras.get("modules") or {}).get("rows") or []]
    if added:
        merged.extras["modules"] = {**tree, "rows": rows + added}


def _source_of(probe: Probe, base: ShapeReport, runs: list[ShapeReport]) -> int | None:
    """Index in [driver, *runs] of the run that gives the class its lines: the driver when it
    reached the class, else the run that probed it, else the first whose call reached it."""
    if forward_has_shapes(base, probe):
        return 0
    for index, run in enumerate(runs, start=1):
        if any(isinstance(e, dict) and e.get("class") == probe.class_name and "inputs" in e
               for e in run.extras.get("synthesized") or []):
            return index
    return next((i for i, run in enumerate(runs, start=1) if forward_has_shapes(run, probe)), None)


def _owners(probes: list[Probe]) -> Callable[[int], str | None]:
    """line -> the innermost probed class whose lines contain it (None outside them)."""
    spans = sorted(((p.line, int(p.hints.get("end", p.line)), p.class_name) for p in probes),
                   key=lambda s: s[0] - s[1])  # smallest span last: it wins below

    def owner(line: int) -> str | None:
        found = None
        for first, last, name in spans:
            if first <= line <= last:
                found = name
        return found

    return owner


def _add(table: dict, key, item) -> None:
    """Keep the first item per key; a later run's distinct values join its values."""
    mine = table.get(key)
    if mine is None:
        table[key] = replace(item, values=list(item.values))
        return
    mine.values.extend(v for v in item.values if v not in mine.values and len(mine.values) < MAX_VALUES)
