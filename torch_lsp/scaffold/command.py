"""`torch-lsp actions`: the scaffold code actions from the command line.

    torch-lsp actions train.py                       actions offered anywhere in the file
    torch-lsp actions train.py --line 60             actions offered with the cursor on line 60
    torch-lsp actions train.py --line 60 --apply scheduler.step_lr [--diff]

`--apply` prints the resulting program (or a unified diff) on stdout and never writes the file:
user files change only through edits the user applies (docs/architecture.md).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

from torch_lsp.analysis.facts import Position, Span


def add_subcommand(sub) -> None:
    parser = sub.add_parser("actions", help="list or apply the code actions that write training code",
                            description="List the code actions torch-lsp offers in a file (at a line, or "
                                        "anywhere), or print the file with one of them applied.")
    parser.add_argument("path", type=Path, help="a Python file")
    parser.add_argument("--line", type=int, help="1-based line of the cursor (default: every line)")
    parser.add_argument("--column", type=int, default=None, help="1-based column (default: first non-blank)")
    parser.add_argument("--apply", metavar="ID", help="print the file with this action applied at --line")
    parser.add_argument("--diff", action="store_true", help="with --apply: print a unified diff instead")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from torch_lsp import scaffold
    from torch_lsp.analysis.rules._edits import apply_edits

    try:
        source = args.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        print(f"torch-lsp: {args.path}: cannot read: {error}", file=sys.stderr)
        return 2
    lines = source.splitlines() or [""]
    if args.line is not None and not 1 <= args.line <= len(lines):
        print(f"torch-lsp: {args.path}: line {args.line} is outside 1..{len(lines)}", file=sys.stderr)
        return 2
    numbers = [args.line - 1] if args.line is not None else range(len(lines))
    if args.apply:
        if args.line is None:
            print("torch-lsp: --apply needs --line (where the cursor is)", file=sys.stderr)
            return 2
        fix = scaffold.build(source, args.apply, _cursor(lines, numbers[0], args.column), str(args.path))
        if fix is None:
            print(f"torch-lsp: {args.apply} does not apply at line {args.line}", file=sys.stderr)
            return 1
        result = apply_edits(source, fix.edits)
        if args.diff:
            sys.stdout.writelines(difflib.unified_diff(source.splitlines(keepends=True), result.splitlines(keepends=True),
                                                       str(args.path), f"{args.path} ({args.apply})"))
        else:
            sys.stdout.write(result)
        return 0
    found: dict[str, dict] = {}
    for number in numbers:
        for offer in scaffold.offers(source, _cursor(lines, number, args.column), str(args.path)):
            found.setdefault(offer.id, {"id": offer.id, "title": offer.title, "kind": offer.kind, "line": number + 1})
    if args.format == "json":
        print(json.dumps(list(found.values()), indent=2))
    else:
        for entry in found.values():
            print(f"{args.path}:{entry['line']}: {entry['id']}  {entry['title']}")
        if not found:
            print("No actions offered.")
    return 0


def _cursor(lines: list[str], number: int, column: int | None) -> Span:
    text = lines[number] if number < len(lines) else ""
    col = column - 1 if column else len(text) - len(text.lstrip())
    at = Position(number, max(0, min(col, len(text))))
    return Span(at, at)
