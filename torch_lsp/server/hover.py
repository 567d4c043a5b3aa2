"""Hover: the shape under the cursor (from the latest shape report), the layer as constructed
for a module call with its FLOPs, a training loop's step memory, and the signature + first doc
paragraph of the torch API (jedi, cached)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lsprotocol import types

from torch_lsp.analysis.facts import Position
from torch_lsp.server import cost
from torch_lsp.server.convert import from_lsp_position
from torch_lsp.server.shapes import lines_of
from torch_lsp.shapes import view

if TYPE_CHECKING:
    from torch_lsp.server.app import TorchLanguageServer
    from torch_lsp.shapes.report import ShapeReport


@dataclass(frozen=True)
class HoverPlace:
    """A hover position in the analysed program: a file's own lines, or a notebook's program
    (server/notebook_shapes.py maps a cell's position into it)."""

    lines: list[str]
    pos: Position
    report: "ShapeReport | None"  # the latest report, moved to this text (edited lines dropped)
    source: str  # the program, for API lookups
    path: str | None
    # The report whose FLOPs and memory to show: a file's last one measured where the line is
    # as it was then (typed into, that is older than `report`: ShapeService.costs_at).
    costs: "ShapeReport | None"


def hover_markdown(ls: "TorchLanguageServer", uri: str, position: types.Position) -> str | None:
    place = _file_place(ls, uri, position) if uri in ls.documents else ls.notebook_shapes.place(uri, position)
    if place is None:
        return None
    lines, pos = place.lines, place.pos
    parts = []
    if place.report is not None:
        shape_text = view.hover_text(place.report, lines, pos)
        if shape_text:
            parts.append(shape_text)
    if place.costs is not None:
        parts.extend(cost.hover_parts(place.costs, pos, place.path))
    word = view.word_at(lines[pos.line], pos.col) if pos.line < len(lines) else None
    if word is not None and "." in word[0] and not word[0].startswith("self."):
        doc = _api_doc(ls, place, word[0], word[2])
        if doc is not None:
            parts.append(doc.markdown())
    return "\n\n---\n\n".join(parts) if parts else None


def _file_place(ls: "TorchLanguageServer", uri: str, position: types.Position) -> HoverPlace:
    lines = lines_of(ls, uri)
    pos = from_lsp_position(position, lines, ls.position_encoding)
    report = ls.shapes.current(uri)  # the latest report, moved through the edits since its version
    document = ls.workspace.get_text_document(uri)
    return HoverPlace(lines, pos, report, document.source, document.path, ls.shapes.costs_at(uri, lines, pos.line))


def _api_doc(ls, place: HoverPlace, name: str, end: int):
    base, _, method = name.rpartition(".")
    if place.report is not None and "." not in base and view.variable_at(place.report, place.lines, place.pos, base):
        # `x.view(...)` on a tensor the report knows: jedi cannot infer x's type, so ask about
        # torch.Tensor's method directly.
        source = f"import torch\ntorch.Tensor.{method}"
        return ls.shapes.api_docs.lookup(source, None, 1, len(source.splitlines()[1]) - 1, f"torch.Tensor.{method}")
    return ls.shapes.api_docs.lookup(place.source, place.path, place.pos.line, end - 1, name)


def register(ls: "TorchLanguageServer") -> None:
    @ls.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls, params: types.HoverParams):
        ls.on_screen.asked(params.text_document.uri)
        text = hover_markdown(ls, params.text_document.uri, params.position)
        if text is None:
            return None
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))
