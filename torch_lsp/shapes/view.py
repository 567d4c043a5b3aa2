"""What a ShapeReport looks like to a person: hover text, inlay labels, findings, annotated source.

No torch, no LSP types: the server (hover.py, inlay.py, shapes.py) and the CLI share this.
Positions are 0-based lines and code-point columns, as everywhere in analysis.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch_lsp.analysis.facts import Finding, Position, Severity, Span
from torch_lsp.shapes import synthesized_view
from torch_lsp.shapes.cost_view import line_flops, line_flops_text

if TYPE_CHECKING:
    from torch_lsp.analysis.notebook import NotebookFile
    from torch_lsp.shapes.report import ExpressionShapes, ShapeReport, Value, VariableShapes

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_SCOPE_START = re.compile(r"^(\s*)(async\s+def|def|class)\s")


@dataclass(frozen=True)
class InlayLabel:
    position: Position
    label: str
    tooltip: str


def values_text(values: list[Value]) -> str:
    return " | ".join(v.text() for v in values)


def short_text(values: list[Value]) -> str:
    """`Tensor[8, 6, 14, 14]` for float32 (the common case), full text otherwise."""
    return " | ".join(v.text().removesuffix(" float32") for v in values)


def word_at(line_text: str, col: int) -> tuple[str, int, int] | None:
    """The dotted name under the cursor, cut after the part the cursor is on:
    `self.conv1` when on `conv1` of `self.conv1.weight`."""
    for match in _DOTTED.finditer(line_text):
        if match.start() <= col <= match.end():
            cut = line_text.find(".", col, match.end())
            end = match.end() if cut < 0 else cut
            return line_text[match.start():end], match.start(), end
    return None


def _scope_start(lines: list[str], line: int) -> int:
    """First line of the function/class containing `line`, by indentation (module: 0)."""
    text = lines[line] if line < len(lines) else ""
    indent = len(text) - len(text.lstrip())
    for index in range(line, -1, -1):
        match = _SCOPE_START.match(lines[index])
        if match and len(match.group(1)) < indent:
            return index
    return 0


def variable_at(report: ShapeReport, lines: list[str], pos: Position, name: str) -> VariableShapes | None:
    """The binding of `name` that the cursor sees: this statement's target, or the nearest
    earlier binding in the same function (parameters included)."""
    here = [v for v in report.variables_at(pos.line) if v.name == name]
    line_text = lines[pos.line] if pos.line < len(lines) else ""
    assign = re.search(r"(?<![=!<>])=(?!=)", line_text)
    in_target = assign is not None and pos.col < assign.start() and not line_text.lstrip().startswith(("for ", "with "))
    if here and (in_target or not assign):
        return here[0]
    start = _scope_start(lines, pos.line)
    earlier = [v for v in report.variables if v.name == name and start <= v.line < pos.line]
    return max(earlier, key=lambda v: v.line, default=None)


def hover_text(report: ShapeReport, lines: list[str], pos: Position) -> str | None:
    """Markdown for a hover at `pos`, or None when the report knows nothing there."""
    line_text = lines[pos.line] if 0 <= pos.line < len(lines) else ""
    word = word_at(line_text, pos.col)
    parts: list[str] = []
    if word is not None:
        variable = variable_at(report, lines, pos, word[0])
        if variable is not None and not _is_call_at(line_text, word[2]):
            parts.append(f"`{variable.name}`: `{values_text(variable.values)}`")
    if not parts:
        expression = report.expression_at(pos.line, pos.col)
        if expression is not None:
            parts.append(_expression_text(expression, lines))
    for error in report.errors:
        if error.range.contains(pos.line, pos.col):
            parts.append(f"**{error.code}**: {error.message}")
    synthesized = synthesized_view.hover(report, pos.line)
    if synthesized is not None:
        parts.append(synthesized)
    shows_shape = bool(parts)
    if parts:
        parts += _provenance(report)
    parts.extend(_hover_notes(report, pos.line, shows_shape=shows_shape))
    return "\n\n".join(parts) if parts else None


def origin_text(report: ShapeReport) -> str | None:
    """`from train.py:42` when another file's run gave this file its shapes."""
    origin = report.origin
    if origin.kind != "driver" or not origin.path:
        return None
    where = os.path.relpath(origin.path, os.path.dirname(report.path)) if report.path else os.path.basename(origin.path)
    return f"from {where}:{origin.line + 1}" if origin.line is not None else f"from {where}"


