"""Edits that scaffold actions compose: insert statements, add imports once, wrap in `with`,
change a call's arguments, render templates with the file's own names.

Every edit is a *minimal* text range computed from the `ast` positions of the user's code, so
the rest of the file stays byte for byte what it was; where an edit rewrites part of a
statement (a call's arguments) it goes through libcst on that expression only, which keeps the
user's formatting (trailing commas, one argument per line, comments) and costs nothing on big
files. `EditPlan.to_fix` applies the edits and parses the result: a plan that would produce
invalid Python raises `CannotEdit` instead of reaching the user.
"""

from __future__ import annotations

import ast
import io
import re
import string
import textwrap
import tokenize
from dataclasses import dataclass
from typing import TYPE_CHECKING

import libcst as cst

from torch_lsp.analysis.facts import Fix, Position, Span, TextEdit
from torch_lsp.analysis.syntax import ParsedModule

if TYPE_CHECKING:
    from torch_lsp.scaffold.context import ScaffoldContext

TEMPLATE_INDENT = "    "


class CannotEdit(Exception):
    """The action cannot be written safely here (odd layout, missing piece); offer nothing."""


# -- templates -----------------------------------------------------------------------------------
def render(template: str, **names: object) -> str:
    """`template` (dedented) with `$name` / `${name}` replaced by the file's own names.

    `string.Template` rather than str.format: generated code is full of braces (f-strings,
    dicts) and never uses `$`.
    """
    return string.Template(textwrap.dedent(template).strip("\n")).substitute({k: str(v) for k, v in names.items()}) + "\n"


def reindent(code: str, indent: str, unit: str = TEMPLATE_INDENT) -> str:
    """Put `code` (written with 4-space levels) at `indent`, converting levels to `unit`."""
    out = []
    for line in code.splitlines(keepends=True):
        if not line.strip():
            out.append("\n" if line.endswith("\n") else "")
            continue
        stripped = line.lstrip(" ")
        levels, extra = divmod(len(line) - len(stripped), len(TEMPLATE_INDENT))
        out.append(indent + unit * levels + " " * extra + stripped)
    text = "".join(out)
    return text if text.endswith("\n") else text + "\n"


def detect_indent_unit(parsed: ParsedModule) -> str:
    """The file's indentation step (4 spaces, 2 spaces, a tab), from its first indented block."""
    for node in parsed.walk(kind=(ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.For, ast.While, ast.If,
                                  ast.With)):
        body = node.body[0]
        if body.lineno == node.lineno:
            continue
        outer, inner = parsed.indent_of(node), parsed.indent_of(body)
        if inner.startswith(outer) and len(inner) > len(outer):
            return inner[len(outer):]
    return TEMPLATE_INDENT


# -- the plan ------------------------------------------------------------------------------------
@dataclass
class _Insertion:
    at: Position
    text: str


