"""A notebook as one program: its code cells, in order, as one Python source, and the map
between (cell, line, column) and the program's (line, column).

Jupyter runs a notebook's cells one after the other in one namespace: a model defined in cell 2
and called in cell 5 is one program. Everything that analyses a file (rules, the shape plan,
code actions) therefore runs unchanged on `NotebookProgram.source`; results come back to each
cell through `locate` / `edit_in_cell`. Pure: no LSP types (the server maps cells to URIs, the
CLI to cell numbers), no torch.

Layout of the program, cell after cell:

    <cell 0, its IPython syntax neutralised line for line (analysis/magics.py)>
    <one empty separator line>
    <cell 1 ...>
    <one empty separator line>

Every cell line keeps its line and (except `%time` lines) its columns, so a finding maps back
by subtracting the cell's first line. The separator line makes "the line after the last line of
cell k" a place of its own: a code action that appends code after cell k's last statement
inserts there, and that insertion lands at the end of cell k, not at the top of cell k+1.

A cell that does not parse on its own is left out of the program (its lines stay, empty): the
other cells are still analysed, as Jupyter would still run them.
"""

from __future__ import annotations

import ast
import bisect
import functools
import json
from dataclasses import dataclass
from typing import Sequence

from torch_lsp.analysis.facts import Finding, Fix, Position, Span, TextEdit
from torch_lsp.analysis.magics import NeutralisedCell, neutralise, split_lines

# Cell kinds of the .ipynb format; only code cells are part of the program.
CODE = "code"


@dataclass(frozen=True)
class NotebookCell:
    """One cell of an .ipynb file: its 0-based position among all cells, kind and text."""

    index: int
    kind: str
    source: str


class NotebookFormatError(ValueError):
    """The text is not a notebook this tool can read (not JSON, not nbformat 4)."""


def read_ipynb(text: str) -> list[NotebookCell]:
    """The cells of an .ipynb document (nbformat 4), markdown and raw cells included."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise NotebookFormatError(f"not a notebook (invalid JSON: {error})") from error
    if not isinstance(document, dict) or not isinstance(document.get("cells"), list):
        version = document.get("nbformat") if isinstance(document, dict) else None
        hint = f" (nbformat {version}: convert it with `jupyter nbconvert --to notebook`)" if version else ""
        raise NotebookFormatError(f"not an nbformat 4 notebook{hint}")
    cells = []
    for index, cell in enumerate(document["cells"]):
        if not isinstance(cell, dict):
            continue
        source = cell.get("source", "")
        if isinstance(source, list):  # nbformat stores a cell as a list of lines, or as one string
            source = "".join(str(part) for part in source)
        cells.append(NotebookCell(index, str(cell.get("cell_type", "")), str(source)))
    return cells


def notebook_language(text: str) -> str | None:
    """The kernel's language from the notebook's metadata (`python`, `R`, ...), if it says."""
    try:
        metadata = json.loads(text).get("metadata", {})
        return (metadata.get("language_info") or {}).get("name") or (metadata.get("kernelspec") or {}).get("language")
    except (ValueError, AttributeError):
        return None


@functools.lru_cache(maxsize=512)
def _prepare(cell: str) -> tuple[NeutralisedCell, bool]:
    """The cell as Python, and whether it parses on its own (cached: one cell changes at a time)."""
    python = neutralise(cell)
    try:
        ast.parse(python.text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return python, False
    return python, True


class NotebookProgram:
    """The code cells of a notebook, in order, as one program (see the module docstring)."""

    def __init__(self, cells: Sequence[str]):
        self.cells = tuple(cells)
        self._python: list[NeutralisedCell] = []
        self.left_out: tuple[int, ...] = ()
        self.starts: list[int] = []  # the program line of each cell's first line
        left_out, parts, line = [], [], 0
        for index, cell in enumerate(self.cells):
            python, parses = _prepare(cell)
            self._python.append(python)
            self.starts.append(line)
            if parses:
                parts.append(python.text)
            else:
                left_out.append(index)
                parts.append("\n" * (len(python.lines) - 1))
            line += len(python.lines) + 1
        self.left_out = tuple(left_out)
        self.source = "".join(part + "\n\n" for part in parts)
        self.lines = self.source.split("\n")

    def line_text(self, line: int) -> str:
        return self.lines[line] if 0 <= line < len(self.lines) else ""

    def __len__(self) -> int:
        return len(self.cells)

    def line_count(self, cell: int) -> int:
        return len(self._python[cell].lines)

    def cell_lines(self, cell: int) -> list[str]:
        """The cell's own text, split the way positions count lines."""
        return split_lines(self.cells[cell])

    def magic_lines(self, cell: int) -> tuple[int, ...]:
        return self._python[cell].magic_lines

    def upto(self, cell: int) -> "NotebookProgram":
        """The program of cells 0..`cell` (what has run when `cell` runs): same positions."""
        return NotebookProgram(self.cells[: cell + 1])

    def first_cell_end(self) -> int:
        """The program line just after the first cell (new imports go above it)."""
        return self.line_count(0) if self.cells else 0

    # -- cell -> program ----------------------------------------------------------------------
    def to_program(self, cell: int, position: Position) -> Position:
        line = min(max(position.line, 0), self.line_count(cell) - 1)
        shift = self._python[cell].shifts.get(line)
        col = shift.to_python(position.col) if shift else position.col
        return Position(self.starts[cell] + line, max(col, 0))

    def span_to_program(self, cell: int, span: Span) -> Span:
        return Span(self.to_program(cell, span.start), self.to_program(cell, span.end))

    # -- program -> cell ----------------------------------------------------------------------
    def cell_at(self, line: int) -> int | None:
        """The cell holding program line `line` (its separator line included)."""
        if line < 0 or not self.cells:
            return None
        cell = bisect.bisect_right(self.starts, line) - 1
        return cell if line <= self.starts[cell] + self.line_count(cell) else None

    def locate(self, position: Position) -> tuple[int, Position] | None:
        """(cell, position in the cell); a separator line's position is the end of its cell."""
        cell = self.cell_at(position.line)
        if cell is None:
            return None
        line = position.line - self.starts[cell]
        if line >= self.line_count(cell):
            return cell, self._cell_end(cell)
        shift = self._python[cell].shifts.get(line)
        col = shift.to_cell(position.col) if shift else position.col
        return cell, Position(line, min(col, len(self.cell_lines(cell)[line])))

    def locate_span(self, span: Span) -> tuple[int, Span] | None:
        """The cell where `span` starts and the span in it (cut at the cell's end)."""
        start = self.locate(span.start)
        if start is None:
            return None
        cell, begin = start
        end = self.locate(span.end)
        finish = end[1] if end is not None and end[0] == cell else self._cell_end(cell)
        return cell, Span(begin, max(begin, finish))

    def edit_in_cell(self, edit: TextEdit) -> tuple[int, TextEdit] | None:
        """An edit of the program as an edit of one cell, or None if it spans cells."""
        cell = self.cell_at(edit.span.start.line)
        if cell is None or cell in self.left_out:
            return None
        separator = self.starts[cell] + self.line_count(cell)
        if edit.span.start.line == separator:
            if edit.span.end != edit.span.start:
                return None
            return cell, self._append_to_cell(cell, edit.new_text)
        end_cell = self.cell_at(edit.span.end.line)
        if end_cell != cell:
            return None
        start, end = self.locate(edit.span.start), self.locate(edit.span.end)
        return cell, TextEdit(Span(start[1], end[1]), edit.new_text)

    def fix_by_cell(self, fix: Fix) -> dict[int, list[TextEdit]] | None:
        """The fix's edits grouped by cell; None when one of them cannot be made in a cell."""
        grouped: dict[int, list[TextEdit]] = {}
        for edit in fix.edits:
            located = self.edit_in_cell(edit)
            if located is None:
                return None
            grouped.setdefault(located[0], []).append(located[1])
        return grouped

    def _cell_end(self, cell: int) -> Position:
        lines = self.cell_lines(cell)
        return Position(len(lines) - 1, len(lines[-1]))

    def _append_to_cell(self, cell: int, text: str) -> TextEdit:
        """Text inserted at the start of the line after the cell, as an edit at the cell's end."""
        end = self._cell_end(cell)
        if end.col == 0:  # the cell ends with a newline: the text goes on that empty last line
            return TextEdit(Span(end, end), text)
        body = text[:-1] if text.endswith("\n") else text
        return TextEdit(Span(end, end), "\n" + body)


