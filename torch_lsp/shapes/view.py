"""What a ShapeReport looks like to a person: hover text, inlay labels, findings, annotated source.

No torch, no LSP types: the server (hover.py, inlay.py, shapes.py) and the CLI share this.
Positions are 0-based lines and code-point columns, as everywhere in analysis.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch_lsp.analysis.facts import Finding, Position, Severity, Span

if TYPE_CHECKING:  # pydantic costs ~100 ms to import; the server loads it with the first report
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
    return "\n\n".join(parts) if parts else None


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
    """Shape errors (TL2xx), and an information note (TL299) where a job hung: the user should
    know why shapes end there. Other stops (sys.exit, data-dependent code) stay quiet.
    Selected, re-ranked and suppressed (`# torch-lsp: ignore[TL201]`) like static findings."""
    found = _raw_findings(report, lines)
    if selection is None:
        return found
    from torch_lsp.analysis.rules import load_rules
    from torch_lsp.analysis.rules.selection import is_suppressed

    return [f for f in selection.apply(found, load_rules()) if lines is None or not is_suppressed(f, lines)]


def _raw_findings(report: ShapeReport, lines: list[str] | None) -> list[Finding]:
    found = [Finding(code=e.code, message=e.message, span=e.range.span(), severity=Severity.ERROR)
             for e in report.errors]
    if report.timed_out and report.stopped_line is not None:
        line = report.stopped_line
        text = lines[line] if lines is not None and line < len(lines) else ""
        start = len(text) - len(text.lstrip())
        span = Span(Position(line, start), Position(line, max(len(text), start)))
        found.append(Finding(code=STOPPED_CODE, message=report.stopped, span=span, severity=Severity.INFO))
    return found


def annotate(source: str, report: ShapeReport) -> str:
    """The source with `# x: Tensor[...]` after tensor assignments and errors under their line."""
    lines = source.splitlines()
    comments: dict[int, list[str]] = {}
    for label in inlay_labels(report, lines):
        comments.setdefault(label.position.line, []).append(label.tooltip.replace("\n", "; "))
    errors: dict[int, list[str]] = {}
    for error in report.errors:
        errors.setdefault(error.range.line, []).append(f"{error.code} {error.message}")
    width = min(max((len(l) for l in lines), default=0), 88)
    out = []
    for index, text in enumerate(lines):
        if index in comments:
            out.append(f"{text.ljust(width)}  # {'; '.join(comments[index])}")
        else:
            out.append(text)
        for message in errors.get(index, []):
            indent = text[: len(text) - len(text.lstrip())]
            out.append(f"{indent}# ^ error {message}")
    if report.stopped:
        out.append(f"# torch-lsp: {report.stopped}")
    return "\n".join(out) + "\n"
