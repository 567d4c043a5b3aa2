"""Where a "▶ Train" code lens goes: ``if __name__ == "__main__":`` blocks and training loops.

Pure (reads analysis facts, no LSP, no torch). A training loop is a loop whose body, helpers
included, calls ``backward()`` or an optimizer's ``step()``; only the outermost such loop gets a
lens (the epoch loop, not the batch loop inside it).
"""

from __future__ import annotations

import ast

from torch_lsp.analysis.facts import Span
from torch_lsp.analysis.syntax import ParsedModule
from torch_lsp.analysis.training import EventKind, training_facts


def is_main_guard(node: ast.AST) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    sides = [test.left, *test.comparators]
    return (len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)
            and any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))


def train_targets(parsed: ParsedModule) -> list[tuple[Span, str]]:
    """(span of the statement's first line, "main" | "loop"), in source order."""
    targets = [(node, "main") for node in parsed.tree.body if is_main_guard(node)]
    facts = training_facts(parsed)
    training_loops = {loop.node for loop in facts.loops
                      if loop.of(EventKind.BACKWARD) or loop.of(EventKind.STEP)}
    for node in training_loops:
        outer = parsed.enclosing(node, (ast.For, ast.AsyncFor, ast.While))
        while outer is not None and outer not in training_loops:
            outer = parsed.enclosing(outer, (ast.For, ast.AsyncFor, ast.While))
        if outer is None:
            targets.append((node, "loop"))
    targets.sort(key=lambda item: item[0].lineno)
    return [(_first_line(parsed, node), kind) for node, kind in targets]


def _first_line(parsed: ParsedModule, node: ast.AST) -> Span:
    span = parsed.span(node)
    line = span.start.line
    return Span.of(line, span.start.col, line, len(parsed.line_text(line)))
