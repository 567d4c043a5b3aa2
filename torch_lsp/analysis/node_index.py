"""All nodes of a parsed module by type, in source order, with parent links: built in one pass
at parse time and shared by every rule and fact.

Rules and facts ask "every call", "every assignment", "every loop (inside this function)"
many times per file; each full walk of a 5,000-line module costs ~30 ms, so they ask this
index instead. Nodes are numbered in pre-order, so a subtree is a contiguous run of numbers and
"inside `within`" is a range test.

Each top-level statement owns its own block of numbers (`STRIDE` apart): replacing one
statement renumbers only that statement, which is what incremental analysis
(analysis/incremental.py) relies on to reuse the index of everything else.
"""

from __future__ import annotations

import ast
import bisect
import sys
from typing import TYPE_CHECKING, Iterator, TypeVar

if TYPE_CHECKING:
    from torch_lsp.analysis.syntax import ParsedModule

N = TypeVar("N", bound=ast.AST)
# Contexts (Load) and operators (Add, Eq, And, Not) are shared singletons in CPython's ast: they
# have no identity, hence no parent and no place in the order, and are never indexed.
_SINGLETONS = (ast.expr_context, ast.operator, ast.boolop, ast.cmpop, ast.unaryop)
_SINGLETON_FIELDS = frozenset(("ctx", "op", "ops"))
# Fields that never hold nodes (names, constants, flags): skipped without a look.
_SCALAR_FIELDS = frozenset(("id", "attr", "name", "arg", "asname", "module", "level", "kind", "type_comment",
                            "is_async", "conversion", "tag", "n", "s"))
STRIDE = 1 << 32  # numbers reserved per top-level statement
END = 1 << 62  # the module's range covers every statement's
_FIELDS: dict[type, tuple[str, ...]] = {}


def _node_fields(cls: type) -> tuple[str, ...]:
    fields = _FIELDS.get(cls)
    if fields is None:
        skipped = _SINGLETON_FIELDS | _SCALAR_FIELDS
        fields = tuple(f for f in cls._fields if f not in skipped and not (cls is ast.Constant and f == "value"))
        _FIELDS[cls] = fields
    return fields


class NodeIndex:
    """Pre-order numbers, parent links and nodes by type for one tree (or a part of one)."""

    def __init__(self) -> None:
        self.start: dict[int, int] = {}  # id(node) -> its pre-order number
        self.end: dict[int, int] = {}  # id(node) -> the number of its last descendant
        self.parents: dict[ast.AST, ast.AST] = {}
        self.by_type: dict[type, tuple[list[int], list[ast.AST]]] = {}
        self.selections: dict[tuple[type, ...], list[tuple[list[int], list[ast.AST]]]] = {}
        self.imports: list[tuple[int, int, ast.AST]] = []  # (depth, number, node): ast.walk's order
        # Every node in pre-order, for small subtrees: slicing once and filtering beats a
        # bisection in each of the ~25 lists a kind like `ast.stmt` selects.
        self.numbers: list[int] = []
        self.all: list[ast.AST] = []

    def add(self, node: ast.AST, first: int, depth: int = 0) -> int:
        """Number `node`'s subtree from `first` on; returns the next free number."""
        start, end, parents, by_type, imports = self.start, self.end, self.parents, self.by_type, self.imports
        numbers, every = self.numbers, self.all
        counter = first
        AST, Import, ImportFrom = ast.AST, ast.Import, ast.ImportFrom

        def visit(node: ast.AST, depth: int) -> None:
            nonlocal counter
            number = counter
            counter += 1
            key = id(node)
            start[key] = number
            cls = type(node)
            entry = by_type.get(cls)
            if entry is None:
                entry = by_type[cls] = ([], [])
            entry[0].append(number)
            entry[1].append(node)
            numbers.append(number)
            every.append(node)
            if cls is Import or cls is ImportFrom:
                imports.append((depth, number, node))
            values = node.__dict__
            for name in _FIELDS.get(cls) or _node_fields(cls):
                value = values.get(name)
                if value is None:
                    continue
                if value.__class__ is list:
                    for child in value:
                        if isinstance(child, AST):
                            parents[child] = node
                            visit(child, depth + 1)
                elif isinstance(value, AST):
                    parents[value] = node
                    visit(value, depth + 1)
            end[key] = counter - 1

        visit(node, depth)
        # `visit` refers to itself through its closure: a cycle that would keep the index's
        # dicts, and with them the whole tree, alive until a full collection.
        del visit
        return counter

    def statement_range(self, statement: ast.AST) -> tuple[int, int]:
        return self.start[id(statement)], self.end[id(statement)]


def build(tree: ast.Module) -> NodeIndex:
    """The index of a whole module: the module is number 0, statement k starts at (k+1)*STRIDE."""
    index = NodeIndex()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))  # deeply nested expressions the parser accepted
    try:
        index.start[id(tree)] = 0
        index.end[id(tree)] = END
        index.by_type[ast.Module] = ([0], [tree])
        index.numbers.append(0)
        index.all.append(tree)
        for number, statement in enumerate(tree.body, start=1):
            index.parents[statement] = tree
            index.add(statement, number * STRIDE, depth=1)
        for ignore in tree.type_ignores:
            index.parents[ignore] = tree
            index.add(ignore, (len(tree.body) + 1) * STRIDE, depth=1)
    finally:
        sys.setrecursionlimit(limit)
    return index


def breadth_first(parsed: "ParsedModule", found) -> list[ast.AST]:
    """Index results (source order) in the order `ast.walk` meets them: shallower first (where a
    later match overrides an earlier one, or the first few are kept)."""
    return sorted(found, key=lambda node: sum(1 for _ in parsed.ancestors(node)))


