"""Facts <-> lsprotocol types. Analysis columns are code points; LSP's are UTF-16 units by
default, so every conversion goes through the line's text."""

from __future__ import annotations

from lsprotocol import types

from torch_lsp.analysis.facts import Finding, Fix, Position, Span


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


def to_diagnostic(finding: Finding, lines: list[str], uri: str, docs_url: str, encoding: str = "utf-16") -> types.Diagnostic:
    return types.Diagnostic(
        range=to_lsp_range(finding.span, lines, encoding),
        message=finding.message,
        severity=types.DiagnosticSeverity(int(finding.severity)),
        code=finding.code,
        code_description=types.CodeDescription(href=f"{docs_url}#{finding.code.lower()}"),
        source="torch-lsp",
        related_information=[
            types.DiagnosticRelatedInformation(
                location=types.Location(uri=uri, range=to_lsp_range(span, lines, encoding)), message=message)
            for span, message in finding.related
        ] or None,
    )


def to_workspace_edit(fix: Fix, uri: str, version: int | None, lines: list[str], encoding: str = "utf-16") -> types.WorkspaceEdit:
    """Versioned document changes: a client must refuse the edit if the buffer moved on."""
    edits = [types.TextEdit(range=to_lsp_range(e.span, lines, encoding), new_text=e.new_text) for e in fix.edits]
    return types.WorkspaceEdit(document_changes=[
        types.TextDocumentEdit(text_document=types.OptionalVersionedTextDocumentIdentifier(uri=uri, version=version),
                               edits=edits)
    ])
