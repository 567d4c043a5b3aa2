"""Where the lines of an older version of a text are in a newer one.

Results computed for an older version of a document (a shape report takes a while) stay
useful while the user types on: a line that was not edited still means what it meant, only
further down when lines were added above it. `LineMap` says, for every line of the old text,
which line of the new text it became, or that it was edited (then results on it are dropped).
Maps of successive edits compose (`then`), so a report made several keystrokes ago is moved
through all of them at once.

Pure and small: lines in, lines out; no LSP types, no reports (shapes/moved.py moves a
report, the server keeps the maps per document).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class LineMap:
    # Runs of surviving lines: old lines first..end-1 (0-based, end exclusive) are now at line
    # + shift. Sorted, not overlapping; an old line in no run was edited or deleted.
    runs: tuple[tuple[int, int, int], ...]

    @classmethod
    def identity(cls, lines: int) -> "LineMap":
        return cls(((0, lines, 0),) if lines else ())

    @classmethod
    def between(cls, old: Sequence[str], new: Sequence[str]) -> "LineMap":
        """The map for one edit, from the two texts' lines: the lines before the first changed
        one and after the last stay (the latter shifted); the lines between were edited. One
        notification of typing is one such edit; pressing Enter at the end of a line edits
        no line, it adds one."""
        limit = min(len(old), len(new))
        prefix = 0
        while prefix < limit and old[prefix] == new[prefix]:
            prefix += 1
        suffix = 0
        while suffix < limit - prefix and old[len(old) - 1 - suffix] == new[len(new) - 1 - suffix]:
            suffix += 1
        runs = []
        if prefix:
            runs.append((0, prefix, 0))
        if suffix:
            runs.append((len(old) - suffix, len(old), len(new) - len(old)))
        return cls(tuple(runs))

    def line(self, old: int) -> int | None:
        """Where old line `old` is now; None when it was edited or deleted."""
        run = self._run(old)
        return old + run[2] if run is not None else None

    def lines(self, first: int, last: int) -> tuple[int, int] | None:
        """Where old lines first..last (inclusive) are now, when all of them survived together
        (a multi-line statement whose every line is untouched); else None."""
        run = self._run(first)
        if run is None or last >= run[1]:
            return None
        return first + run[2], last + run[2]

    def _run(self, old: int) -> tuple[int, int, int] | None:
        at = bisect.bisect_right(self.runs, (old, float("inf"), 0)) - 1
        if at >= 0 and self.runs[at][0] <= old < self.runs[at][1]:
            return self.runs[at]
        return None

    def then(self, later: "LineMap") -> "LineMap":
        """This map followed by `later` (this one's new text is `later`'s old text)."""
        runs = []
        for first, end, shift in self.runs:
            low, high = first + shift, end + shift  # where this run is in the middle text
            start = bisect.bisect_right(later.runs, (low, float("inf"), 0)) - 1
            for second, second_end, second_shift in later.runs[max(start, 0):]:
                if second >= high:
                    break
                overlap_low, overlap_high = max(low, second), min(high, second_end)
                if overlap_low < overlap_high:
                    runs.append((overlap_low - shift, overlap_high - shift, shift + second_shift))
        return LineMap(tuple(_merged(runs)))


def _merged(runs: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    merged: list[tuple[int, int, int]] = []
    for run in runs:
        if merged and merged[-1][1] == run[0] and merged[-1][2] == run[2]:
            merged[-1] = (merged[-1][0], run[1], run[2])
        else:
            merged.append(run)
    return merged
