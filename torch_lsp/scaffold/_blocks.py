"""Line-block edits that the actions of items 5-6 need beyond codemod.EditPlan's: delete a
statement, put statements under any compound header (`if ...:`, `def main():`), and find where
names visible to a statement are bound. All work on whole lines of the original text, so the
rest of the file is untouched; multi-line strings are never re-indented (their value would
change).
"""

from __future__ import annotations

import ast

from torch_lsp.analysis.facts import Position, Span
from torch_lsp.scaffold.codemod import CannotEdit, EditPlan, _string_continuation_lines, reindent

_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def first_line(statement: ast.stmt) -> int:
    """1-based first line of `statement`, decorators included."""
    decorators = getattr(statement, "decorator_list", None) or []
    return min([statement.lineno, *(d.lineno - 1 for d in decorators)])


def lines_span(plan: EditPlan, first: ast.stmt, last: ast.stmt | None = None) -> Span:
    """The whole lines from `first` to `last` (inclusive), newline included."""
    last = last or first
    plan._require_own_lines(first)
    plan._require_own_lines(last)
    return Span(Position(first_line(first) - 1, 0), plan._line_after(last))


def delete_statement(plan: EditPlan, statement: ast.stmt) -> None:
    plan.replace_span(lines_span(plan, statement), "")


def indented_lines(plan: EditPlan, first: ast.stmt, last: ast.stmt, levels: int = 1) -> str:
    """The original lines of `first`..`last`, `levels` deeper (string continuations untouched)."""
    keep = _string_continuation_lines(plan.parsed.source)
    out = []
    for number in range(first_line(first), (last.end_lineno or last.lineno) + 1):
        text = plan.parsed.line_text(number - 1)
        out.append(text + "\n" if number in keep or not text.strip() else plan.unit * levels + text + "\n")
    return "".join(out)


def wrap_in_block(plan: EditPlan, statements: list[ast.stmt], header: str, *, trailer: str = "") -> None:
    """Put consecutive `statements` under `<header>:` one level deeper, followed by `trailer`
    (code written at the block's indentation, e.g. a statement moved into the block)."""
    first, last = statements[0], statements[-1]
    indent = plan.parsed.indent_of(first)
    text = f"{indent}{header}:\n" + indented_lines(plan, first, last)
    if trailer:
        text += reindent(trailer, indent + plan.unit, plan.unit)
    plan.replace_span(lines_span(plan, first, last), text)


def scope_of(plan: EditPlan, node: ast.AST) -> ast.AST:
    """The function (or the module) whose local names `node` sees."""
    scope = plan.parsed.enclosing(node, _SCOPES)
    return scope if scope is not None else plan.parsed.tree


def bound_before(plan: EditPlan, name: str, statement: ast.stmt) -> bool:
    """`name` is assigned (or a parameter) in `statement`'s scope or at module level, on a line
    before `statement`: code inserted just before `statement` can use it."""
    scope = scope_of(plan, statement)
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
        params = scope.args.posonlyargs + scope.args.args + scope.args.kwonlyargs
        if any(a.arg == name for a in params):
            return True
    for node in plan.parsed.walk(kind=ast.Name):
        if node.id == name and isinstance(node.ctx, ast.Store) and node.lineno < statement.lineno \
                and scope_of(plan, node) in (scope, plan.parsed.tree):
            return True
    return False


def simple_call_statement(statement: ast.stmt, method: str) -> ast.Call | None:
    """The call of `<x>.<method>(...)` when `statement` is exactly that expression statement."""
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
        func = statement.value.func
        if isinstance(func, ast.Attribute) and func.attr == method:
            return statement.value
    return None


def require(condition: bool, why: str) -> None:
    if not condition:
        raise CannotEdit(why)
