"""Load a project file for its definitions only: what a synthesized-call job needs (stdlib only).

A job that only synthesizes calls (shapes/probe_jobs.py) needs the file's classes, and what
they refer to: imports, functions, constants, config classes. It does not need the script
around them, and must not be stopped by it: a data file that is not there, a vocabulary a
package's `__init__` reads, an optional dependency that is not installed. So every project
module such a job imports is compiled from its plan with each top-level statement made
independent:

- a statement that raises is skipped, with a note naming its file, line and error (the rest of
  the file still defines its classes; a class that needed what failed says so when it is built);
- what only computes is not run: top-level `for` / `while` loops (training, sampling), the
  `if __name__ == "__main__":` block, and calls of the file's own functions (`main()`).

Lines and columns are kept (the statements are the plan's own nodes), so shapes recorded in the
file map straight back to it. The driver job never uses this: it runs the file as written.
"""

from __future__ import annotations

import ast
import os

MAX_NOTES = 3  # skipped statements noted per job (the first ones say enough)


def compile_definitions(source: str, filename: str):
    """Code for `source` (a plan's text) with top-level statements made independent."""
    tree = ast.parse(source, filename)
    own_functions = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    body: list[ast.stmt] = []
    for index, statement in enumerate(tree.body):
        if _keeps_as_is(statement, index):
            body.append(statement)
        elif not _only_computes(statement, own_functions):
            body.append(_guarded(statement))
    tree.body = body
    return compile(tree, filename, "exec", dont_inherit=True)


def _keeps_as_is(statement: ast.stmt, index: int) -> bool:
    """`from __future__` imports must stay first; the docstring stays the module's docstring."""
    if isinstance(statement, ast.ImportFrom) and statement.module == "__future__":
        return True
    return index == 0 and isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant) \
        and isinstance(statement.value.value, str)


def _only_computes(statement: ast.stmt, own_functions: set[str]) -> bool:
    if isinstance(statement, (ast.For, ast.AsyncFor, ast.While)):
        return True
    if isinstance(statement, ast.If) and _is_main_guard(statement.test):
        return True
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
        func = statement.value.func
        return isinstance(func, ast.Name) and func.id in own_functions
    return False


def _is_main_guard(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides) and \
        any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)


def _guarded(statement: ast.stmt) -> ast.stmt:
    """try: <statement> / except (Exception, SystemExit) as e: skipped(__file__, line, e)"""
    line = statement.lineno
    handler_code = ast.parse(
        "try:\n    pass\n"
        "except (Exception, SystemExit) as _torch_lsp_error:\n"
        "    __import__('torch_lsp.shapes.definitions', fromlist=['skipped'])"
        f".skipped(globals().get('__file__'), {line - 1}, _torch_lsp_error)\n").body[0]
    handler_code.body = [statement]
    for node in ast.walk(handler_code.handlers[0]):
        if hasattr(node, "lineno"):
            node.lineno = node.end_lineno = line
            node.col_offset, node.end_col_offset = 0, 0
    ast.copy_location(handler_code, statement)
    handler_code.end_lineno, handler_code.end_col_offset = statement.end_lineno, statement.end_col_offset
    return handler_code


def skipped(filename: str | None, line: int, error: BaseException) -> None:
    """A top-level statement failed while loading for synthesized calls: say so, go on."""
    from torch_lsp.shapes import context

    job = context.current()
    if job is None or sum(n.kind == "skipped" for notes in job.notes.values() for n in notes) >= MAX_NOTES:
        return
    where = f"{os.path.basename(filename)} line {line + 1}" if filename else f"line {line + 1}"
    text = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
    message = (f"{where} was skipped while the file was loaded for synthesized calls: "
               f"{type(error).__name__}{': ' + text if text else ''}")
    recorded = filename in job.spec.recorded if filename else False
    job.note(message, filename if recorded else None, line if recorded else None, kind="skipped")
