"""Hover: the shape under the cursor (from the latest shape report), the layer as constructed
for a module call, and the signature + first doc paragraph of the torch API (jedi, cached)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsprotocol import types

from torch_lsp.server.convert import from_lsp_position
from torch_lsp.server.shapes import lines_of
from torch_lsp.shapes import view

if TYPE_CHECKING:
    from torch_lsp.server.app import TorchLanguageServer


def hover_markdown(ls: "TorchLanguageServer", uri: str, position: types.Position) -> str | None:
    lines = lines_of(ls, uri)
    pos = from_lsp_position(position, lines, ls.position_encoding)
    parts = []
    shapes = ls.shapes.latest(uri)
    if shapes is not None and shapes.matches(lines, pos.line):
        shape_text = view.hover_text(shapes.report, lines, pos)
        if shape_text:
            parts.append(shape_text)
    word = view.word_at(lines[pos.line], pos.col) if pos.line < len(lines) else None
    if word is not None and "." in word[0] and not word[0].startswith("self."):
        doc = _api_doc(ls, uri, lines, pos, word[0], word[2], shapes)
        if doc is not None:
            parts.append(doc.markdown())
    return "\n\n---\n\n".join(parts) if parts else None


def _api_doc(ls, uri: str, lines: list[str], pos, name: str, end: int, shapes):
    base, _, method = name.rpartition(".")
    if shapes is not None and "." not in base and view.variable_at(shapes.report, lines, pos, base):
        # `x.view(...)` on a tensor the report knows: jedi cannot infer x's type, so ask about
        # torch.Tensor's method directly.
        source = f"import torch\ntorch.Tensor.{method}"
        return ls.shapes.api_docs.lookup(source, None, 1, len(source.splitlines()[1]) - 1, f"torch.Tensor.{method}")
    document = ls.workspace.get_text_document(uri)
    return ls.shapes.api_docs.lookup(document.source, document.path, pos.line, end - 1, name)


def register(ls: "TorchLanguageServer") -> None:
    @ls.feature(types.TEXT_DOCUMENT_HOVER)
    def hover(ls, params: types.HoverParams):
        if params.text_document.uri not in ls.documents:
            return None
        text = hover_markdown(ls, params.text_document.uri, params.position)
        if text is None:
            return None
        return types.Hover(contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text))
