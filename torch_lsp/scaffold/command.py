"""`torch-lsp actions`: the scaffold code actions from the command line.

    torch-lsp actions train.py                       actions offered anywhere in the file
    torch-lsp actions train.py --line 60             actions offered with the cursor on line 60
    torch-lsp actions train.py --line 60 --apply scheduler.step_lr [--diff]
    torch-lsp actions notebook.ipynb --cell 6 --line 1 --apply loop.train [--diff]

`--apply` prints the resulting program (or a unified diff) on stdout and never writes the file:
user files change only through edits the user applies (docs/architecture.md). A notebook is
one program (analysis/notebook.py): actions are offered and written per cell, and `--apply`
prints the notebook's JSON with the changed cells (or a diff of each changed cell).
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
    parser.add_argument("path", type=Path, help="a Python file or a Jupyter notebook")
    parser.add_argument("--cell", type=int, help="in a notebook: the cell (numbered from 1, markdown cells included)")
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
    if args.path.suffix == ".ipynb":
        return _run_notebook(args, source)
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
    return _print_offers(args, found)


def _run_notebook(args: argparse.Namespace, source: str) -> int:
    from torch_lsp import scaffold
    from torch_lsp.analysis.notebook import NotebookFile, NotebookFormatError

    try:
        notebook = NotebookFile.read(source)
    except NotebookFormatError as error:
        print(f"torch-lsp: {args.path}: {error}", file=sys.stderr)
        return 2
    program = notebook.program
    cell_of = {position + 1: cell for cell, position in enumerate(notebook.positions)}  # number -> program cell
    if args.cell is not None and args.cell not in cell_of:
        print(f"torch-lsp: {args.path}: cell {args.cell} is not a code cell (code cells: "
              f"{', '.join(map(str, cell_of))})", file=sys.stderr)
        return 2
    if args.apply:
        if args.cell is None or args.line is None:
            print("torch-lsp: --apply in a notebook needs --cell and --line (where the cursor is)", file=sys.stderr)
            return 2
        cell = cell_of[args.cell]
        lines = program.cell_lines(cell)
        if not 1 <= args.line <= len(lines):
            print(f"torch-lsp: {args.path}: cell {args.cell} has lines 1..{len(lines)}", file=sys.stderr)
            return 2
        span = program.span_to_program(cell, _cursor(lines, args.line - 1, args.column))
        fix = scaffold.build_in_cell(program, cell, args.apply, span, str(args.path))
        by_cell = program.fix_by_cell(fix) if fix else None
        if not by_cell:
            print(f"torch-lsp: {args.apply} does not apply at cell {args.cell}, line {args.line}", file=sys.stderr)
            return 1
        _print_changed_notebook(args, source, notebook, by_cell)
        return 0
    found: dict[str, dict] = {}
    for number, cell in cell_of.items():
        if args.cell is not None and number != args.cell or cell in program.left_out:
            continue
        lines = program.cell_lines(cell)
        for line in [args.line - 1] if args.line else range(len(lines)):
            span = program.span_to_program(cell, _cursor(lines, line, args.column))
            for offer in scaffold.offers_in_cell(program, cell, span, str(args.path)):
                found.setdefault(offer.id, {"id": offer.id, "title": offer.title, "kind": offer.kind,
                                            "cell": number, "line": line + 1})
    return _print_offers(args, found)


def _print_offers(args: argparse.Namespace, found: dict[str, dict]) -> int:
    """Each action once, at the first place it is offered (`path:line:` or `path:cell N:line:`)."""
    if args.format == "json":
        print(json.dumps(list(found.values()), indent=2))
        return 0
    for entry in found.values():
        cell = f"cell {entry['cell']}:" if "cell" in entry else ""
        print(f"{args.path}:{cell}{entry['line']}: {entry['id']}  {entry['title']}")
    if not found:
        print("No actions offered.")
    return 0


def _print_changed_notebook(args: argparse.Namespace, source: str, notebook, by_cell: dict) -> None:
    """The notebook with the edited cells: its JSON (nbformat's layout), or a diff per cell."""
    from torch_lsp.analysis.rules._edits import apply_edits

    program = notebook.program
    changed = {cell: apply_edits(program.cells[cell], edits) for cell, edits in sorted(by_cell.items())}
    if args.diff:
        for cell, text in changed.items():
            name = f"{args.path}:cell {notebook.positions[cell] + 1}"
            before, after = (f"{t}\n".splitlines(keepends=True) for t in (program.cells[cell].rstrip("\n"), text.rstrip("\n")))
            sys.stdout.writelines(difflib.unified_diff(before, after, name, f"{name} ({args.apply})"))
        return
    document = json.loads(source)
    for cell, text in changed.items():
        document["cells"][notebook.positions[cell]]["source"] = text.splitlines(keepends=True)
    print(json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False))


def _cursor(lines: list[str], number: int, column: int | None) -> Span:
    text = lines[number] if number < len(lines) else ""
    col = column - 1 if column else len(text) - len(text.lstrip())
    at = Position(number, max(0, min(col, len(text))))
    return Span(at, at)
