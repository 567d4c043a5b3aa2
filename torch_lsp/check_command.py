"""`torch-lsp check PATH...`: the findings of files and folders, for CI (like `ruff check`).

A check passes only when every file was analysed to its end: a file that cannot be read or
parsed is an error (TL001) and a shape run that stopped early is a note (TL299), both printed
and counted like every other finding.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from torch_lsp.analysis.facts import Finding, Position, Severity, Span
from torch_lsp.cli_json import SEVERITY_NAMES

if TYPE_CHECKING:
    from torch_lsp.analysis.notebook import CellFix, NotebookFile

FAIL_ON = {"error": Severity.ERROR, "warning": Severity.WARNING, "info": Severity.INFO}


def add_subcommand(sub) -> None:
    check = sub.add_parser("check", help="report findings for files or folders (like ruff check)",
                           description="Run torch-lsp's analysis on files or folders and print the findings. "
                                       "Exit status 1 when a finding at or above --fail-on severity is reported "
                                       "(a file that cannot be analysed is always an error).")
    check.add_argument("paths", nargs="+", type=Path,
                       help="Python files, Jupyter notebooks or folders (searched recursively)")
    check.add_argument("--format", choices=["text", "json"], default="text")
    check.add_argument("--select", help="comma-separated rule codes or prefixes to enable (overrides configuration)")
    check.add_argument("--ignore", help="comma-separated rule codes or prefixes to disable (overrides configuration)")
    check.add_argument("--fail-on", choices=list(FAIL_ON), default="error",
                       help="lowest severity that makes the exit status 1 (default: error)")
    check.add_argument("--no-shapes", action="store_true",
                       help="do not run code to find shape errors (see docs/shapes.md); static rules only")
    check.set_defaults(handler=run_check)


@dataclass
class FileToCheck:
    path: Path
    source: str  # what the shape engine runs (a notebook's program)
    settings: object  # config.Settings of the file's project


@dataclass
class Reported:
    """One finding as printed: in the file's coordinates, or in its notebook cell's."""

    path: Path
    finding: Finding
    cell: int | None = None  # 1-based cell number in a notebook (markdown cells count)
    cell_fix: "CellFix | None" = None  # a notebook's fix (`finding.fix` is None there)

    @property
    def fixable(self) -> bool:
        return self.finding.fix is not None or self.cell_fix is not None


def iter_python_files(paths: list[Path]):
    """The files named, and the .py and .ipynb files under the folders named (hidden folders
    skipped)."""
    for path in paths:
        if path.is_dir():
            found = [*path.rglob("*.py"), *path.rglob("*.ipynb")]
            yield from sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(path).parts))
        else:
            yield path


def run_check(args: argparse.Namespace) -> int:
    from torch_lsp import config
    from torch_lsp.analysis.check import analyze_source

    overrides: dict = {}
    if args.select:
        overrides.setdefault("rules", {})["select"] = _codes(args.select)
    if args.ignore:
        overrides.setdefault("rules", {})["ignore"] = _codes(args.ignore)
    results: list[Reported] = []
    settings_by_folder: dict[Path, object] = {}
    to_run: list[FileToCheck] = []
    notebooks: dict[Path, NotebookFile] = {}
    files = list(iter_python_files(args.paths))
    for path in files:
        source = _read(path, results)
        if source is None:
            continue
        folder = path.parent.resolve()
        if folder not in settings_by_folder:
            merged = config.load_for_path(path, overrides)
            for warning in merged.warnings:
                print(warning, file=sys.stderr)
            settings_by_folder[folder] = merged.settings
        settings = settings_by_folder[folder]
        if path.suffix == ".ipynb":
            notebook = _read_notebook(path, source, results)
            if notebook is None:
                continue
            notebooks[path] = notebook
            source = notebook.program.source  # a notebook is one program: its code cells in order
        analysis = analyze_source(source, str(path), settings.rule_selection())
        if analysis.failure is not None:
            failure = analysis.failure
            at = Span(Position(failure.line, failure.col), Position(failure.line, failure.col))
            results += _placed(path, _not_analysed(f"syntax error: {failure.message}", at), notebooks)
            continue
        for finding in analysis.findings:
            results += _placed(path, finding, notebooks)
        for code in analysis.crashed:  # a torch-lsp bug: the file was not fully analysed
            start = Span(Position(0, 0), Position(0, 0))
            results.append(Reported(path, _not_analysed(f"rule {code} failed (a torch-lsp bug: please report it)", start)))
        if settings.execution.enabled and not args.no_shapes:
            to_run.append(FileToCheck(path, source, settings))
    for path, finding in _shape_findings(to_run):
        results += _placed(path, finding, notebooks)
    order = {path: index for index, path in enumerate(files)}
    results.sort(key=lambda r: (order[r.path], r.cell or 0, r.finding.span.start, r.finding.code))
    if args.format == "json":
        from torch_lsp.cli_json import check_json, print_json

        print_json(check_json(results))
    else:
        _print_text(results, files)
    threshold = FAIL_ON[args.fail_on]
    return 1 if any(r.finding.severity <= threshold for r in results) else 0


def _read_notebook(path: Path, source: str, results: list[Reported]) -> "NotebookFile | None":
    """The notebook's program (analysis/notebook.py); a cell that does not parse on its own is
    left out of it and is a TL001 finding in that cell."""
    from torch_lsp.analysis.notebook import NotebookFile, NotebookFormatError, notebook_language

    start = Span(Position(0, 0), Position(0, 0))
    language = notebook_language(source)
    if language and language.lower() != "python":  # not a Python file: skipped, like a .txt file
        print(f"torch-lsp: {path}: a {language} notebook, not Python (skipped)", file=sys.stderr)
        return None
    try:
        notebook = NotebookFile.read(source)
    except NotebookFormatError as error:
        results.append(Reported(path, _not_analysed(str(error), start)))
        return None
    for cell in notebook.program.left_out:
        results.append(Reported(path, _not_analysed("syntax error", start, "cell"), notebook.positions[cell] + 1))
    return notebook


def _placed(path: Path, finding: Finding, notebooks: dict) -> list[Reported]:
    """A finding of a file, or of a notebook's program moved into its cell."""
    notebook = notebooks.get(path)
    if notebook is None:
        return [Reported(path, finding)]
    return [Reported(path, located.finding, located.cell + 1, located.fix) for located in notebook.in_cells([finding])]


