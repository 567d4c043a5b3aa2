"""Plain facts that analysis produces and every other layer consumes.

Positions are 0-based lines and 0-based columns counted in Unicode code points (what libcst
reports). The server converts columns to the client's encoding (UTF-16 by default) at the
protocol boundary, in server/convert.py; nothing in analysis/ knows about LSP.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Severity(enum.IntEnum):
    # Same order as LSP's DiagnosticSeverity so conversion is a lookup, not a table.
    ERROR = 1
    WARNING = 2
    INFO = 3
    HINT = 4

    @classmethod
    def parse(cls, name: str) -> "Severity":
        return cls[name.strip().upper()]


@dataclass(frozen=True, order=True)
class Position:
    line: int
    col: int


@dataclass(frozen=True, order=True)
class Span:
    start: Position
    end: Position

    @classmethod
    def of(cls, line: int, col: int, end_line: int, end_col: int) -> "Span":
        return cls(Position(line, col), Position(end_line, end_col))

    def contains(self, pos: Position) -> bool:
        return self.start <= pos <= self.end

    def overlaps(self, other: "Span") -> bool:
        return not (other.end < self.start or self.end < other.start)


@dataclass(frozen=True)
class TextEdit:
    span: Span
    new_text: str


@dataclass(frozen=True)
class Fix:
    """A change that resolves a finding or performs an action, as text edits on one file."""

    title: str
    edits: tuple[TextEdit, ...]
    preferred: bool = True


@dataclass(frozen=True)
class Finding:
    code: str
    message: str
    span: Span
    severity: Severity
    fix: Fix | None = None
    # Extra lines shown with the diagnostic (e.g. where the optimizer was created).
    related: tuple[tuple[Span, str], ...] = field(default=())
    # The same, in other files: (path, span, message), e.g. train.py's call of the failing model.
    related_elsewhere: tuple[tuple[str, Span, str], ...] = field(default=())