class EditPlan:
    """Edits of one action, all against the original text; `to_fix` merges and checks them."""

    def __init__(self, ctx: "ScaffoldContext"):
        self.ctx = ctx
        self.parsed = ctx.parsed
        self.unit = detect_indent_unit(ctx.parsed)
        self._insertions: list[_Insertion] = []
        self._replacements: list[TextEdit] = []
        self._imports_added: set[str] = set()
        self.notes: dict[str, object] = {}  # shared state between helpers of one build

    # -- statements -------------------------------------------------------------------------
    def insert_before(self, statement: ast.stmt, code: str, *, above_comments: bool = False) -> None:
        """`code` on new lines just above `statement`, at its indentation.

        With `above_comments`, above the comment lines that introduce the statement too (a new
        function goes before `# train the model`, not between it and the loop).
        """
        self._require_own_lines(statement)
        first = self._introduced_at(statement) if above_comments else _first_line(statement)
        self._insert(Position(first - 1, 0), reindent(code, self.parsed.indent_of(statement), self.unit))

    def insert_definition_before(self, statement: ast.stmt, code: str) -> None:
        """A function or class definition above `statement` and the comments introducing it,
        with the two blank lines around it that PEP 8 asks for."""
        self._require_own_lines(statement)
        first = self._introduced_at(statement)
        blanks = 0
        while first - 2 - blanks >= 0 and not self.parsed.line_text(first - 2 - blanks).strip():
            blanks += 1
        prefix = "\n" * (2 - blanks) if blanks < 2 and first - 1 - blanks > 0 else ""
        text = reindent(code, self.parsed.indent_of(statement), self.unit).rstrip("\n") + "\n\n\n"
        self._insert(Position(first - 1, 0), prefix + text)

    def _introduced_at(self, statement: ast.stmt) -> int:
        """1-based first line of `statement` including the comment lines right above it."""
        first, indent = _first_line(statement), self.parsed.indent_of(statement)
        while first > 1 and self.parsed.line_text(first - 2).startswith(indent + "#"):
            first -= 1
        return first

    def insert_after(self, statement: ast.stmt, code: str) -> None:
        """`code` on new lines just below `statement` (after its last line), same indentation."""
        self._require_own_lines(statement)
        self._insert(self._line_after(statement), reindent(code, self.parsed.indent_of(statement), self.unit))

    def insert_at_body_start(self, compound: ast.stmt, code: str) -> None:
        """`code` as the first statements of `compound`'s body (after a docstring)."""
        body = compound.body
        first = body[1] if _is_docstring(body[0]) and len(body) > 1 else body[0]
        if first is body[0] and _is_docstring(first):
            self.insert_after(first, code)
        else:
            self.insert_before(first, code)

    def insert_at_body_end(self, compound: ast.stmt, code: str) -> None:
        """`code` as the last statements of `compound`'s body (before any else/except)."""
        self.insert_after(compound.body[-1], code)

    def append_to_module(self, code: str) -> None:
        """`code` at module level, at the end of the file but before a trailing `__main__` guard."""
        body = self.parsed.tree.body
        guard = body[-1] if body and _is_main_guard(body[-1]) else None
        if guard is not None:
            self._insert(Position(_first_line(guard) - 1, 0), reindent(code, "", self.unit) + "\n\n")
        elif body:
            self._insert(self._line_after(body[-1]), "\n" + reindent(code, "", self.unit))
        else:
            self._insert(Position(0, 0), reindent(code, "", self.unit))

    def wrap_in_with(self, statements: list[ast.stmt], header: str) -> None:
        """Put consecutive `statements` under `with <header>:`, one level deeper.

        Lines that continue a multi-line string are left alone: re-indenting them would change
        the string's value.
        """
        first, last = statements[0], statements[-1]
        for statement in (first, last):
            self._require_own_lines(statement)
        start, end = _first_line(first), last.end_lineno or last.lineno
        keep = _string_continuation_lines(self.parsed.source)
        indent = self.parsed.indent_of(first)
        lines = [f"{indent}with {header}:\n"]
        for number in range(start, end + 1):
            text = self.parsed.line_text(number - 1)
            lines.append(text + "\n" if number in keep or not text.strip() else f"{self.unit}{text}\n")
        self.replace_span(Span(Position(start - 1, 0), self._line_after(last)), "".join(lines))

    # -- expressions ------------------------------------------------------------------------
    def replace_node(self, node: ast.AST, text: str) -> None:
        self.replace_span(self.parsed.span(node), text)

    def replace_span(self, span: Span, text: str) -> None:
        self._replacements.append(TextEdit(span, text))

    def set_keyword(self, call: ast.Call, name: str, value: str) -> None:
        """Give `call` the keyword argument `name=value` (replacing an existing value).

        Rewritten with libcst on the call alone so that a multi-line call with a trailing comma
        gets the new argument on its own line, like its neighbours.
        """
        tree = cst.parse_expression(self.parsed.code(call))
        if not isinstance(tree, cst.Call):
            raise CannotEdit("not a call")
        self.replace_node(call, cst.Module([]).code_for_node(_with_keyword(tree, name, cst.parse_expression(value))))

    # -- imports ----------------------------------------------------------------------------
    def reference(self, qualified: str, module: str | None = None) -> str:
        """How this file can name `qualified` (`torch.optim.lr_scheduler.StepLR`).

        Uses the file's imports (`optim.lr_scheduler.StepLR` under `import torch.optim as
        optim`, `StepLR` under `from torch.optim.lr_scheduler import StepLR`); when none reaches
        it, adds `import <module>` once (default: the top-level package) and spells it out.
        """
        needed = module or qualified.split(".")[0]
        best: tuple[int, str] | None = None
        for local, target in self.parsed.imports.items():
            reaches = qualified == target or qualified.startswith(target + ".")
            imported = target == needed or target.startswith(needed + ".")
            if reaches and imported and (best is None or len(target) > best[0]):
                best = (len(target), local + qualified[len(target):])
        if best is not None:
            return best[1]
        self.add_import(f"import {needed}")
        return qualified

    def module_reference(self, qualified: str, module: str | None = None) -> str:
        """How this file names the module that holds `qualified` (`os` for `os.environ`, `optim`
        for `torch.optim.SGD` under `import torch.optim as optim`): `reference` without the
        last name."""
        return self.reference(qualified, module).rsplit(".", 1)[0]

    def add_import(self, statement: str) -> None:
        """Add an import line once, after the file's last top-level import."""
        if statement in self._imports_added or _has_import(self.parsed, statement):
            return
        self._imports_added.add(statement)
        self._insert(self._import_position(), statement + "\n")

    def _import_position(self) -> Position:
        body = self.parsed.tree.body
        limit = self.ctx.import_limit
        last_import = None
        for node in body:
            if limit is not None and node.lineno > limit:
                break
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                last_import = node
            elif not _is_docstring(node):
                break
        if last_import is not None:
            return self._line_after(last_import)
        if body and _is_docstring(body[0]):
            return self._line_after(body[0])
        return Position(0, 0)

    # -- result -----------------------------------------------------------------------------
    def to_fix(self, title: str) -> Fix | None:
        edits = self.edits()
        if not edits:
            return None
        result = apply_text_edits(self.parsed.source, edits)
        try:
            ast.parse(result)
        except SyntaxError as error:
            raise CannotEdit(f"the edit would not parse: {error}") from error
        return Fix(title, tuple(edits), preferred=False)

    def edits(self) -> list[TextEdit]:
        """Insertions at one position become one edit, in the order they were planned."""
        merged: dict[Position, list[str]] = {}
        for insertion in self._insertions:
            merged.setdefault(insertion.at, []).append(insertion.text)
        edits = [TextEdit(Span(at, at), "".join(texts)) for at, texts in merged.items()]
        for replacement in self._replacements:
            before = merged.pop(replacement.span.start, None) if replacement.span.start != replacement.span.end else None
            if before:
                edits = [e for e in edits if e.span != Span(replacement.span.start, replacement.span.start)]
                replacement = TextEdit(replacement.span, "".join(before) + replacement.new_text)
            edits.append(replacement)
        edits.sort(key=lambda e: (e.span.start, e.span.end))
        for previous, following in zip(edits, edits[1:]):
            if following.span.start < previous.span.end:
                raise CannotEdit("two edits of one action overlap")
        return edits

    # -- positions --------------------------------------------------------------------------
    def _insert(self, at: Position, text: str) -> None:
        self._insertions.append(_Insertion(at, text))

    def _line_after(self, statement: ast.stmt) -> Position:
        end = statement.end_lineno or statement.lineno
        if end >= len(self.parsed.lines) and not self.parsed.source.endswith("\n"):
            # No newline at the end of the file: start the insertion with one.
            self._insert(Position(end - 1, len(self.parsed.lines[end - 1])), "\n")
            return Position(end - 1, len(self.parsed.lines[end - 1]))
        return Position(end, 0)

    def _require_own_lines(self, statement: ast.stmt) -> None:
        """Line-based edits need the statement to start and end its lines (`a; b` does not)."""
        first = _first_line(statement)
        head = self.parsed.line_text(first - 1)
        start_col = statement.col_offset if first == statement.lineno else len(head) - len(head.lstrip())
        end_line = self.parsed.line_text((statement.end_lineno or statement.lineno) - 1)
        tail = end_line.encode("utf-8")[statement.end_col_offset or 0:].decode("utf-8", "ignore")
        if head[:start_col].strip() or tail.split("#", 1)[0].strip():
            raise CannotEdit("statement shares its line with another")


