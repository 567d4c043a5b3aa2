"""Publishing diagnostics: every producer's findings for the current version, in one message."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lsprotocol import types
from pygls.uris import from_fs_path

from torch_lsp.server.convert import to_diagnostic

if TYPE_CHECKING:
    from torch_lsp.server.app import TorchLanguageServer


def publish(ls: "TorchLanguageServer", uri: str) -> None:
    state = ls.documents.get(uri)
    if state is None:
        return
    lines = ls.workspace.get_text_document(uri).lines
    lines = [line.rstrip("\r\n") for line in lines]
    findings = state.current_findings()
    shapes = getattr(ls, "shapes", None)
    if shapes is not None:  # the latest shape report's, moved to this version's lines
        findings = findings + shapes.current_findings(uri)
    diagnostics = [to_diagnostic(f, lines, uri, ls.settings.docs_url, ls.position_encoding,
                                 lines_of_path=lambda p: _lines_of(ls, p))
                   for f in findings]
    ls.text_document_publish_diagnostics(
        types.PublishDiagnosticsParams(uri=uri, version=state.version, diagnostics=diagnostics))


def clear(ls: "TorchLanguageServer", uri: str) -> None:
    ls.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=uri, diagnostics=[]))


def _lines_of(ls: "TorchLanguageServer", path: str) -> tuple[str, list[str]]:
    """Another file's URI and lines (its editor buffer when open, else the disk)."""
    uri = from_fs_path(path) or path
    try:
        lines = ls.workspace.get_text_document(uri).lines
    except (OSError, UnicodeDecodeError):
        lines = []
    return uri, [line.rstrip("\r\n") for line in lines]