def _codes(text: str) -> list[str]:
    return [code.strip() for code in text.split(",") if code.strip()]


def _read(path: Path, results: list[Reported]) -> str | None:
    """The file's text, or None after recording why it cannot be analysed."""
    start = Span(Position(0, 0), Position(0, 0))
    if not path.exists():
        results.append(Reported(path, _not_analysed("no such file or directory", start)))
        return None
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        results.append(Reported(path, _not_analysed("not UTF-8 text (a binary file?)", start)))
    except OSError as error:
        results.append(Reported(path, _not_analysed(f"cannot read: {error.strerror or error}", start)))
    return None


def _not_analysed(reason: str, span: Span, what: str = "file") -> Finding:
    from torch_lsp.analysis.rules.files import FILE_NOT_ANALYSED

    return FILE_NOT_ANALYSED.finding(span, f"{reason} ({what} not analysed)")


def _shape_findings(files: list[FileToCheck]) -> list[tuple[Path, Finding]]:
    """Shape errors (TL2xx) and early stops (TL299) of the files, by running them on the meta
    device (docs/shapes.md)."""
    if not files:
        return []
    from torch_lsp.shapes.command import shape_findings

    found = shape_findings([(f.path, f.source, f.settings) for f in files])
    return [(f.path, finding) for f in files for finding in found.get(f.path, [])]


def _print_text(results: list[Reported], files: list[Path]) -> None:
    for r in results:
        f = r.finding
        cell = f"cell {r.cell}:" if r.cell is not None else ""
        print(f"{r.path}:{cell}{f.span.start.line + 1}:{f.span.start.col + 1}: {f.code} {f.message}")
    if not files:
        print("No Python files or notebooks found.")
    elif results:
        print(totals_line(results))
    else:
        print("All checks passed.")


def totals_line(results: list[Reported]) -> str:
    """`Found 3 findings: 1 error, 1 warning, 1 info (1 with a quick fix in the editor).`"""
    by_severity = Counter(SEVERITY_NAMES[int(r.finding.severity)] for r in results)
    counts = ", ".join(f"{by_severity[name]} {name}{'s' * (by_severity[name] != 1 and name != 'info')}"
                       for name in SEVERITY_NAMES.values() if by_severity[name])
    fixable = sum(1 for r in results if r.fixable)
    fixes = f" ({fixable} with a quick fix in the editor)" if fixable else ""
    return f"Found {len(results)} finding{'s' * (len(results) != 1)}: {counts}{fixes}."
