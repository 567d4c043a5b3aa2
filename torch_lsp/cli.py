"""Command line: `torch-lsp serve | check | ...`. Each subcommand is a thin shell over the same
analysis the server runs, so CI and the editor always agree."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from torch_lsp import __version__

SEVERITY_NAMES = {1: "error", 2: "warning", 3: "info", 4: "hint"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `serve` is on the editor's start-up path: the other subcommands' modules (shape engine,
    # scaffold, training) cost ~0.3 s to import and the server does not need them there.
    parser = build_parser(with_extensions=argv[:1] != ["serve"])
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:
        return 130


def build_parser(with_extensions: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torch-lsp", description="A language server for PyTorch code.")
    parser.add_argument("--version", action="version", version=f"torch-lsp {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the language server (stdio by default)",
                           description="Run the language server. Editors start it as `torch-lsp serve`.")
    serve.add_argument("--stdio", action="store_true", help="talk LSP over stdin/stdout (the default)")
    serve.add_argument("--tcp", metavar="HOST:PORT", help="listen on a TCP socket instead of stdio")
    serve.add_argument("--log-file", type=Path, help="write the server log to this file (default: stderr)")
    serve.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.set_defaults(handler=_serve)

    check = sub.add_parser("check", help="report findings for files or folders (like ruff check)",
                           description="Run torch-lsp's analysis on files or folders and print the findings. "
                                       "Exit status 1 when a finding at or above --fail-on severity is reported.")
    check.add_argument("paths", nargs="+", type=Path, help="Python files or folders (searched recursively)")
    check.add_argument("--format", choices=["text", "json"], default="text")
    check.add_argument("--select", help="comma-separated rule codes or prefixes to enable (overrides configuration)")
    check.add_argument("--ignore", help="comma-separated rule codes or prefixes to disable (overrides configuration)")
    check.add_argument("--fail-on", choices=["error", "warning", "info"], default="error",
                       help="lowest severity that makes the exit status 1 (default: error)")
    check.add_argument("--no-shapes", action="store_true",
                       help="do not run code to find shape errors (see docs/shapes.md); static rules only")
    check.set_defaults(handler=_check)

    for extend in _extensions() if with_extensions else ():
        extend(sub)
    return parser


def _extensions():
    """Subcommands contributed by other packages of torch-lsp (shapes, training)."""
    from torch_lsp.scaffold.command import add_subcommand as scaffold_actions
    from torch_lsp.shapes.command import add_subcommand as add_shapes
    from torch_lsp.training.cli_commands import add_parsers as training_commands

    return [scaffold_actions, add_shapes, training_commands]


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(filename=args.log_file, level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.tcp:
        from torch_lsp.server.app import create_server

        host, _, port = args.tcp.rpartition(":")
        create_server().start_tcp(host or "127.0.0.1", int(port))
    else:
        from torch_lsp.server.fast_start import serve_stdio

        serve_stdio()
    return 0


def iter_python_files(paths: list[Path]):
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.py") if not any(part.startswith(".") for part in p.parts))
        else:
            yield path


def _check(args: argparse.Namespace) -> int:
    from torch_lsp import config
    from torch_lsp.analysis.check import analyze_source

    overrides: dict = {}
    if args.select:
        overrides.setdefault("rules", {})["select"] = [c.strip() for c in args.select.split(",") if c.strip()]
    if args.ignore:
        overrides.setdefault("rules", {})["ignore"] = [c.strip() for c in args.ignore.split(",") if c.strip()]
    threshold = {"error": 1, "warning": 2, "info": 3}[args.fail_on]
    results, failed, settings_cache, to_run = [], False, {}, []
    for path in iter_python_files(args.paths):
        if not path.exists():
            print(f"torch-lsp: {path}: no such file or directory", file=sys.stderr)
            failed = True
            continue
        folder = path.parent.resolve()
        if folder not in settings_cache:
            merged = config.load_for_path(path, overrides)
            for warning in merged.warnings:
                print(warning, file=sys.stderr)
            settings_cache[folder] = merged.settings
        settings = settings_cache[folder]
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            print(f"torch-lsp: {path}: cannot read: {error}", file=sys.stderr)
            continue
        analysis = analyze_source(source, str(path), settings.rule_selection())
        if analysis.failure is not None:
            f = analysis.failure
            print(f"{path}:{f.line + 1}:{f.col + 1}: syntax error: {f.message} (not analysed)", file=sys.stderr)
            continue
        for finding in analysis.findings:
            results.append((path, finding))
            failed |= int(finding.severity) <= threshold
        if settings.execution.enabled and not args.no_shapes:
            to_run.append((path, source, settings))
    for path, finding in _shape_findings(to_run):
        results.append((path, finding))
        failed |= int(finding.severity) <= threshold
    _print_findings(results, args.format)
    return 1 if failed else 0


def _shape_findings(files) -> list:
    """Shape errors (TL2xx) of the files, by running them on the meta device (docs/shapes.md)."""
    if not files:
        return []
    from torch_lsp.shapes.command import shape_findings
    from torch_lsp.shapes.engine import JobSettings

    execution = files[0][2].execution
    found = shape_findings([(path, source, settings.rule_selection()) for path, source, settings in files],
                           JobSettings(execution.device, execution.timeout, execution.memory_mb))
    return [(path, finding) for path, _, _ in files for finding in found.get(path, [])]


def _print_findings(results, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps([{
            "path": str(path), "line": f.span.start.line + 1, "column": f.span.start.col + 1,
            "endLine": f.span.end.line + 1, "endColumn": f.span.end.col + 1, "code": f.code,
            "severity": SEVERITY_NAMES[int(f.severity)], "message": f.message,
            "fix": None if f.fix is None else {"title": f.fix.title, "edits": [
                {"start": [e.span.start.line + 1, e.span.start.col + 1], "end": [e.span.end.line + 1, e.span.end.col + 1],
                 "newText": e.new_text} for e in f.fix.edits]},
        } for path, f in results], indent=2))
        return
    for path, f in results:
        print(f"{path}:{f.span.start.line + 1}:{f.span.start.col + 1}: {f.code} {f.message}")
    if results:
        fixable = sum(1 for _, f in results if f.fix is not None)
        print(f"Found {len(results)} finding{'s' * (len(results) != 1)} ({fixable} with a quick fix in the editor).")
    else:
        print("All checks passed.")
