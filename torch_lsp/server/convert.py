"""Facts <-> lsprotocol types. Analysis columns are code points; LSP's are UTF-16 units by
default, so every conversion goes through the line's text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from lsprotocol import types

from torch_lsp.analysis.facts import Finding, Position, Span, TextEdit


def _utf16_len(text: str) -> int:
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def to_lsp_position(pos: Position, lines: list[str], encoding: str = "utf-16") -> types.Position:
    line = min(max(pos.line, 0), max(len(lines), 0))
    text = lines[line] if line < len(lines) else ""
    col = min(max(pos.col, 0), len(text))
    if encoding == "utf-16":
        col = _utf16_len(text[:col])
    elif encoding == "utf-8":
        col = len(text[:col].encode("utf-8"))
    return types.Position(line=line, character=col)


def from_lsp_position(pos: types.Position, lines: list[str], encoding: str = "utf-16") -> Position:
    """Client position -> code points, clamped to the document (positions past the end are legal)."""
    line = min(max(pos.line, 0), max(len(lines) - 1, 0))
    text = lines[line] if line < len(lines) else ""
    if pos.line >= len(lines):
        return Position(line, len(text))
    if encoding == "utf-32":
        return Position(line, min(pos.character, len(text)))
    units = 0
    for index, ch in enumerate(text):
        if units >= pos.character:
            return Position(line, index)
        units += (len(ch.encode("utf-8")) if encoding == "utf-8" else (2 if ord(ch) > 0xFFFF else 1))
    return Position(line, len(text))


def to_lsp_range(span: Span, lines: list[str], encoding: str = "utf-16") -> types.Range:
    return types.Range(start=to_lsp_position(span.start, lines, encoding), end=to_lsp_position(span.end, lines, encoding))


def from_lsp_range(rng: types.Range, lines: list[str], encoding: str = "utf-16") -> Span:
    return Span(from_lsp_position(rng.start, lines, encoding), from_lsp_position(rng.end, lines, encoding))


# Where a span of the analysed program lies: (document URI, that document's lines, the span in
# it), or None. For a file that is the file itself; for a notebook, one of its cells.
Locate = Callable[[Span], "tuple[str, list[str], Span] | None"]


def to_diagnostic(finding: Finding, lines: list[str], uri: str, docs_url: str, encoding: str = "utf-16",
                  locate_related: Locate | None = None, lines_of_path=None) -> types.Diagnostic:
    """`finding` (its span in `uri`'s coordinates) as a diagnostic of `uri`. Its related places
    are spans of the analysed program: `locate_related` says where they lie (default: `uri`);
    those in other files (`finding.related_elsewhere`) are placed with `lines_of_path(path) ->
    (uri, lines)`."""
    locate = locate_related or (lambda span: (uri, lines, span))
    related = []
    for span, message in finding.related:
        place = locate(span)
        if place is not None:
            related.append(types.DiagnosticRelatedInformation(
                location=types.Location(uri=place[0], range=to_lsp_range(place[2], place[1], encoding)), message=message))
    for path, span, message in finding.related_elsewhere if lines_of_path is not None else ():
        other_uri, other_lines = lines_of_path(path)
        related.append(types.DiagnosticRelatedInformation(
            location=types.Location(uri=other_uri, range=to_lsp_range(span, other_lines, encoding)), message=message))
    return types.Diagnostic(
        range=to_lsp_range(finding.span, lines, encoding),
        message=finding.message,
        severity=types.DiagnosticSeverity(int(finding.severity)),
        code=finding.code,
        code_description=types.CodeDescription(href=f"{docs_url}#{finding.code.lower()}"),
        source="torch-lsp",
        related_information=related or None,
    )


@dataclass(frozen=True)
class DocumentEdits:
    """Edits (code-point positions) of one document, made against its `version`."""

    uri: str
    version: int | None
    lines: list[str]
    edits: Sequence[TextEdit]


def to_workspace_edit(documents: Sequence[DocumentEdits], encoding: str = "utf-16") -> types.WorkspaceEdit:
    """Versioned document changes: a client must refuse the edit if a buffer moved on."""
    return types.WorkspaceEdit(document_changes=[
        types.TextDocumentEdit(
            text_document=types.OptionalVersionedTextDocumentIdentifier(uri=document.uri, version=document.version),
            edits=[types.TextEdit(range=to_lsp_range(e.span, document.lines, encoding), new_text=e.new_text)
                   for e in document.edits])
        for document in documents
    ])