def _provenance(report: ShapeReport) -> list[str]:
    """Where the shapes came from, and what they rest on (file-level notes: stand-ins...)."""
    origin = origin_text(report)
    lines = [f"*{origin}*"] if origin else []
    return lines + [f"*{note.message}*" for note in report.notes if note.line is None]


def _is_call_at(line_text: str, end: int) -> bool:
    return line_text[end:].lstrip().startswith("(")


def _expression_text(expression: ExpressionShapes, lines: list[str]) -> str:
    text = f"`{values_text(expression.values)}`"
    if expression.module:
        callee = _callee_text(expression, lines)
        text += f"\n\n`{callee}: {expression.module}`" if callee else f"\n\n`{expression.module}`"
    return text


def _callee_text(expression: ExpressionShapes, lines: list[str]) -> str | None:
    rng = expression.range
    if rng.line >= len(lines):
        return None
    source = lines[rng.line][rng.col:] if rng.line != rng.end_line else lines[rng.line][rng.col:rng.end_col]
    callee = source.split("(", 1)[0].strip()
    return callee.removeprefix("self.") or None


def inlay_labels(report: ShapeReport, lines: list[str], first: int = 0, last: int | None = None) -> list[InlayLabel]:
    """One label at the end of each statement that bound tensors, within lines first..last."""
    last = len(lines) - 1 if last is None else last
    by_statement: dict[tuple[int, int], list[VariableShapes]] = {}
    for variable in report.variables:
        if first <= variable.end_line <= last and variable.end_line < len(lines):
            by_statement.setdefault((variable.line, variable.end_line), []).append(variable)
    labels = []
    for (line, end_line), variables in sorted(by_statement.items()):
        text = lines[end_line]
        code_end = len(_without_comment(text).rstrip())
        if len(variables) == 1:
            label = short_text(variables[0].values)
        else:
            label = ", ".join(f"{v.name}: {short_text(v.values)}" for v in variables)
        tooltip = "\n".join(f"{v.name}: {values_text(v.values)}" for v in variables)
        labels.append(InlayLabel(Position(end_line, code_end), label, tooltip))
    return labels


def _without_comment(text: str) -> str:
    # Good enough for placing a hint: a '#' inside a string only moves the hint left.
    quote = None
    for index, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return text[:index]
    return text


STOPPED_CODE = "TL299"


def findings(report: ShapeReport, lines: list[str] | None = None, selection=None) -> list[Finding]:
    """Shape errors (TL2xx), and an information note (TL299) where the run stopped before the
    end of the file (timeout, sys.exit, a blocked download, an error outside torch...): the user
    should know why shapes end there. Selected, re-ranked and suppressed
    (`# torch-lsp: ignore[TL201]`) like static findings."""
    found = _raw_findings(report, lines)
    if selection is None:
        return found
    from torch_lsp.analysis.rules import load_rules
    from torch_lsp.analysis.rules.selection import is_suppressed

    return [f for f in selection.apply(found, load_rules()) if lines is None or not is_suppressed(f, lines)]


def _raw_findings(report: ShapeReport, lines: list[str] | None) -> list[Finding]:
    found = [Finding(code=e.code, message=e.message, span=e.range.span(), severity=Severity.ERROR,
                     related=tuple((r.range.span(), r.message) for r in e.related if r.path == report.path),
                     related_elsewhere=tuple((r.path, r.range.span(), r.message) for r in e.related
                                             if r.path != report.path))
             for e in report.errors]
    if report.stopped:
        # A stop without a line (the worker did not start or crashed) goes on the first line.
        line = report.stopped_line if report.stopped_line is not None else 0
        found.append(Finding(code=STOPPED_CODE, message=report.stopped, span=_line_span(lines, line),
                             severity=Severity.INFO))
    return found


def _line_span(lines: list[str] | None, line: int) -> Span:
    """The line's code, from its first non-blank character to its end."""
    text = lines[line] if lines is not None and 0 <= line < len(lines) else ""
    start = len(text) - len(text.lstrip())
    return Span(Position(line, start), Position(line, max(len(text), start)))


STAND_IN = "stand-in"  # Note.kind of a dataset, download or weights replaced for analysis


def notes(report: ShapeReport) -> list:
    """The report's notes (`Note`: message, 0-based line or None for the whole file, kind): a
    dataset replaced by a stand-in, an argv filled in, why a class has no shapes."""
    return list(getattr(report, "notes", None) or ())


