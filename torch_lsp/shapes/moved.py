"""A shape report moved through the edits made since its version (analysis/line_moves.py).

While a newer version's job runs, the editor keeps showing the last report: shapes of lines
that were not edited stay, moved down or up with the lines added or removed above them; what
was on an edited line is dropped until the new report says what it is now. No torch, no LSP.
"""

from __future__ import annotations

import dataclasses

from torch_lsp.analysis.line_moves import LineMap
from torch_lsp.shapes.report import ExpressionShapes, Location, Range, ShapeError, ShapeReport, VariableShapes


def moved_report(report: ShapeReport, moves: LineMap) -> ShapeReport:
    """`report` as it applies to the newer text `moves` leads to."""
    variables = []
    for variable in report.variables:
        lines = moves.lines(variable.line, variable.end_line)
        if lines is not None:
            variables.append(VariableShapes(variable.name, lines[0], lines[1], variable.values))
    expressions = []
    for expression in report.expressions:
        moved = _range(expression.range, moves)
        if moved is not None:
            expressions.append(dataclasses.replace(expression, range=moved))
    errors = []
    for error in report.errors:
        moved = _range(error.range, moves)
        if moved is not None:
            related = [_location(location, report.path, moves) for location in error.related]
            errors.append(dataclasses.replace(error, range=moved, related=[r for r in related if r is not None]))
    notes = [n for n in (_note(note, moves) for note in report.notes) if n is not None]
    stopped_line = moves.line(report.stopped_line) if report.stopped_line is not None else None
    return dataclasses.replace(report, variables=variables, expressions=expressions, errors=errors, notes=notes,
                               stopped_line=stopped_line,
                               timed_out=report.timed_out and (report.stopped_line is None or stopped_line is not None))


def _range(old: Range, moves: LineMap) -> Range | None:
    lines = moves.lines(old.line, old.end_line)
    return Range(lines[0], old.col, lines[1], old.end_col) if lines is not None else None


def _location(location: Location, path: str, moves: LineMap) -> Location | None:
    if location.path != path:
        return location  # another file: its lines did not move with this one's
    moved = _range(location.range, moves)
    return dataclasses.replace(location, range=moved) if moved is not None else None


def _note(note, moves: LineMap):
    if note.line is None:
        return note
    line = moves.line(note.line)
    return dataclasses.replace(note, line=line) if line is not None else None
