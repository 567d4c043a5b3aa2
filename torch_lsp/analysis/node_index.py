"""All nodes of a parsed module by type, in source order, built in one pass and shared.

Rules and facts ask "every call", "every assignment", "every loop (inside this function)"
many times per file; each full walk of a 5,000-line module costs ~30 ms, so they ask this
index instead. A subtree is a contiguous run of the pre-order numbering, so "inside `within`"
is a range test.
"""

from __future__ import annotations

import ast
import bisect
import weakref
from typing import Iterator, TypeVar

from torch_lsp.analysis.syntax import ParsedModule

N = TypeVar("N", bound=ast.AST)
_SINGLETONS = (ast.expr_context, ast.operator, ast.boolop, ast.cmpop, ast.unaryop)


class _Index:
    def __init__(self, parsed: ParsedModule):
        self.by_type: dict[type, tuple[list[int], list[ast.AST]]] = {}
        self.selections: dict[tuple[type, ...], list[tuple[list[int], list[ast.AST]]]] = {}
        self.order: dict[int, tuple[int, int]] = {}  # id(node) -> (pre-order number, last descendant's)
        children = _children(parsed)
        counter = 0
        stack: list[tuple[ast.AST, bool]] = [(parsed.tree, False)]
        while stack:
            node, done = stack.pop()
            if done:
                start = self.order[id(node)][0]
                self.order[id(node)] = (start, counter - 1)
                continue
            self.order[id(node)] = (counter, counter)
            orders, members = self.by_type.setdefault(type(node), ([], []))
            orders.append(counter)
            members.append(node)
            counter += 1
            stack.append((node, True))
            stack.extend((child, False) for child in reversed(children.get(node, ())))
        self.size = counter


def _children(parsed: ParsedModule) -> dict[ast.AST, list[ast.AST]]:
    """Children in field order, read from the parent links the parse already built (asking
    `ast.iter_child_nodes` again would double the cost of the index). Contexts (Load) and
    operators (Add, Eq, And, Not) are shared singletons in CPython's ast: they have no
    identity, hence no place in the order, and are never indexed."""
    children: dict[ast.AST, list[ast.AST]] = {}
    parents = getattr(parsed, "_parents", None)
    if parents is None:  # another syntax layer: walk the tree ourselves
        for node in ast.walk(parsed.tree):
            children[node] = [c for c in ast.iter_child_nodes(node) if not isinstance(c, _SINGLETONS)]
        return children
    # Parent links were recorded parent by parent, each parent's children in field order.
    for child, parent in parents.items():
        if not isinstance(child, _SINGLETONS):
            children.setdefault(parent, []).append(child)
    return children


_INDEXES: "weakref.WeakKeyDictionary[ParsedModule, _Index]" = weakref.WeakKeyDictionary()


def _index(parsed: ParsedModule) -> _Index:
    index = _INDEXES.get(parsed)
    if index is None:
        index = _INDEXES[parsed] = _Index(parsed)
    return index


def nodes(parsed: ParsedModule, kind: type[N] | tuple[type, ...], within: ast.AST | None = None) -> Iterator[N]:
    """Nodes of `kind` (or subclasses) in source order; with `within`, only that subtree's
    (`within` itself included)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    index = _index(parsed)
    if within is not None and id(within) not in index.order:
        return iter(())  # a node built by analysis code: not part of this tree
    low, high = index.order[id(within)] if within is not None else (0, index.size)
    runs: list[tuple[list[int], list[ast.AST], int, int]] = []
    selected = index.selections.get(kinds)
    if selected is None:
        selected = index.selections[kinds] = [entry for t, entry in index.by_type.items() if issubclass(t, kinds)]
    for orders, members in selected:
        first, last = bisect.bisect_left(orders, low), bisect.bisect_right(orders, high)
        if first < last:
            runs.append((orders, members, first, last))
    if len(runs) == 1:
        _, members, first, last = runs[0]
        return iter(members[first:last])
    # Concatenate and sort: Timsort merges sorted runs in linear time, faster than heapq here.
    pairs = [pair for orders, members, first, last in runs for pair in zip(orders[first:last], members[first:last])]
    pairs.sort(key=_first)
    return (node for _, node in pairs)


def _first(pair: tuple[int, ast.AST]) -> int:
    return pair[0]


def contains(parsed: ParsedModule, node: ast.AST) -> bool:
    """Is `node` part of this module's tree (not a node built by analysis code)?"""
    return id(node) in _index(parsed).order


def inside(parsed: ParsedModule, node: ast.AST, within: ast.AST) -> bool:
    """Is `node` in the subtree of `within` (itself included)? A range test, no tree walk."""
    order = _index(parsed).order
    if id(node) not in order or id(within) not in order:
        return False
    low, high = order[id(within)]
    return low <= order[id(node)][0] <= high