def apply_text_edits(source: str, edits: list[TextEdit] | tuple[TextEdit, ...]) -> str:
    """Apply edits whose positions all refer to `source` (as an editor does)."""
    starts = [0]
    for match in re.finditer("\n", source):
        starts.append(match.end())

    def offset(pos: Position) -> int:
        return len(source) if pos.line >= len(starts) else min(starts[pos.line] + pos.col, len(source))

    result = source
    for edit in sorted(edits, key=lambda e: (offset(e.span.start), offset(e.span.end)), reverse=True):
        result = result[: offset(edit.span.start)] + edit.new_text + result[offset(edit.span.end):]
    return result


# -- helpers -------------------------------------------------------------------------------------
def _first_line(statement: ast.stmt) -> int:
    decorators = getattr(statement, "decorator_list", None)
    return min([statement.lineno, *(d.lineno - 1 for d in decorators)]) if decorators else statement.lineno


def _is_docstring(node: ast.stmt) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    parts = [node.test.left, *node.test.comparators]
    return any(isinstance(p, ast.Name) and p.id == "__name__" for p in parts) and any(
        isinstance(p, ast.Constant) and p.value == "__main__" for p in parts)


def _has_import(parsed: ParsedModule, statement: str) -> bool:
    wanted = ast.dump(ast.parse(statement).body[0])
    return any(ast.dump(node) == wanted for node in parsed.tree.body if isinstance(node, (ast.Import, ast.ImportFrom)))


