"""Where the next version of a file differs from the last, cut at top-level statements.

Two consumers keep what each top-level statement of the last version gave them and redo only
the statements an edit touched: the static analysis (incremental.py) and the workspace index's
facts of an open buffer (workspace_facts.py). Both find the edited lines the same way here,
parse those lines alone, and move everything below them by `delta` lines.
"""

from __future__ import annotations

import ast
import bisect
from dataclasses import dataclass
from typing import Sequence


def statement_span(statement: ast.stmt) -> tuple[int, int]:
    """A top-level statement's first line (its decorators included; 0-based) and its end
    (exclusive)."""
    decorators = getattr(statement, "decorator_list", ())
    return min([statement.lineno] + [d.lineno for d in decorators]) - 1, statement.end_lineno or statement.lineno


@dataclass
class LineEdit:
    """Lines start..old_end of the old text became start..new_end of the new one (0-based,
    end exclusive, cut at top-level statement boundaries); statements first..last (inclusive)
    of the old module lie in that range."""

    new_lines: list[str]
    start: int
    old_end: int
    new_end: int
    first: int
    last: int

    @property
    def delta(self) -> int:
        return self.new_end - self.old_end

    @classmethod
    def between(cls, old: list[str], new: list[str], spans: Sequence[tuple[int, int]]) -> "LineEdit | None":
        """The edit from the `old` lines to the `new` ones; `spans` are the old module's
        top-level statements (`statement_span`). None when the change starts before the first
        statement (a docstring's or a header comment's lines) or no statement holds it."""
        prefix = 0
        limit = min(len(old), len(new))
        while prefix < limit and old[prefix] == new[prefix]:
            prefix += 1
        suffix = 0
        while suffix < limit - prefix and old[-1 - suffix] == new[-1 - suffix]:
            suffix += 1
        changed_end = max(len(old) - suffix, prefix)  # old lines prefix..changed_end changed
        starts = [start for start, _ in spans]
        first = bisect.bisect_right(starts, prefix) - 1  # the statement the change starts in or after
        if first < 0:
            return None
        if first > 0 and starts[first] == prefix:
            first -= 1  # a new first line may continue the statement above (an indented line)
        last = bisect.bisect_right(starts, changed_end) - 1  # up to one that starts right after it
        start, old_end = starts[first], max(spans[last][1], changed_end)
        new_end = old_end + len(new) - len(old)
        if new_end < start:
            return None
        return cls(new, start, old_end, new_end, first, last)

    def parsed_region(self) -> ast.Module | None:
        """The new text's statements in the edited lines, numbered as in the whole new text;
        None when those lines do not parse alone (the whole text decides: maybe a syntax
        error, maybe not)."""
        try:
            region = ast.parse("".join(self.new_lines[self.start:self.new_end]))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        ast.increment_lineno(region, self.start)
        return region
