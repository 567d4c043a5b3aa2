"""FLOPs and memory in the editor: hover on module calls and training loops, code lenses above
module classes and training loops, and the `torch-lsp.memory` / `torch-lsp.summary` commands.

Everything here reads the latest shape report (`report.extras`, filled by the cost observers in
the worker); only `torch-lsp.memory` with a batch search runs jobs of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.uris import from_fs_path

from torch_lsp.analysis.facts import Position, Span
from torch_lsp.server.convert import to_lsp_range
from torch_lsp.shapes import cost_view

if TYPE_CHECKING:
    from torch_lsp.server.app import TorchLanguageServer
    from torch_lsp.server.shapes import DocumentShapes
    from torch_lsp.shapes.report import ShapeReport

log = logging.getLogger(__name__)

SUMMARY, MEMORY = "torch-lsp.summary", "torch-lsp.memory"


def _path(ls: "TorchLanguageServer", uri: str) -> str:
    return ls.workspace.get_text_document(uri).path or uri


# hover -------------------------------------------------------------------------------------------


def hover_parts(report: "ShapeReport", pos: Position, path: str | None) -> list[str]:
    """`conv1: 0.35 GFLOP fwd / 0.70 bwd at B = 8` on a module call; the step's memory on the
    line that starts the training loop. `path`: the program the position is in."""
    parts = []
    flops = cost_view.flops_hover(report, pos.line, pos.col, path)
    if flops:
        parts.append(flops)
    memory = report.extras.get("memory")
    where = (memory or {}).get("line") or {}
    if where.get("file") == path and where.get("line") == pos.line:
        text = cost_view.memory_hover(memory)
        if text:
            parts.append(text)
    return parts


# code lenses -------------------------------------------------------------------------------------


def code_lenses(ls: "TorchLanguageServer", uri: str, parsed, shapes: "DocumentShapes | None") -> list[types.CodeLens]:
    """Above each module class that ran: its parameters and shapes; above the training loop: the
    step's memory. Only on lines the report still describes (it may be a version behind)."""
    if shapes is None:
        return []
    from torch_lsp.analysis.modules import module_facts

    report = shapes.report
    lines = parsed.lines
    path = _path(ls, uri)
    rows = (report.extras.get("modules") or {}).get("rows", [])
    lenses = []
    for cls in module_facts(parsed).classes.values():
        row = next((r for r in rows if r["class"] == cls.name and r.get("defined_in") == path and not r["repeat"]), None)
        line = cls.node.lineno - 1
        if row is not None and shapes.matches(lines, line):
            forward_line = cls.forward.lineno - 1 if cls.forward is not None else None
            title = cost_view.class_lens_title(row, report, forward_line, _returned(cls.forward))
            lenses.append(_lens(line, lines, ls, title, SUMMARY, [uri, {"show": True}]))
    memory = report.extras.get("memory") or {}
    where = memory.get("line") or {}
    title, line = cost_view.memory_title(memory), where.get("line")
    if title and where.get("file") == path and isinstance(line, int) and line >= 0 and shapes.matches(lines, line):
        lenses.append(_lens(line, lines, ls, title, MEMORY, [uri, {"show": True}]))
    return lenses


def _returned(forward) -> tuple[int, int, str | None] | None:
    """Forward's last `return` value: (0-based line, column, the name when it is a bare name)."""
    import ast

    returns = [node for node in ast.walk(forward) if isinstance(node, ast.Return) and node.value is not None] \
        if forward is not None else []
    if not returns:
        return None
    last = max(returns, key=lambda node: (node.lineno, node.col_offset)).value
    return last.lineno - 1, last.col_offset, last.id if isinstance(last, ast.Name) else None


def _lens(line: int, lines: list[str], ls, title: str, command: str, arguments: list) -> types.CodeLens:
    text = lines[line] if line < len(lines) else ""
    start = len(text) - len(text.lstrip())
    span = Span(Position(line, start), Position(line, len(text)))
    return types.CodeLens(range=to_lsp_range(span, lines, ls.position_encoding),
                          command=types.Command(title=title, command=command, arguments=arguments))


# commands ----------------------------------------------------------------------------------------


def options_of(arguments: tuple) -> dict:
    return next((a for a in arguments[1:] if isinstance(a, dict)), {})


async def memory_command(ls: "TorchLanguageServer", arguments: tuple) -> dict:
    """`[uri, {batch?, gpuMemoryGb?, depth?, show?}]` -> {markdown, memory, search, capacityGib}."""
    from torch_lsp.shapes import memory_command as memory

    uri = arguments[0] if arguments and isinstance(arguments[0], str) else None
    # A notebook (its URI or a cell's) is measured as its program, like its shapes.
    notebook = ls.notebook_shapes.notebook_of(uri) if uri and uri not in ls.documents else None
    if uri is None or (uri not in ls.documents and (notebook is None or notebook.program is None)):
        return {"markdown": "Open the file first: the memory comes from its shape analysis.", "memory": None}
    service = ls.shapes
    if not ls.settings.execution.enabled or service.session is None:
        return {"markdown": "Shape analysis is off (execution.enabled = false): no memory estimate.", "memory": None}
    options = options_of(arguments)
    capacity = _number(options.get("gpuMemoryGb")) or ls.settings.shapes.gpu_memory_gb
    if capacity is None:
        capacity = await asyncio.to_thread(memory.local_gpu_memory_gib)
    if notebook is not None:
        path, text, place = notebook.path, notebook.program.source, ls.notebook_shapes.place_label(notebook)
    else:
        path, text, place = _path(ls, uri), ls.workspace.get_text_document(uri).source, None
    result = await memory.analyse(
        service.session, path, text, batch=_positive(options.get("batch")),
        capacity_gib=capacity, open_documents=service._open_documents(uri),
        depth=_positive(options.get("depth")) or memory.memory_view.DEFAULT_DEPTH, place=place)
    if options.get("show"):
        await show_markdown(ls, "memory", uri, result["markdown"])
    return result


async def show_markdown(ls: "TorchLanguageServer", kind: str, uri: str, markdown: str) -> None:
    """What a code lens opens: the Markdown in a read-only document beside the code (clients
    that cannot show documents get it in the log and a message)."""
    window = ls.client_capabilities.window
    if window and window.show_document and window.show_document.support:
        folder = Path(tempfile.gettempdir()) / "torch-lsp"
        folder.mkdir(exist_ok=True)
        name = Path(_path(ls, uri)).stem
        target = folder / f"{name}.{kind}.{hashlib.sha1(uri.encode()).hexdigest()[:8]}.md"
        target.write_text(markdown, encoding="utf-8")
        try:
            await ls.window_show_document_async(types.ShowDocumentParams(uri=from_fs_path(str(target)),
                                                                         take_focus=False))
            return
        except Exception as error:  # noqa: BLE001 - fall back to the log
            log.info("window/showDocument failed: %s", error)
    ls.window_log_message(types.LogMessageParams(type=types.MessageType.Info, message=markdown))
    first = next((line.strip("*") for line in markdown.splitlines() if line.strip()), kind)
    ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Info,
                                                   message=f"{first} (the full table is in the log)"))


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


def register(ls: "TorchLanguageServer") -> None:
    @ls.command(MEMORY)
    async def memory(ls, *arguments):  # no annotations: pygls passes the raw JSON
        return await memory_command(ls, arguments)
