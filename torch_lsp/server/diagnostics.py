"""Publishing diagnostics: every producer's findings for the current version, in one message."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsprotocol import types

from torch_lsp.server.convert import to_diagnostic

if TYPE_CHECKING:
    from torch_lsp.server.app import TorchLanguageServer


def publish(ls: "TorchLanguageServer", uri: str) -> None:
    state = ls.documents.get(uri)
    if state is None:
        return
    lines = ls.workspace.get_text_document(uri).lines
    lines = [line.rstrip("\r\n") for line in lines]
    diagnostics = [to_diagnostic(f, lines, uri, ls.settings.docs_url, ls.position_encoding)
                   for f in state.current_findings()]
    ls.text_document_publish_diagnostics(
        types.PublishDiagnosticsParams(uri=uri, version=state.version, diagnostics=diagnostics))


def clear(ls: "TorchLanguageServer", uri: str) -> None:
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))
