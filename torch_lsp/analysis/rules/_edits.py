"""Small text-edit builders shared by rule fixes (insert a statement, wrap, replace)."""

from __future__ import annotations

import ast

from torch_lsp.analysis.facts import Fix, Position, Span, TextEdit
from torch_lsp.analysis.syntax import ParsedModule


def insert_statement_before(parsed: ParsedModule, statement: ast.stmt, code: str, title: str) -> Fix:
    """Insert `code` as a new line just above `statement`, at the same indentation."""
    line = statement.lineno - 1
    indent = parsed.indent_of(statement)
    at = Position(line, 0)
    return Fix(title, (TextEdit(Span(at, at), f"{indent}{code}\n"),))


def insert_statement_after(parsed: ParsedModule, statement: ast.stmt, code: str, title: str) -> Fix:
    """Insert `code` as a new line just below `statement` (after its last line)."""
    line = (statement.end_lineno or statement.lineno)
    indent = parsed.indent_of(statement)
    at = Position(line, 0)
    return Fix(title, (TextEdit(Span(at, at), f"{indent}{code}\n"),))


def replace_node(parsed: ParsedModule, node: ast.AST, new_text: str, title: str) -> Fix:
    return Fix(title, (TextEdit(parsed.span(node), new_text),))


def apply_edits(source: str, edits: tuple[TextEdit, ...] | list[TextEdit]) -> str:
    """Apply non-overlapping edits (code-point positions) to `source`; used by tests and CLI."""
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))

    def offset(pos: Position) -> int:
        if pos.line >= len(lines):
            return len(source)
        return offsets[pos.line] + min(pos.col, len(lines[pos.line]))

    result = source
    for edit in sorted(edits, key=lambda e: (e.span.start, e.span.end), reverse=True):
        start, end = offset(edit.span.start), offset(edit.span.end)
        result = result[:start] + edit.new_text + result[end:]
    return result


def add_keyword_argument(parsed: ParsedModule, call: ast.Call, keyword: str) -> TextEdit:
    """Insert `keyword` (`shuffle=True`) as the last argument of `call`, keeping its layout."""
    arguments = [*call.args, *call.keywords]
    if arguments:
        last = max(arguments, key=lambda n: (n.end_lineno or n.lineno, n.end_col_offset or 0))
        at = parsed.span(last).end
        return TextEdit(Span(at, at), f", {keyword}")
    end = parsed.span(call).end  # just past the closing parenthesis
    at = Position(end.line, max(end.col - 1, 0))
    return TextEdit(Span(at, at), keyword)


def delete_between(start: Position, end: Position) -> TextEdit:
    return TextEdit(Span(start, end), "")
