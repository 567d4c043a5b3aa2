"""``torch-lsp train | runs | metrics``: the training commands for the terminal.

cli.py calls ``add_parsers(subparsers)``; each subcommand sets ``handler(args) -> exit status``.
The same runner, store and summary code serve the language server.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from torch_lsp.training import store
from torch_lsp.training.bounds import check_scale
from torch_lsp.training.runner import RunSpec, TrainingRun, run_overview, start_run, summary_for
from torch_lsp.training.summary import ago, progress_message, render_markdown


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
                    "a summary at the end. torch-lsp's options below are recognised anywhere before "
                    "--; every other argument, and everything after --, goes to the script. An option "
                    "that the script defines too must be placed before SCRIPT (torch-lsp's) or after "
                    "-- (the script's).")
    parser.add_argument("script")
    parser.add_argument("script_args", nargs=argparse.REMAINDER,
                        help="the script's arguments (after -- when torch-lsp has an option of the same name)")
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
    parser.set_defaults(handler=train_command, train_parser=parser, argv=None)


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


def _project_python(script: str) -> str:
    """The project's interpreter, as shape analysis finds it (docs/shapes.md)."""
    from pathlib import Path

    from torch_lsp.shapes.interpreter import find_interpreter
    from torch_lsp.shapes.project import find_workspace_root

    return find_interpreter(None, find_workspace_root(Path(script))).path


def train_command(args) -> int:
    from torch_lsp.training.arguments import (AmbiguousOption, option_arity, script_options_of,
                                              split_script_arguments, tokens_after_script)

    ours = option_arity(args.train_parser)
    after_script = tokens_after_script(args.argv, ours) if args.argv is not None else list(args.script_args)
    try:
        split = split_script_arguments(after_script, ours, script_options_of(args.script), args.script)
    except AmbiguousOption as exc:
        print(f"torch-lsp train: {exc}", file=sys.stderr)
        return 2
    if split.ours:  # `train SCRIPT --max-steps 50 --lr 0.1`: --max-steps is ours
        args.train_parser.parse_args([*split.ours, args.script], namespace=args)
    script_args = split.script_args
    try:
        check_scale(args.nproc, args.nnodes, args.rdzv_endpoint)
        spec = RunSpec(
            script=args.script, args=script_args, python=args.python or _training_settings().python or _project_python(args.script),
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
    print(f"script arguments: {shlex.join(script_args) if script_args else '(none)'}", file=sys.stderr)
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
            except BrokenPipeError:
                # `torch-lsp train ... | head`: the reader is gone; like any Unix writer we stop,
                # and the training with us, instead of leaving it running unseen.
                run.stop()
                run.wait()
                raise
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
    runs_dir = _runs_dir(args)
    rows = [run_overview(run) for run in store.list_runs(runs_dir)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no runs yet in {runs_dir} (start one with `torch-lsp train SCRIPT`)")
        return 0
    now = time.time()
    print(f"{'run':<44} {'status':<11} {'steps':>7} {'final loss':>11}  started")
    for row in rows:
        loss = f"{row['finalLoss']:.4g}" if isinstance(row["finalLoss"], (int, float)) else "—"
        started = ago(now - row["startedAt"]) if isinstance(row["startedAt"], (int, float)) else "—"
        print(f"{row['id']:<44} {row['status']:<11} {row['steps'] or 0:>7} {loss:>11}  {started}")
    return 0


def metrics_command(args) -> int:
    runs_dir = _runs_dir(args)
    try:
        run = store.find_run(runs_dir, args.run)
    except store.AmbiguousRunId as ambiguous:
        print(f"torch-lsp metrics: {ambiguous.prefix!r} matches {len(ambiguous.candidates)} runs; "
              "give more of the id:", file=sys.stderr)
        width = max(len(candidate.run_id) for candidate in ambiguous.candidates)
        for candidate in ambiguous.candidates:
            info = candidate.info
            print(f"  {candidate.run_id:<{width}}  {info.get('status', '?'):<10} "
                  f"{Path(info.get('script') or '?').name}", file=sys.stderr)
        return 1
    if run is None:
        hint = "`torch-lsp runs` lists them" if store.list_runs(runs_dir) else "no runs yet"
        what = f"no run {args.run!r} in {runs_dir} ({hint})" if args.run else f"no runs yet in {runs_dir}"
        print(f"torch-lsp metrics: {what}", file=sys.stderr)
        return 1
    summary = summary_for(run)
    print(json.dumps(summary, indent=2) if args.json else render_markdown(summary))
    if not args.json and summary.get("chart"):
        print(f"chart: {summary['chart']}")
    return 0
