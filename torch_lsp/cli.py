"""Command line: `torch-lsp serve | check | ...`. Each subcommand is a thin shell over the same
analysis the server runs, so CI and the editor always agree."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from torch_lsp import __version__, check_command

# Exit statuses of a Unix tool stopped by a signal: 128 + the signal's number.
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C)
EXIT_BROKEN_PIPE = 141  # SIGPIPE: the reader went away (`torch-lsp metrics | head`)


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. Ctrl-C and a closed output pipe end the command quietly, with the
    exit status a shell expects, never with a traceback."""
    try:
        status = _dispatch(sys.argv[1:] if argv is None else argv)
        if not sys.stdout.closed:  # `serve` closes it when the client goes away
            sys.stdout.flush()  # a pipe closed early shows here when the output was small
        return status
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that flushing it at interpreter exit cannot fail again
    (the recipe of Python's own documentation on SIGPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _dispatch(argv: list[str]) -> int:
    # `serve` is on the editor's start-up path: the other subcommands' modules (shape engine,
    # scaffold, training) cost ~0.3 s to import and the server does not need them there.
    parser = build_parser(with_extensions=argv[:1] != ["serve"])
    args = parser.parse_args(argv)
    if hasattr(args, "argv"):  # subcommands that need the words as typed (train: where `--` was)
        args.argv = list(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    return args.handler(args) or 0


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
    serve.add_argument("--check-sandbox", action="store_true",
                       help="print how shape jobs are isolated on this system (a sandboxed fork tries every "
                            "way out and the result is checked), then exit; status 1 if anything got out")
    serve.set_defaults(handler=_serve)

    check_command.add_subcommand(sub)
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
    if args.check_sandbox:
        from torch_lsp.shapes.sandbox.check import main as check_sandbox

        return check_sandbox([])
    _without_openssl()
    logging.basicConfig(filename=args.log_file, level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.tcp:
        from torch_lsp.server.app import create_server

        host, _, port = args.tcp.rpartition(":")
        server = create_server()
        server.start_tcp(host or "127.0.0.1", int(port))
        server.finish()
    else:
        from torch_lsp.server.fast_start import serve_stdio

        serve_stdio()
    return 0


def _without_openssl() -> None:
    """Keep OpenSSL out of the server process: ~4.5 MiB of its ~77 MiB resident memory.

    The server speaks LSP over stdio or plain TCP and opens no other connection (the analysis
    never does). Only asyncio's TLS support (`ssl`) and hashlib's OpenSSL backend (`_hashlib`)
    would load it. Marked absent before anything imports them, asyncio takes the path it takes
    on a Python built without ssl, and hashlib serves its algorithms from Python's own
    implementations (the server hashes with blake2b, the fastest of those). Training runs, the
    shape worker and the API-docs helper are processes of their own, with their own imports."""
    for name in ("ssl", "_hashlib"):
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]  # None: "not importable"
