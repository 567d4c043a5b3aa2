"""`torch-lsp shapes FILE`, and the shape half of `torch-lsp check`.

The command line uses the same engine as the server (a warm worker, forked jobs, the same plan
and guards), started for the duration of the command.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from torch_lsp.analysis.facts import Finding
from torch_lsp.cli_json import print_json, shape_report_json
from torch_lsp.shapes import view
from torch_lsp.shapes.report import ShapeReport

if TYPE_CHECKING:
    from torch_lsp.analysis.notebook import NotebookFile
    from torch_lsp.shapes.session import ShapeSession


def add_subcommand(sub: argparse._SubParsersAction) -> None:
    shapes = sub.add_parser(
        "shapes", help="print a file annotated with tensor shapes (runs it on the meta device)",
        description="Run FILE's model and tensor code on the meta device (see docs/shapes.md for exactly "
                    "what runs) and print the source with the shape of each tensor assignment and any "
                    "shape error. Exit status 1 when a shape error is found.")
    add_run_options(shapes)
    shapes.set_defaults(handler=run_shapes_command)

    summary = sub.add_parser(
        "summary", help="print the model summary: each layer call, its shapes, parameters and mult-adds",
        description="Run FILE like `torch-lsp shapes` does and print a table like torchinfo's: one row per "
                    "module call, in call order and nested (library models included), with input and output "
                    "shapes, parameters, trainable, and mult-adds (torch's FLOP count / 2).")
    add_run_options(summary)
    summary.add_argument("--depth", type=int, default=3, help="nesting shown (default 3, like torchinfo)")
    summary.set_defaults(handler=run_summary_command)

    from torch_lsp.shapes import memory_command

    memory_command.add_subcommand(sub, add_run_options)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path)
    parser.add_argument("--device", choices=["meta", "cpu", "cuda", "auto"], default=None,
                        help="execution device (default: execution.device of the settings, meta)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds before the run is stopped (default: execution.timeout, 5)")
    parser.add_argument("--memory-mb", type=int, default=None)
    parser.add_argument("--format", choices=["text", "json"], default="text")


def overrides(args: argparse.Namespace) -> dict:
    execution = {key: value for key, value in (("device", args.device), ("timeout", args.timeout),
                                               ("memoryMb", args.memory_mb)) if value is not None}
    return {"execution": execution} if execution else {}


def session_for(path: Path, overrides: dict | None = None) -> "ShapeSession":
    """A session for the project `path` belongs to, with that project's settings."""
    from torch_lsp import config
    from torch_lsp.shapes.project import find_workspace_root
    from torch_lsp.shapes.session import ShapeSession

    merged = config.load_for_path(path, overrides)
    for warning in merged.warnings:
        print(warning, file=sys.stderr)
    return ShapeSession(find_workspace_root(path), lambda: merged.settings)


def cost_observers(session: "ShapeSession") -> list[str]:
    """FLOPs, memory and the module-call tree, unless `shapes.costs` is off."""
    from torch_lsp.shapes.observers import COST

    return list(COST) if session.settings_provider().shapes.costs else []


async def _analyse_one(session: "ShapeSession", path: Path, source: str) -> ShapeReport:
    from torch_lsp.shapes.session import RunRequest

    try:
        path = path.resolve()
        reports = await session.analyse(RunRequest(path=str(path), text=source, observers=cost_observers(session)))
    finally:
        await session.close()
    if reports is None:
        return ShapeReport(path=str(path), stopped="cancelled")
    return reports.get(str(path)) or ShapeReport(path=str(path))


def read_source(path: Path, command: str) -> str | None:
    """FILE's text, or None after saying on stderr why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        print(f"torch-lsp {command}: cannot read {path}: {error}", file=sys.stderr)
        return None


def _run_file(args: argparse.Namespace, command: str) -> tuple[str, ShapeReport, "NotebookFile | None"] | None:
    """Read FILE and run it through a warm worker started for this command. A notebook runs as
    one program (its code cells in order, analysis/notebook.py)."""
    from torch_lsp.analysis.notebook import NotebookFile, NotebookFormatError

    source = read_source(args.file, command)
    if source is None:
        return None
    notebook = None
    if args.file.suffix == ".ipynb":
        try:
            notebook = NotebookFile.read(source)
        except NotebookFormatError as error:
            print(f"torch-lsp {command}: {args.file}: {error}", file=sys.stderr)
            return None
        source = notebook.program.source
    session = session_for(args.file, overrides(args))
    return source, asyncio.run(_analyse_one(session, args.file, source)), notebook


def run_shapes_command(args: argparse.Namespace) -> int:
    ran = _run_file(args, "shapes")
    if ran is None:
        return 2
    source, report, notebook = ran
    if args.format == "json":
        data = shape_report_json(report)  # 1-based lines, like the text (docs/cli.md)
        if notebook is not None:  # where each code cell sits in the program the report describes
            data["notebook"] = {"cells": [
                {"cell": position + 1, "firstLine": notebook.program.starts[index] + 1,
                 "lineCount": notebook.program.line_count(index)}
                for index, position in enumerate(notebook.positions)]}
        print_json(data)
    elif notebook is not None:
        sys.stdout.write(view.annotate_notebook(notebook, report))
    else:
        sys.stdout.write(view.annotate(source, report))
    return 1 if report.errors else 0


def run_summary_command(args: argparse.Namespace) -> int:
    from torch_lsp.shapes.summary import model_summary

    ran = _run_file(args, "summary")
    if ran is None:
        return 2
    source, report, notebook = ran
    summary = model_summary(report, source.splitlines(), notebook.place_label if notebook else None,
                            depth=max(args.depth, 0))
    if args.format == "json":
        print_json(summary)
    else:
        sys.stdout.write(summary["markdown"])
    return 1 if report.errors else 0


def shape_findings(files: list[tuple[Path, str, object]]) -> dict[Path, list[Finding]]:
    """Shape errors of several (path, source, settings) files, through one warm worker per
    project (for `torch-lsp check`)."""
    return asyncio.run(_findings(files))


async def _findings(files: list[tuple[Path, str, object]]) -> dict[Path, list[Finding]]:
    from torch_lsp.shapes.project import find_workspace_root
    from torch_lsp.shapes.session import RunRequest, ShapeSession

    sessions: dict[Path, ShapeSession] = {}
    results: dict[Path, list[Finding]] = {}
    try:
        for path, source, settings in files:
            root = find_workspace_root(path)
            session = sessions.get(root)
            if session is None:
                session = sessions[root] = ShapeSession(root, lambda settings=settings: settings)
            resolved = str(path.resolve())
            # Synthesized calls never report errors (their inputs are guesses): not run here.
            reports = await session.analyse(RunRequest(path=resolved, text=source), synthesize=False)
            report = reports.get(resolved) if reports else None
            results[path] = view.findings(report, source.splitlines(), settings.rule_selection()) if report else []
    finally:
        for session in sessions.values():
            await session.close()
    return results
