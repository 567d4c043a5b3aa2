"""The JSON the command line prints (`--format json`, `--json`): one place for its shape.

Inside torch-lsp lines and columns are 0-based (analysis/facts.py, shapes/report.py); every
JSON document a command prints counts them from 1, like the text output and like editors show
them. The schemas are documented (and tested against real output) in docs/cli.md.
"""

from __future__ import annotations

import json
import sys
from typing import Any

# Keys that hold a 0-based line or column anywhere in a shape report (ranges, variables,
# notes, the origin's call site, related locations, observer sections).
_POSITION_KEYS = frozenset({"line", "end_line", "col", "end_col", "stopped_line"})
SEVERITY_NAMES = {1: "error", 2: "warning", 3: "info", 4: "hint"}


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def one_based(value: Any) -> Any:
    """A copy of `value` with every line/column under _POSITION_KEYS counted from 1."""
    if isinstance(value, dict):
        return {key: (item + 1 if key in _POSITION_KEYS and _is_int(item) else one_based(item))
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [one_based(item) for item in value]
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def shape_report_json(report) -> dict:
    """`torch-lsp shapes --format json`: the ShapeReport, 1-based."""
    return one_based(report.to_dict())


def check_json(results) -> list[dict]:
    """`torch-lsp check --format json`: one object per finding (check_command.Reported), in the
    order of the text output; a notebook's findings carry their 1-based `cell`."""
    return [_finding_json(r) for r in results]


def _finding_json(reported) -> dict:
    f = reported.finding
    start, end = f.span.start, f.span.end

    def edit(e, cell: int | None = None) -> dict:
        place = {"cell": cell} if cell is not None else {}
        return {**place, "start": [e.span.start.line + 1, e.span.start.col + 1],
                "end": [e.span.end.line + 1, e.span.end.col + 1], "newText": e.new_text}

    fix = None
    if f.fix is not None:
        fix = {"title": f.fix.title, "edits": [edit(e) for e in f.fix.edits]}
    elif reported.cell_fix is not None:
        fix = {"title": reported.cell_fix.title,
               "edits": [edit(e, cell + 1) for cell, edits in sorted(reported.cell_fix.edits.items()) for e in edits]}
    place = {"cell": reported.cell} if reported.cell is not None else {}
    return {"path": str(reported.path), **place, "line": start.line + 1, "column": start.col + 1,
            "endLine": end.line + 1, "endColumn": end.col + 1, "code": f.code,
            "severity": SEVERITY_NAMES[int(f.severity)], "message": f.message, "fix": fix}
