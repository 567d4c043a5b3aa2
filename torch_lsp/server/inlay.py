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
    if not ls.settings.inlay_hints.enabled:
        return []
    if uri in ls.documents:
        labels = _file_labels(ls, uri, requested)
    else:  # a notebook cell (or nothing we know)
        labels = ls.notebook_shapes.inlay_labels(uri, requested.start.line, requested.end.line)
    hints = []
    for label, lines in labels:
        position = to_lsp_position(label.position, lines, ls.position_encoding)
        if (position.line, position.character) > (requested.end.line, requested.end.character):
            continue  # on the range's last line, but after its end
        hints.append(types.InlayHint(position=position, label=label.label, kind=types.InlayHintKind.Type,
                                     padding_left=True, tooltip=label.tooltip))
    return hints


def _file_labels(ls: "TorchLanguageServer", uri: str, requested: types.Range) -> list[tuple[view.InlayLabel, list[str]]]:
    report = ls.shapes.current(uri)  # the latest report, moved through the edits since its version
    if report is None:
        return []
    lines = lines_of(ls, uri)
    return [(label, lines) for label in view.inlay_labels(report, lines, requested.start.line, requested.end.line)]


def register(ls: "TorchLanguageServer") -> None:
    @ls.feature(types.TEXT_DOCUMENT_INLAY_HINT, types.InlayHintOptions(resolve_provider=False))
    def inlay_hint(ls, params: types.InlayHintParams):
        ls.on_screen.asked(params.text_document.uri)
        return inlay_hints(ls, params.text_document.uri, params.range)
