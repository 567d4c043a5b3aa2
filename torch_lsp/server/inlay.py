"""Inlay hints: the shape after each tensor assignment, for the requested range only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsprotocol import types

from torch_lsp.server.convert import to_lsp_position
from torch_lsp.server.shapes import lines_of
from torch_lsp.shapes import view

if TYPE_CHECKING:
    from torch_lsp.server.app import TorchLanguageServer


def inlay_hints(ls: "TorchLanguageServer", uri: str, requested: types.Range) -> list[types.InlayHint]:
    shapes = ls.shapes.latest(uri)
    if shapes is None or not ls.settings.inlay_hints.enabled:
        return []
    lines = lines_of(ls, uri)
    hints = []
    for label in view.inlay_labels(shapes.report, lines, requested.start.line, requested.end.line):
        if not shapes.matches(lines, label.position.line):
            continue  # the line changed since the report: its shape may be wrong
        hints.append(types.InlayHint(
            position=to_lsp_position(label.position, lines, ls.position_encoding),
            label=label.label, kind=types.InlayHintKind.Type, padding_left=True,
            tooltip=label.tooltip))
    return hints


def register(ls: "TorchLanguageServer") -> None:
    @ls.feature(types.TEXT_DOCUMENT_INLAY_HINT, types.InlayHintOptions(resolve_provider=False))
    def inlay_hint(ls, params: types.InlayHintParams):
        if params.text_document.uri not in ls.documents:
            return []
        return inlay_hints(ls, params.text_document.uri, params.range)
