"""Statement-level edits for rule fixes: find the block a statement lives in, move a statement
within its block, wrap a statement in a `with`, and name `torch` the way the file imports it.

All edits are plain text edits on whole lines, so the rest of the file keeps its formatting
byte for byte; a fix is offered only when the statement sits alone on its lines (no `;`,
nothing after it but a comment) and nothing would change inside a multi-line string.
"""

from __future__ import annotations

import ast
import functools

from torch_lsp.analysis.facts import Fix, Position, Span, TextEdit
from torch_lsp.analysis.node_index import nodes
from torch_lsp.analysis.syntax import ParsedModule

_BODY_FIELDS = ("body", "orelse", "finalbody", "handlers")


def block_of(parsed: ParsedModule, statement: ast.AST) -> list[ast.stmt] | None:
    """The statement list (a body, else-branch, ...) that holds `statement`."""
    parent = parsed.parent(statement)
    if parent is None:
        return None
    for name in _BODY_FIELDS:
        block = getattr(parent, name, None)
        if isinstance(block, list) and any(s is statement for s in block):
            return block
    return None


def statement_of(parsed: ParsedModule, node: ast.AST) -> ast.stmt | None:
    """The innermost statement that contains `node` (itself, if it is one)."""
    current: ast.AST | None = node
    while current is not None and not isinstance(current, ast.stmt):
        current = parsed.parent(current)
    return current


def statement_in(parsed: ParsedModule, node: ast.AST, block: list[ast.stmt]) -> ast.stmt | None:
    """The statement of `block` that is `node` or contains it."""
    members = {id(s) for s in block}
    current: ast.AST | None = node
    while current is not None and id(current) not in members:
        current = parsed.parent(current)
    return current


def alone_on_its_lines(parsed: ParsedModule, statement: ast.stmt) -> bool:
    first = parsed.line_text(statement.lineno - 1)
    span = parsed.span(statement)
    if first[: span.start.col].strip():
        return False
    rest = parsed.line_text(span.end.line)[span.end.col:].strip()
    return not rest or rest.startswith("#")


def _lines_of(parsed: ParsedModule, statement: ast.stmt) -> tuple[int, int]:
    """First and last line (0-based) of `statement`, including decorators."""
    first = min([statement.lineno] + [d.lineno for d in getattr(statement, "decorator_list", [])]) - 1
    return first, (statement.end_lineno or statement.lineno) - 1


def _reindented(parsed: ParsedModule, statement: ast.stmt, indent: str) -> str:
    first, last = _lines_of(parsed, statement)
    old = parsed.indent_of(statement)
    lines = []
    for number in range(first, last + 1):
        text = parsed.line_text(number)
        lines.append(indent + text[len(old):] if text.startswith(old) else text)
    return "".join(line + "\n" for line in lines)


def _delete_lines(parsed: ParsedModule, statement: ast.stmt) -> TextEdit:
    first, last = _lines_of(parsed, statement)
    return TextEdit(Span(Position(first, 0), Position(last + 1, 0)), "")


def move_statement(parsed: ParsedModule, statement: ast.stmt, target: ast.stmt, title: str, *,
                   after: bool = False) -> Fix | None:
    """Move `statement` just before (or after) `target`, taking `target`'s indentation."""
    if statement is target or not alone_on_its_lines(parsed, statement) or _has_multiline_string(parsed, statement) or (
        not alone_on_its_lines(parsed, target)
    ):
        return None
    first, last = _lines_of(parsed, target)
    line = last + 1 if after else first
    moved = _reindented(parsed, statement, parsed.indent_of(target))
    at = Position(line, 0)
    return Fix(title, (_delete_lines(parsed, statement), TextEdit(Span(at, at), moved)))


def insert_before(parsed: ParsedModule, target: ast.stmt, code: str) -> TextEdit | None:
    """A new line above `target`, same indentation (None when `target` shares its line)."""
    if not alone_on_its_lines(parsed, target):
        return None
    at = Position(_lines_of(parsed, target)[0], 0)
    return TextEdit(Span(at, at), f"{parsed.indent_of(target)}{code}\n")


def insert_after(parsed: ParsedModule, target: ast.stmt, code: str) -> TextEdit | None:
    if not alone_on_its_lines(parsed, target):
        return None
    at = Position(_lines_of(parsed, target)[1] + 1, 0)
    return TextEdit(Span(at, at), f"{parsed.indent_of(target)}{code}\n")


def fix_of(title: str, *edits: TextEdit | None) -> Fix | None:
    """A fix from edits that could all be made, else None."""
    if not edits or any(edit is None for edit in edits):
        return None
    return Fix(title, tuple(edits))


def wrap_statement(parsed: ParsedModule, statement: ast.stmt, header: str, title: str,
                   extra: tuple[TextEdit, ...] = ()) -> Fix | None:
    """Put `statement` inside `header:` (e.g. `with torch.no_grad():`), indenting its lines."""
    if not alone_on_its_lines(parsed, statement) or _has_multiline_string(parsed, statement):
        return None
    first, last = _lines_of(parsed, statement)
    indent = parsed.indent_of(statement)
    unit = _indent_unit(parsed)
    header_edit = insert_before(parsed, statement, header)
    if header_edit is None:
        return None
    edits = [header_edit]
    for number in range(first, last + 1):
        if parsed.line_text(number).strip():
            at = Position(number, len(indent))
            edits.append(TextEdit(Span(at, at), unit))
    return Fix(title, tuple(edits) + extra)


def torch_name(parsed: ParsedModule) -> tuple[str, tuple[TextEdit, ...]]:
    """How this file names the `torch` module, and the edit that imports it if it does not."""
    for local, module in parsed.imports.items():
        if module == "torch":
            return local, ()
    imports = [n for n in parsed.tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    line = (imports[0].lineno - 1) if imports else _first_code_line(parsed)
    at = Position(line, 0)
    return "torch", (TextEdit(Span(at, at), "import torch\n"),)


def _first_code_line(parsed: ParsedModule) -> int:
    body = parsed.tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(
        body[0].value.value, str
    ):  # after the module docstring
        return body[0].end_lineno or body[0].lineno
    return 0


@functools.lru_cache(maxsize=8)
def _indent_unit(parsed: ParsedModule) -> str:
    """The file's indentation step, read from its first block (four spaces if it has none)."""
    for node in parsed.walk(kind=(ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.For, ast.While, ast.If,
                                  ast.With, ast.Try)):
        inner = parsed.indent_of(node.body[0])
        outer = parsed.indent_of(node)
        if node.body[0].lineno != node.lineno and inner.startswith(outer) and len(inner) > len(outer):
            return inner[len(outer):]
    return "    "


def _has_multiline_string(parsed: ParsedModule, statement: ast.stmt) -> bool:
    """Re-indenting lines inside a triple-quoted string would change the string."""
    return any(
        (n.end_lineno or n.lineno) != n.lineno and (isinstance(n, ast.JoinedStr) or isinstance(n.value, (str, bytes)))
        for n in nodes(parsed, (ast.Constant, ast.JoinedStr), statement)
    )


def first_statement_after_docstring(body: list[ast.stmt]) -> ast.stmt:
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(
        body[0].value.value, str
    ):
        return body[1]
    return body[0]