def _string_continuation_lines(source: str) -> set[int]:
    """1-based numbers of lines that continue a multi-line string token (not its first line)."""
    lines: set[int] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.STRING and token.end[0] > token.start[0]:
                lines.update(range(token.start[0] + 1, token.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):
        pass
    return lines


def _with_keyword(call: cst.Call, name: str, value: cst.BaseExpression) -> cst.Call:
    args = list(call.args)
    for index, arg in enumerate(args):
        if arg.keyword is not None and arg.keyword.value == name:
            args[index] = arg.with_changes(value=value)
            return call.with_changes(args=args)
    new = cst.Arg(value=value, keyword=cst.Name(name),
                  equal=cst.AssignEqual(whitespace_before=cst.SimpleWhitespace(""),
                                        whitespace_after=cst.SimpleWhitespace("")))
    if not args:
        return call.with_changes(args=[new])
    last = args[-1]
    if isinstance(last.comma, cst.Comma):
        # Trailing comma: the new argument takes it over (and the layout after it); the old last
        # argument gets the separator its neighbours use.
        if len(args) > 1 and isinstance(args[-2].comma, cst.Comma):
            separator = args[-2].comma
        elif isinstance(call.whitespace_before_args, cst.ParenthesizedWhitespace):  # `f(\n    a,\n)`
            separator = cst.Comma(whitespace_after=call.whitespace_before_args)
        else:
            separator = cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
        args[-1] = last.with_changes(comma=separator)
        new = new.with_changes(comma=last.comma)
    else:
        args[-1] = last.with_changes(comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" ")))
    return call.with_changes(args=[*args, new])
