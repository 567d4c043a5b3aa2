"""``torch-lsp train | runs | metrics``: the training commands for the terminal.

cli.py calls ``add_parsers(subparsers)``; each subcommand sets ``handler(args) -> exit status``.
The same runner, store and summary code serve the language server.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from torch_lsp.training import store
from torch_lsp.training.runner import RunSpec, TrainingRun, run_overview, start_run, summary_for
from torch_lsp.training.summary import progress_message, render_markdown


def add_parsers(subparsers) -> None:
    add_train_parser(subparsers)
    add_runs_parser(subparsers)
    add_metrics_parser(subparsers)


def _runs_dir_option(parser) -> None:
    parser.add_argument("--runs-dir", help="run store (default: training.runsDir from pyproject.toml, "
                                           "else .torch-lsp/runs in the current folder)")


def add_train_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="run a training script with live progress and metrics",
        description="Run SCRIPT unchanged under torch-lsp's launcher: live progress, metrics, "
                    "a summary at the end. Arguments after -- go to the script.")
    parser.add_argument("script")
    parser.add_argument("script_args", nargs=argparse.REMAINDER,
                        help="the script's arguments, after -- when they look like options")
    parser.add_argument("--python", help="interpreter to run the script (default: this one)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (sets CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--nproc", type=int, default=1, help="processes per node (>1: torchrun)")
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--node-rank", type=int)
    parser.add_argument("--rdzv-endpoint", help="host:port of the rendezvous (multi-node)")
    parser.add_argument("--rdzv-id", help="job id shared by all nodes (default: torch-lsp)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    _runs_dir_option(parser)
    parser.set_defaults(handler=train_command, train_parser=parser)


def add_runs_parser(subparsers) -> None:
    parser = subparsers.add_parser("runs", help="list training runs, newest first")
    parser.add_argument("--json", action="store_true")
    _runs_dir_option(parser)
    parser.set_defaults(handler=runs_command)


def add_metrics_parser(subparsers) -> None:
    parser = subparsers.add_parser("metrics", help="summary of a training run (default: the latest)")
    parser.add_argument("run", nargs="?", help="run id or a unique prefix of one")
    parser.add_argument("--json", action="store_true")
    _runs_dir_option(parser)
    parser.set_defaults(handler=metrics_command)


def _training_settings():
    """`[tool.torch-lsp.training]` of the nearest pyproject.toml (python, runsDir)."""
    from torch_lsp import config

    merged = config.load_for_path(Path.cwd())
    for warning in merged.warnings:
        print(warning, file=sys.stderr)
    return merged.settings.training


def _runs_dir(args) -> Path:
    if args.runs_dir:
        return store.runs_dir_for(os.getcwd(), args.runs_dir)
    return store.runs_dir_for(os.getcwd(), _training_settings().runs_dir)


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env expects KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def train_command(args) -> int:
    script_args = list(args.script_args)
    if "--" in script_args:
        # `train SCRIPT --json -- --epochs 3`: what stands before "--" is ours, after is the script's.
        split = script_args.index("--")
        ours, script_args = script_args[:split], script_args[split + 1:]
        if ours:
            args.train_parser.parse_args([*ours, args.script], namespace=args)
    try:
        spec = RunSpec(
            script=args.script, args=script_args, python=args.python or _training_settings().python,
            device=args.device,
            nproc=args.nproc, nnodes=args.nnodes, node_rank=args.node_rank,
            rdzv_endpoint=args.rdzv_endpoint, rdzv_id=args.rdzv_id, env=_parse_env(args.env),
            max_steps=args.max_steps, cwd=os.getcwd(),
        )
        run = start_run(spec, _runs_dir(args))
    except (OSError, ValueError) as exc:
        print(f"torch-lsp train: {exc}", file=sys.stderr)
        return 2
    print(f"run {run.run_id}  ({run.record.path})", file=sys.stderr)
    summary = follow(run, show_progress=not args.no_progress)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(render_markdown(summary))
        if summary.get("chart"):
            print(f"chart: {summary['chart']}")
    if summary.get("status") == "stopped":
        return 130
    exit_code = summary.get("exit_code")
    return exit_code if isinstance(exit_code, int) and exit_code >= 0 else 1


def follow(run: TrainingRun, show_progress: bool = True) -> dict:
    """Echo the script's output and a tqdm bar until the run ends; Ctrl-C stops the run."""
    from tqdm import tqdm

    bar = tqdm(total=None, unit="step", disable=not show_progress, file=sys.stderr,
               dynamic_ncols=True, leave=True)
    try:
        while True:
            try:
                for event in run.poll():
                    _show(event, bar, run.spec.max_steps)
                if run.finished:
                    return run.summary
                time.sleep(0.1)
            except KeyboardInterrupt:
                bar.write("stopping the run (Ctrl-C) ...", file=sys.stderr)
                run.stop()
    finally:
        bar.close()


def _show(event: tuple, bar, max_steps: int | None) -> None:
    kind = event[0]
    if kind == "output":
        bar.write(event[2], file=sys.stderr if event[1] == "stderr" else sys.stdout)
    elif kind == "record" and event[1].get("kind") == "step":
        record = event[1]
        total = max_steps or ((record.get("epochs") or 0) * (record.get("batches") or 0)) or None
        if total and bar.total != total:
            bar.total = total
        message, _ = progress_message(record, max_steps)
        bar.set_postfix_str(message.split(" · ", 2)[-1] if " · " in message else message,
                            refresh=False)
        if record.get("epoch"):
            bar.set_description(message.split(" · ")[0], refresh=False)
        bar.update(max(0, (record.get("step") or 0) - bar.n))


def runs_command(args) -> int:
    runs = store.list_runs(_runs_dir(args))
    rows = [run_overview(run) for run in runs]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no runs in {_runs_dir(args)}")
        return 0
    print(f"{'run':<44} {'status':<11} {'steps':>7} {'final loss':>11}  when")
    for row in rows:
        loss = f"{row['finalLoss']:.4g}" if isinstance(row["finalLoss"], (int, float)) else "—"
        print(f"{row['id']:<44} {row['status']:<11} {row['steps'] or 0:>7} {loss:>11}  {row['label']}")
    return 0


def metrics_command(args) -> int:
    run = store.find_run(_runs_dir(args), args.run)
    if run is None:
        what = f"run {args.run!r}" if args.run else "any run"
        print(f"torch-lsp metrics: no {what} in {_runs_dir(args)}", file=sys.stderr)
        return 1
    summary = summary_for(run)
    print(json.dumps(summary, indent=2) if args.json else render_markdown(summary))
    if not args.json and summary.get("chart"):
        print(f"chart: {summary['chart']}")
    return 0