# -- whole .ipynb files (the CLI) ----------------------------------------------------------------
@dataclass(frozen=True)
class CellFix:
    title: str
    edits: dict[int, list[TextEdit]]  # by cell position (0-based, among all cells)


@dataclass(frozen=True)
class CellFinding:
    """A finding of a notebook, in the coordinates of the cell it starts in."""

    cell: int  # 0-based position among all the notebook's cells (markdown included)
    finding: Finding  # span and same-cell related places in the cell; no fix (see `fix`)
    fix: CellFix | None = None


@dataclass(frozen=True)
class NotebookFile:
    """An .ipynb file's Python program, and where each of its code cells sits in the file."""

    program: NotebookProgram
    positions: tuple[int, ...]  # program cell -> position among all cells

    @classmethod
    def read(cls, text: str) -> "NotebookFile":
        code = [cell for cell in read_ipynb(text) if cell.kind == CODE]
        return cls(NotebookProgram([cell.source for cell in code]), tuple(cell.index for cell in code))

    def place_label(self, line: int) -> str:
        """`cell 3:7` for a 0-based program line (cells and lines counted from 1)."""
        located = self.program.locate(Position(line, 0))
        return f"cell {self.positions[located[0]] + 1}:{located[1].line + 1}" if located else f"line {line + 1}"

    def in_cells(self, findings: Sequence[Finding]) -> list[CellFinding]:
        """Findings of `program.source`, each moved into its cell (fixes that would span cells
        are dropped)."""
        located = []
        for finding in findings:
            place = self.program.locate_span(finding.span)
            if place is None:
                continue
            cell, span = place
            related = []
            for related_span, message in finding.related:
                other = self.program.locate_span(related_span)
                if other is not None and other[0] == cell:
                    related.append((other[1], message))
            by_cell = self.program.fix_by_cell(finding.fix) if finding.fix else None
            fix = CellFix(finding.fix.title, {self.positions[c]: e for c, e in by_cell.items()}) if by_cell else None
            moved = Finding(finding.code, finding.message, span, finding.severity, None, tuple(related))
            located.append(CellFinding(self.positions[cell], moved, fix))
        return located
