"""`torch-lsp shapes FILE`, and the shape half of `torch-lsp check`.

The command line uses the same engine as the server (a warm worker, forked jobs, the same plan
and guards), started for the duration of the command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from torch_lsp.analysis.facts import Finding
from torch_lsp.shapes import view
from torch_lsp.shapes.engine import JobSettings, ShapeEngine, analyse_source
from torch_lsp.shapes.report import ShapeReport


def add_subcommand(sub: argparse._SubParsersAction) -> None:
    shapes = sub.add_parser(
        "shapes", help="print a file annotated with tensor shapes (runs it on the meta device)",
        description="Run FILE's model and tensor code on the meta device (see docs/shapes.md for exactly "
                    "what runs) and print the source with the shape of each tensor assignment and any "
                    "shape error. Exit status 1 when a shape error is found.")
    _add_run_options(shapes)
    shapes.set_defaults(handler=run_shapes_command)

    summary = sub.add_parser(
        "summary", help="print the model summary: each layer call, its output shape and parameters",
        description="Run FILE like `torch-lsp shapes` does and print a table of every layer call the run "
                    "saw, in source order: the layer as constructed, its output shape and its parameter count.")
    _add_run_options(summary)
    summary.set_defaults(handler=run_summary_command)


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path)
    parser.add_argument("--device", choices=["meta", "cpu", "cuda", "auto"], default="meta")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds before the run is stopped (default 5)")
    parser.add_argument("--memory-mb", type=int, default=4096)
    parser.add_argument("--format", choices=["text", "json"], default="text")


def _run_file(args: argparse.Namespace, command: str) -> tuple[str, ShapeReport] | None:
    """Read FILE and run it through a warm worker started for this command."""
    try:
        source = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        print(f"torch-lsp {command}: cannot read {args.file}: {error}", file=sys.stderr)
        return None
    settings = JobSettings(args.device, args.timeout, args.memory_mb)
    return source, asyncio.run(analyse_source(source, str(args.file.resolve()), settings))


def run_shapes_command(args: argparse.Namespace) -> int:
    ran = _run_file(args, "shapes")
    if ran is None:
        return 2
    source, report = ran
    if args.format == "json":
        print(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        sys.stdout.write(view.annotate(source, report))
    return 1 if report.errors else 0


def run_summary_command(args: argparse.Namespace) -> int:
    from torch_lsp.shapes.summary import model_summary

    ran = _run_file(args, "summary")
    if ran is None:
        return 2
    source, report = ran
    summary = model_summary(report, source.splitlines())
    print(json.dumps(summary, indent=2) if args.format == "json" else summary["markdown"], end="\n" if args.format == "json" else "")
    return 1 if report.errors else 0


def shape_findings(files: list[tuple[Path, str, object]], settings: JobSettings = JobSettings()) -> dict[Path, list[Finding]]:
    """Shape errors of several (path, source, rule selection) files through one warm worker
    (for `torch-lsp check`)."""
    return asyncio.run(_findings(files, settings))


async def _findings(files: list[tuple[Path, str, object]], settings: JobSettings) -> dict[Path, list[Finding]]:
    from torch_lsp.analysis.plan import build_plan

    engine = ShapeEngine()
    results: dict[Path, list[Finding]] = {}
    try:
        for path, source, selection in files:
            plan = build_plan(source, str(path.resolve()))
            if plan.error:
                continue
            report: ShapeReport | None = await engine.analyse(str(path), plan, settings)
            results[path] = view.findings(report, source.splitlines(), selection) if report else []
    finally:
        await engine.close()
    return results