def nodes(parsed: "ParsedModule", kind: type[N] | tuple[type, ...], within: ast.AST | None = None) -> Iterator[N]:
    """Nodes of `kind` (or subclasses) in source order; with `within`, only that subtree's
    (`within` itself included). On a focused module (analysis/incremental.py) the whole-module
    enumeration covers the focused statements only; `within` always reaches the whole tree."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    index: NodeIndex = parsed.index
    selected = index.selections.get(kinds)
    if selected is None:
        selected = index.selections[kinds] = [entry for t, entry in index.by_type.items() if issubclass(t, kinds)]
    if within is not None:
        low = index.start.get(id(within))
        if low is None:
            return iter(())  # a node built by analysis code: not part of this tree
        high = index.end[id(within)]
        if high - low < 16 * len(selected):  # a small subtree: one slice of every node, filtered
            first = bisect.bisect_left(index.numbers, low)
            return (n for n in index.all[first:first + high - low + 1] if isinstance(n, kinds))
        ranges = ((low, high),)
    else:
        ranges = parsed.focus_ranges or ((0, END),)
    runs: list[tuple[list[int], list[ast.AST], int, int]] = []
    for low, high in ranges:
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


def contains(parsed: "ParsedModule", node: ast.AST) -> bool:
    """Is `node` part of this module's tree (not a node built by analysis code)?"""
    return id(node) in parsed.index.start


def inside(parsed: "ParsedModule", node: ast.AST, within: ast.AST) -> bool:
    """Is `node` in the subtree of `within` (itself included)? A range test, no tree walk."""
    index = parsed.index
    number, low = index.start.get(id(node)), index.start.get(id(within))
    if number is None or low is None:
        return False
    return low <= number <= index.end[id(within)]


# -- incremental updates (analysis/incremental.py) ---------------------------------------------
_POSITIONED = {cls for cls in vars(ast).values() if isinstance(cls, type) and issubclass(cls, ast.AST)
               and "lineno" in getattr(cls, "_attributes", ())}


def replace_statements(index: NodeIndex, old_tree: ast.Module, new_tree: ast.Module, first: int, last: int,
                       added: list[ast.stmt]) -> list[ast.AST] | None:
    """Update `index` in place from `old_tree` to `new_tree`, whose body is `old_tree.body` with
    statements first..last (inclusive; none when last < first) replaced by `added`. Returns the
    removed nodes, or None when the numbers between the neighbours ran out (rebuild then)."""
    old_body = old_tree.body
    previous_end = index.end[id(old_body[first - 1])] if first > 0 else 0
    next_start = index.start[id(old_body[last + 1])] if last + 1 < len(old_body) else END
    step = (next_start - previous_end) // (len(added) + 1)
    sizes = [sum(1 for _ in ast.walk(statement)) for statement in added]
    if any(size >= step for size in sizes):
        return None
    # Out with the old statements' nodes.
    numbers, every = index.numbers, index.all
    if last >= first:
        low, high = index.start[id(old_body[first])], index.end[id(old_body[last])]
        lo, hi = bisect.bisect_left(numbers, low), bisect.bisect_right(numbers, high)
        removed = every[lo:hi]
        del numbers[lo:hi], every[lo:hi]
        for orders, members in index.by_type.values():
            a, b = bisect.bisect_left(orders, low), bisect.bisect_right(orders, high)
            if a < b:
                del orders[a:b], members[a:b]
        start, end, parents = index.start, index.end, index.parents
        for node in removed:
            key = id(node)
            del start[key], end[key]
            parents.pop(node, None)
        if any(isinstance(node, (ast.Import, ast.ImportFrom)) for node in removed):
            gone = {id(node) for node in removed}
            index.imports = [entry for entry in index.imports if id(entry[2]) not in gone]
    else:
        removed = []
    # In with the new ones, numbered evenly between the neighbours.
    fresh = NodeIndex()
    for number, statement in enumerate(added, start=1):
        fresh.parents[statement] = new_tree
        fresh.add(statement, previous_end + number * step, depth=1)
    at = bisect.bisect_left(numbers, previous_end + 1)
    numbers[at:at] = fresh.numbers
    every[at:at] = fresh.all
    for cls, (orders, members) in fresh.by_type.items():
        entry = index.by_type.get(cls)
        if entry is None:
            index.by_type[cls] = (orders, members)
            continue
        position = bisect.bisect_left(entry[0], orders[0])
        entry[0][position:position] = orders
        entry[1][position:position] = members
    index.start.update(fresh.start)
    index.end.update(fresh.end)
    index.parents.update(fresh.parents)
    index.imports.extend(fresh.imports)
    # The module node itself is new.
    del index.start[id(old_tree)], index.end[id(old_tree)]
    index.start[id(new_tree)], index.end[id(new_tree)] = 0, END
    index.by_type[ast.Module] = ([0], [new_tree])
    every[0] = new_tree
    for statement in new_tree.body:
        index.parents[statement] = new_tree
    index.selections.clear()
    return removed


def shift_lines(index: NodeIndex, from_number: int, delta: int) -> None:
    """Move every node numbered `from_number` or later `delta` lines down (an edit above them
    added or removed lines). Nodes are shared with the previous version: see incremental.py."""
    positioned = _POSITIONED
    for node in index.all[bisect.bisect_left(index.numbers, from_number):]:
        if node.__class__ in positioned:
            values = node.__dict__
            values["lineno"] += delta
            if values.get("end_lineno") is not None:
                values["end_lineno"] += delta
