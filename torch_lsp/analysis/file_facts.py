"""Facts about the whole file that a rule reads wherever it looks from, kept per top-level
statement so that an edit recomputes only the statements it touched.

Most of what a rule reads from outside the statement it reports on is reached by name (a
helper called, a class constructed, a module-level variable); `StatementNames` records those
names, and incremental analysis (analysis/incremental.py) follows them to decide which
statements an edit can affect. The rest are file-wide aggregates that no name leads to: they
live here, and incremental analysis asks them again after an edit (`FileFacts.reads`).
"""

from __future__ import annotations

import ast
import collections
import functools
from dataclasses import dataclass

from torch_lsp.analysis.node_index import nodes
from torch_lsp.analysis.syntax import ParsedModule, derived, target_key

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
_NAMES = (ast.Name, ast.Attribute, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Global)


@dataclass(frozen=True)
class StatementNames:
    """How one top-level statement is reached from others, and reaches them."""

    defines: frozenset[str]  # functions and classes anywhere in it, names it binds at module level
    mentions: frozenset[str]  # every name it reads or binds, `self.<attribute>` as `<attribute>`
    # Two statements are connected when one mentions a name the other defines. Defining the
    # same name alone does not connect them: two classes with a `forward` each do not read each
    # other (what `self.forward()` reaches is decided by name, and mentioning it connects).


@dataclass(frozen=True)
class StatementAggregates:
    """One statement's share of the file-wide aggregates below."""

    attribute_bases: frozenset[str]  # names with an attribute read or set: `total.item()`
    reads_require_grad: bool  # `x.require_grad` read (not set) anywhere
    call_keys: collections.Counter  # callee key -> number of calls: `criterion(...)` -> criterion
    attribute_values: tuple[tuple[str, ast.AST], ...]  # `self.loader = <value>`, in order


def statement_names(parsed: ParsedModule, statement: ast.stmt) -> StatementNames:
    defines: set[str] = set()
    mentions: set[str] = set()
    module_level = not isinstance(statement, _SCOPES)
    for node in nodes(parsed, _NAMES, statement):
        if isinstance(node, ast.Name):
            mentions.add(node.id)
            if module_level and not isinstance(node.ctx, ast.Load) and parsed.enclosing(node, _SCOPES) is None:
                defines.add(node.id)
        elif isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name) and node.value.id == "self":
                mentions.add(node.attr)  # `self.helper()` reaches a function by that name
        elif isinstance(node, ast.Global):
            defines.update(node.names)  # `global x` inside a function binds a module-level name
            mentions.update(node.names)
        else:
            defines.add(node.name)
    return StatementNames(frozenset(defines), frozenset(mentions))


def statement_aggregates(parsed: ParsedModule, statement: ast.stmt) -> StatementAggregates:
    bases: set[str] = set()
    reads_require_grad = False
    calls: collections.Counter = collections.Counter()
    values: list[tuple[str, ast.AST]] = []
    for node in nodes(parsed, (ast.Attribute, ast.Call, ast.Assign), statement):
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name):
                bases.add(node.value.id)
            if node.attr == "require_grad" and isinstance(node.ctx, ast.Load):
                reads_require_grad = True
        elif isinstance(node, ast.Call):
            key = target_key(node.func)
            if key:
                calls[key] += 1
        elif len(node.targets) == 1 and isinstance(node.targets[0], ast.Attribute):
            key = target_key(node.targets[0])
            if key:
                values.append((key, node.value))
    return StatementAggregates(frozenset(bases), reads_require_grad, calls, tuple(values))


class FileFacts:
    """File-wide aggregates, merged from per-statement shares (`shares` maps a top-level
    statement to its share; incremental analysis hands over the shares of unchanged ones).

    Every answer is recorded in `reads`: incremental analysis asks the same questions of the
    next version (`unchanged`) to know whether findings it keeps are still right."""

    def __init__(self, parsed: ParsedModule, shares: dict[ast.stmt, StatementAggregates] | None = None):
        self.parsed = parsed.whole
        self.shares: dict[ast.stmt, StatementAggregates] = {}
        self.reads: dict[tuple, object] = {}
        known = shares or {}
        for statement in self.parsed.tree.body:
            share = known.get(statement)
            self.shares[statement] = share if share is not None else statement_aggregates(self.parsed, statement)

    def has_attributes_read(self, name: str) -> bool:
        """Is an attribute of `name` read or set anywhere (`total.item()`)? (TL103)"""
        return self._read(("attributes of", name))

    def require_grad_read(self) -> bool:
        """Does some code read `.require_grad` (then it is a user's own attribute)? (TL112)"""
        return self._read(("require_grad read",))

    def call_count(self, key: str) -> int:
        """How many calls in the file call `key` (`criterion(...)`)? (TL108)"""
        return self._read(("calls of", key))

    def attribute_value(self, key: str) -> ast.AST | None:
        """The value last assigned to an attribute key (`self.train_loader`) in the file. (TL111)"""
        return self._read(("value of", key))

    def unchanged(self, reads: dict[tuple, object]) -> bool:
        """Would every question answered in `reads` (another version's) be answered the same?
        Nodes are the same only if they are the very same object."""
        for question, answer in reads.items():
            now = self._read(question)
            if now is not answer and not (now == answer and not isinstance(now, ast.AST)):
                return False
        return True

    def _read(self, question: tuple):
        answer = self._answer(question)
        self.reads[question] = answer
        return answer

    def _answer(self, question: tuple):
        kind = question[0]
        if kind == "attributes of":
            return question[1] in self._attribute_bases
        if kind == "require_grad read":
            return any(share.reads_require_grad for share in self.shares.values())
        if kind == "calls of":
            return self._call_counts[question[1]]
        if kind == "value of":
            return self._attribute_values.get(question[1])
        raise KeyError(question)

    @functools.cached_property
    def _attribute_bases(self) -> frozenset[str]:
        return frozenset().union(*(share.attribute_bases for share in self.shares.values()))

    @functools.cached_property
    def _call_counts(self) -> collections.Counter:
        total: collections.Counter = collections.Counter()
        for share in self.shares.values():
            total.update(share.call_keys)
        return total

    @functools.cached_property
    def _attribute_values(self) -> dict[str, ast.AST]:
        last: dict[str, ast.AST] = {}
        for share in self.shares.values():
            last.update(share.attribute_values)
        return last


def file_facts(parsed: ParsedModule) -> FileFacts:
    """The file's aggregates (of the whole module, also when asked through a focused one)."""
    return derived(parsed, "file", FileFacts)