def _hover_notes(report: ShapeReport, line: int, shows_shape: bool) -> list[str]:
    """Notes of the hovered line; with a shape, also the stand-ins it may come from: a user
    reading `Tensor[128, 3, 32, 32]` for `CIFAR10(download=True)` must know nothing was
    downloaded."""
    here = [n.message for n in notes(report) if n.line == line]
    if shows_shape:
        # (notes about the whole file are in the provenance lines already: _provenance)
        here += [n.message for n in notes(report) if n.line not in (None, line) and n.kind == STAND_IN]
    return [f"_Note: {message}_" for message in here]


def annotate(source: str, report: ShapeReport) -> str:
    """The source with `# x: Tensor[...]` after tensor assignments, the FLOPs of each line that
    computes, errors and notes under their line, and notes about the whole file and why the run
    stopped at the end."""
    lines = source.splitlines()
    annotations = _Annotations(report, lines)
    out = [annotated for index, text in enumerate(lines) for annotated in annotations.lines_for(index, text)]
    out += trailer_lines(report, annotations)
    if report.stopped:
        out.append(f"# torch-lsp: {report.stopped}")
    return "\n".join(out) + "\n"


def annotate_notebook(notebook: NotebookFile, report: ShapeReport) -> str:
    """`annotate` for a notebook: each code cell under a `# %% cell N` header (N counts every
    cell, from 1, as Jupyter shows them), its own lines annotated from the program's report."""
    program = notebook.program
    annotations = _Annotations(report, program.source.splitlines())
    out = []
    for cell, position in enumerate(notebook.positions):
        out.append(f"# %% cell {position + 1}")
        for line, text in enumerate(program.cell_lines(cell)):
            out += annotations.lines_for(program.to_program(cell, Position(line, 0)).line, text)
        out.append("")
    out += trailer_lines(report, annotations, notebook.place_label)
    if report.stopped:
        out.append(f"# torch-lsp: {report.stopped}")
    return "\n".join(out) + "\n"


def trailer_lines(report: ShapeReport, annotations: "_Annotations", place=None) -> list[str]:
    """What follows the annotated source: where the shapes came from, then the notes, each
    with its line (`place` names a program line); "stopped" is added last by the caller."""
    origin = origin_text(report)
    notes_text = annotations.file_notes(place) if place else annotations.file_notes()
    return ([f"# torch-lsp: shapes {origin}"] if origin else []) + notes_text


class _Annotations:
    """Shapes, errors and notes of a report by line of the program it describes."""

    def __init__(self, report: ShapeReport, lines: list[str]):
        self.comments: dict[int, list[str]] = {}
        for label in inlay_labels(report, lines):
            self.comments.setdefault(label.position.line, []).append(label.tooltip.replace("\n", "; "))
        for line, text in synthesized_view.comments(report).items():
            self.comments.setdefault(line, []).append(text)
        for line, (forward, backward) in sorted(line_flops(report, report.path or None).items()):
            if 0 <= line < len(lines):  # where the FLOPs go, per line (backward: when the file trains)
                self.comments.setdefault(line, []).append(line_flops_text(forward, backward))
        self.below: dict[int, list[str]] = {}
        for error in report.errors:
            self.below.setdefault(error.range.line, []).append(f"# ^ error {error.code} {error.message}")
        # Notes go after the source, never between its lines: line N of the output stays line N
        # of the file for whoever compares them (coverage scripts, diff tools). Errors are the
        # exception: they belong under the line that raised.
        self._notes = [(n.line if n.line is not None and 0 <= n.line < len(lines) else None, n.message)
                       for n in notes(report)]
        # Comments line up after the longest annotated line (a long docstring elsewhere does not
        # push them off screen).
        self.width = min(max((len(lines[i].rstrip()) for i in self.comments if i < len(lines)), default=0), 88)

    def lines_for(self, index: int, text: str) -> list[str]:
        """Program line `index`, shown as `text`, with its shapes, and its errors under it."""
        out = [f"{text.ljust(self.width)}  # {'; '.join(self.comments[index])}" if index in self.comments else text]
        indent = text[: len(text) - len(text.lstrip())]
        out += [f"{indent}{comment}" for comment in self.below.get(index, [])]
        return out

    def file_notes(self, place=lambda line: f"line {line + 1}") -> list[str]:
        """`# torch-lsp note: line 12: ...` for each note (whole-file notes first); `place`
        names a program line (a notebook's: `cell 3:2`)."""
        ordered = sorted(self._notes, key=lambda note: (note[0] is not None, note[0] or 0))
        return [f"# torch-lsp note: {place(line) + ': ' if line is not None else ''}{message}"
                for line, message in ordered]
