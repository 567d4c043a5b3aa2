"""Say why: notes added to a document's report after its job (server side; no torch).

- Every `forward` of the document that got no shapes gets one information note on its `class`
  line: the reason in one sentence, and what to do (state an input with the pragma; the code
  action on the class writes it). No silent nothing. While a run's synthesized calls are still
  to come, the last run's reasons stay shown (`keep_reasons`).
- When another file drove the document (train.py for model.py), what that file's run stood in
  for (a dataset replaced by FakeData, options filled in) is said in the document too: its
  shapes rest on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from torch_lsp.analysis.drivers import RunSpec
from torch_lsp.shapes.report import Note, ShapeReport

# Notes of the driver that the driven document should repeat (its shapes depend on them).
_INHERITED_KINDS = ("stand-in", "argv", "distributed", "data")
WHY_KIND = "why"


@dataclass(frozen=True)
class Forward:
    cls: str  # class name
    class_line: int  # 0-based
    line: int  # `def forward` line, 0-based
    end_line: int
    parameter: str | None  # forward's first parameter after self, for the pragma example


def explain(document: str, reports: dict[str, ShapeReport], run: RunSpec | None, forwards: list[Forward],
            synthesize: bool = True, reasons: bool = True) -> None:
    """Add the notes to `reports[document]` (in place; idempotent). `synthesize`: whether
    synthesized calls were on (`execution.synthesize`); when one was tried and failed, its reason
    is folded in. `reasons` False: only the driver's stand-ins (the synthesized calls, which may
    still give the forwards shapes, have not run yet)."""
    report = reports.get(document)
    if report is None:
        return
    if run is not None and not run.runs_itself:
        _inherit_driver_notes(report, reports.get(run.driver), run)
    # Said afresh each time: the report may be a cached one that was shown before, with the reasons
    # of then (and the last run's, shown while this one's synthesized calls ran, are replaced).
    report.notes[:] = [n for n in report.notes if n.kind != WHY_KIND]
    for forward in forwards if reasons else ():
        if has_shapes(report, forward) or _has_error(report, forward):
            continue
        reason = _reason(report, reports, run, forward) + _synthesis(report, forward, synthesize)
        fix = (f"state its input with `# torch-lsp: input {forward.parameter or 'x'}=[...]` on its `def forward` "
               f"line (code action on the class: *State the input of {forward.cls}*)")
        note = Note(f"{forward.cls}.forward has no shapes: {reason}. To see them, {fix}.", forward.class_line, WHY_KIND)
        if note not in report.notes:
            report.notes.append(note)


def reasons_by_class(report: ShapeReport | None, forwards: list[Forward]) -> dict[str, str]:
    """The report's why-notes by class name, to be shown again by `keep_reasons`."""
    classes = {forward.class_line: forward.cls for forward in forwards}
    return {classes[n.line]: n.message for n in (report.notes if report is not None else ())
            if n.kind == WHY_KIND and n.line in classes}


def keep_reasons(report: ShapeReport | None, forwards: list[Forward], last: dict[str, str]) -> None:
    """While a run's synthesized calls are pending (its reasons are not known yet): the last
    run's reason for each forward that still has no shapes, so that the hover does not lose it
    for the time of every run. `explain` with reasons replaces them."""
    for forward in forwards if report is not None else ():
        message = last.get(forward.cls)
        if message and not has_shapes(report, forward) and not _has_error(report, forward):
            note = Note(message, forward.class_line, WHY_KIND)
            if note not in report.notes:
                report.notes.append(note)


def has_shapes(report: ShapeReport, forward: Forward) -> bool:
    # The body, as the corpus measurement counts it: parameters on the `def` line do not count.
    lines = range(forward.line + 1 if forward.end_line > forward.line else forward.line, forward.end_line + 1)
    return any(v.line in lines for v in report.variables) or any(e.range.line in lines for e in report.expressions)


def _has_error(report: ShapeReport, forward: Forward) -> bool:
    return any(forward.line <= e.range.line <= forward.end_line for e in report.errors)


def _reason(report: ShapeReport, reports: dict[str, ShapeReport], run: RunSpec | None, forward: Forward) -> str:
    qualified = [q for q in ((run.reached + run.unreached) if run else ()) if q.rpartition(".")[2] == forward.cls]
    reached = run is not None and any(q in run.reached for q in qualified)
    if run is None or not reached:
        return f"nothing in the workspace constructs and calls {forward.cls}"
    driver = "the file" if run.runs_itself else f"{os.path.basename(run.driver)}, which calls it,"
    # The driver's own stop first: the document may have run again on its own after it.
    driver_report = None if run.runs_itself else reports.get(run.driver)
    stopped = (driver_report.stopped if driver_report is not None else None) or report.stopped
    if stopped:
        return f"{driver} stopped before it ran ({_short(stopped)})"
    return f"{driver} ran to the end without calling it"


def _synthesis(report: ShapeReport, forward: Forward, synthesize: bool) -> str:
    """How the synthesized call went: off, or why it did not work (the probe's own note, which
    this sentence then replaces)."""
    if not synthesize:
        return " (synthesized calls are off: `execution.synthesize`)"
    probe = next((n for n in report.notes if n.line == forward.class_line and n.kind != WHY_KIND
                  and n.message.startswith(f"{forward.cls}")), None)
    if probe is None:
        return ", and no input could be synthesized"
    report.notes.remove(probe)
    return f", and the synthesized call did not work ({_short(probe.message.removeprefix(forward.cls + ': '))})"


def _short(text: str, limit: int = 140) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _inherit_driver_notes(report: ShapeReport, driver: ShapeReport | None, run: RunSpec) -> None:
    if driver is None:
        return
    name = os.path.basename(run.driver)
    for note in driver.notes:
        if note.kind not in _INHERITED_KINDS:
            continue
        where = f"{name}:{note.line + 1}" if note.line is not None else name
        inherited = Note(f"{where}: {note.message}", None, note.kind)
        if inherited not in report.notes:
            report.notes.append(inherited)


def forwards_of(index, path: str) -> list[Forward]:
    """The forwards defined in `path` (an index's module classes that define their own)."""
    found = []
    for ref in index.classes_in(path):
        facts = index.class_facts(ref)
        if facts is None or facts.forward_line is None:
            continue
        parameter = facts.forward_params[0] if facts.forward_params else None
        found.append(Forward(ref.name, facts.line, facts.forward_line, facts.forward_end, parameter))
    return found
