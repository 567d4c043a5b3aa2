"""`torch-lsp memory FILE` and the `torch-lsp.memory` command: a training step's peak GPU memory,
per phase and per layer, and the largest batch that fits (no torch: jobs run in the worker).

The step is measured by the shape run itself (the memory observer); the batch limit comes from
the same run at other batch sizes (`options["batch_size"]`), see memory_fit.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from torch_lsp.shapes import memory_fit, memory_view
from torch_lsp.shapes.observers import COST

if TYPE_CHECKING:
    from torch_lsp.shapes.report import ShapeReport
    from torch_lsp.shapes.session import ShapeSession


def local_gpu_memory_gib() -> float | None:
    """The first visible GPU's memory (nvidia-smi), None without one. Never imports torch: the
    server must not, and asking CUDA in the worker's warm parent breaks its forks."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        found = subprocess.run([smi, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                               capture_output=True, text=True, timeout=10)
        return int(found.stdout.split()[0]) / 1024 if found.returncode == 0 and found.stdout.split() else None
    except (OSError, subprocess.SubprocessError, ValueError):
        return None


async def analyse(session: "ShapeSession", path: str, text: str, *, batch: int | None = None,
                  capacity_gib: float | None = None, open_documents: dict | None = None,
                  depth: int = memory_view.DEFAULT_DEPTH, place: Callable[[int], str] | None = None) -> dict:
    """{memory, search, capacityGib, markdown} for the file at its own batch (or `batch`).
    `place(line)` names a 0-based line of `text` (a notebook's program: `cell 7:2`)."""
    from torch_lsp.shapes.session import RunRequest

    reports: dict[int | None, "ShapeReport"] = {}
    why_not = ["the file could not run"]

    async def run_at(size: int | None) -> dict | None:
        size = batch if size is None else size
        request = RunRequest(path=path, text=text, key=f"{path}#memory@{size}", observers=COST,
                             open_documents=open_documents or {}, options={"batch_size": size} if size else {})
        spec = session.job_spec(request)
        if isinstance(spec, str):  # e.g. a syntax error
            why_not[0] = spec
            return None
        found = await session.engine.run(spec)
        report = (found or {}).get(path)
        if report is None:
            return None
        reports.setdefault(size, report)
        return report.extras.get("memory")

    search = None
    if capacity_gib is not None:
        search = await memory_fit.search_async(run_at, memory_fit.usable_bytes(capacity_gib))
        search["capacity_gib"] = capacity_gib
    else:
        await run_at(None)
    report = reports.get(batch) or next(iter(reports.values()), None)
    extras = report.extras if report is not None else {}
    memory = extras.get("memory")
    markdown = memory_view.render(memory, extras.get("modules"), extras.get("flops"), search, capacity_gib, depth,
                                  stopped=report.stopped if report is not None else why_not[0])
    if batch and memory and memory.get("batch") != batch:
        markdown += (f"\n--batch {batch} had no effect: the batch ({memory.get('batch')}) is built in the file, "
                     "not by a DataLoader.\n")
    if report is not None and report.errors:
        markdown += "".join(f"\n**{e.code}** ({_where(e.range.line, place)}): {e.message}\n" for e in report.errors)
    return {"memory": _one_based(memory, place), "search": search, "capacityGib": capacity_gib, "markdown": markdown}


def _where(line: int, place: Callable[[int], str] | None) -> str:
    return place(line) if place else f"line {line + 1}"


def _one_based(memory: dict | None, place: Callable[[int], str] | None = None) -> dict | None:
    """Lines in JSON output are 1-based, as in the text (the report's are 0-based); in a
    notebook, `place` names the loop's cell too (`"place": "cell 7:2"`)."""
    if not memory or not memory.get("line"):
        return memory
    where = dict(memory["line"])
    if place and isinstance(where.get("line"), int):
        where["place"] = place(where["line"])
    for key in ("line", "end_line", "backward_line"):
        if isinstance(where.get(key), int):
            where[key] += 1
    return {**memory, "line": where}


# The command line --------------------------------------------------------------------------------


def add_subcommand(sub: argparse._SubParsersAction, add_run_options) -> None:
    parser = sub.add_parser(
        "memory", help="a training step's peak GPU memory, per layer, and the largest batch that fits",
        description="Run FILE like `torch-lsp shapes` does (on meta: no GPU needed) and print the peak memory of "
                    "one training step (forward, loss, backward, optimizer step) split into weights, gradients, "
                    "optimizer state and activations, per layer, and the largest batch whose step fits in the "
                    "GPU's memory (--gpu-memory, setting shapes.gpuMemoryGb, or the local GPU's).")
    add_run_options(parser)
    parser.add_argument("--batch", type=_positive, help="measure at this batch size (default: the file's own)")
    parser.add_argument("--gpu-memory", type=float, metavar="GIB",
                        help="GPU memory in GiB (nvidia-smi's MiB / 1024), e.g. 80 for an 80 GB A100/H100")
    parser.add_argument("--depth", type=_positive, default=memory_view.DEFAULT_DEPTH,
                        help=f"layers nested this deep in the per-layer table (default {memory_view.DEFAULT_DEPTH})")
    parser.set_defaults(handler=run_memory_command)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def run_memory_command(args: argparse.Namespace) -> int:
    from torch_lsp.shapes.command import overrides, read_source, session_for

    text = read_source(args.file, "memory")
    if text is None:
        return 2
    place = None
    if args.file.suffix == ".ipynb":  # its code cells, in order, as one program (like `shapes`)
        from torch_lsp.analysis.notebook import NotebookFile, NotebookFormatError

        try:
            notebook = NotebookFile.read(text)
        except NotebookFormatError as error:
            print(f"torch-lsp memory: {args.file}: {error}", file=sys.stderr)
            return 2
        text, place = notebook.program.source, notebook.place_label
    session = session_for(args.file, overrides(args))
    capacity = args.gpu_memory or session.settings_provider().shapes.gpu_memory_gb or local_gpu_memory_gib()
    result = asyncio.run(_analyse_and_close(session, Path(args.file).resolve(), text, args, capacity, place))
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        sys.stdout.write(result["markdown"])
    return 0 if result["memory"] else 1


async def _analyse_and_close(session, path: Path, text: str, args, capacity, place) -> dict:
    try:
        return await analyse(session, str(path), text, batch=args.batch, capacity_gib=capacity, depth=args.depth,
                             place=place)
    finally:
        await session.close()
