"""Incremental static analysis: after an edit, redo only what the edit can change.

`IncrementalAnalyzer` analyses successive versions of one document and returns exactly what
`check.analyze_source` returns for each (tests/unit/test_incremental.py compares them on
random edits). For an edit inside one top-level statement of a 5,000-line file it re-parses
that statement, keeps the parse, node index and facts of every other one, and re-runs the
statement-scoped rules (rules/__init__.py) on the statements the edit can affect; the other
findings are kept, moved down or up when the edit added or removed lines.

Which statements an edit can affect: the edited ones, and every statement connected to them
through a name that some statement defines (a function, a class, a module-level variable;
analysis/file_facts.py `StatementNames`) — a helper's callers read its body, and it reads its
callers' call sites. What no name leads to is compared before and after the edit: the
imports, the module classes, the training facts' bindings and the file-wide aggregates of
file_facts.py. When any of those changed, or the edit touches the imports at the top of the
file, everything is analysed again (as after opening the file).

Ownership: the analyzer's parses are its own, never shared with `syntax.parse`'s cache,
because an edit that adds lines moves the nodes below it in place. An `Analysis` it returned
is valid until it analyses the next version; the server reads it only for the version it was
made for.
"""

from __future__ import annotations

import ast
import bisect
import dataclasses
import logging
import os
from dataclasses import dataclass

from torch_lsp.analysis import node_index
from torch_lsp.analysis.check import Analysis, finish
from torch_lsp.analysis.facts import Finding, Fix, Position, Span, TextEdit
from torch_lsp.analysis.file_facts import FileFacts, StatementNames, statement_names
from torch_lsp.analysis.line_edit import LineEdit, statement_span
from torch_lsp.analysis.rules import Rule, RuleContext, load_rules
from torch_lsp.analysis.rules.selection import RuleSelection
from torch_lsp.analysis.syntax import (_OTHER_LINE_BREAKS, ParsedModule, ParseFailure, parse_private, set_derived,
                                      target_key, without_cyclic_gc)
from torch_lsp.analysis.training import Kind, TrainingFacts
from torch_lsp.yield_points import yield_point

log = logging.getLogger(__name__)


@dataclass
class _Version:
    """What the analyzer keeps of the last version it analysed."""

    source: str
    lines: list[str]  # with line ends
    parsed: ParsedModule
    facts: TrainingFacts
    file: FileFacts
    findings: dict[str, list[Finding]]  # raw findings per rule code (before selection)
    fingerprint: tuple
    names: dict[ast.stmt, StatementNames] | None = None  # computed on the first edit
    crashed: list[str] = dataclasses.field(default_factory=list)  # rules that raised on this version


class IncrementalAnalyzer:
    def __init__(self, path: str = "<buffer>", selection: RuleSelection | None = None):
        self.path = path
        self.selection = selection or RuleSelection()
        self._last: _Version | None = None
        self.last_was_incremental = False  # did the last call reuse the version before? (tests, benchmarks)

    def analyze(self, source: str) -> Analysis:
        with without_cyclic_gc():
            self.last_was_incremental = False
            if self._last is not None and source == self._last.source:
                return self._result(self._last)
            if self._last is not None:
                try:
                    result = self._incremental(source)
                except _Fallback:
                    result = None
                except Exception:  # noqa: BLE001 - a bug here must cost time, never findings
                    log.exception("incremental analysis failed on %s; analysing the whole file", self.path)
                    result = None
                if result is not None:
                    return result
            return self._cold(source)

    # -- the whole file ------------------------------------------------------------------------
    def _cold(self, source: str) -> Analysis:
        parsed = parse_private(source)
        if isinstance(parsed, ParseFailure):
            return Analysis(source, None, parsed)  # the last good version stays the base
        return self._run(source, parsed, TrainingFacts(parsed), None, None)

    def _run(self, source: str, parsed: ParsedModule, facts: TrainingFacts, file: FileFacts | None,
             reuse: "_Reuse | None", fingerprint: tuple | None = None, lines: list[str] | None = None) -> Analysis:
        set_derived(parsed, "training", facts)
        file = file or FileFacts(parsed)
        set_derived(parsed, "file", file)
        ctx = RuleContext(parsed, self.path)
        focused = RuleContext(parsed.focused(reuse.affected), self.path) if reuse is not None else ctx
        findings: dict[str, list[Finding]] = {}
        crashed: list[str] = []
        for rule in self._rules():
            if reuse is not None and rule.scope == "statement":
                found = reuse.kept.get(rule.code, []) + _checked(rule, focused, self.path, crashed)
            else:
                found = _checked(rule, ctx, self.path, crashed)
            findings[rule.code] = found
        version = _Version(source, lines or source.splitlines(keepends=True), parsed, facts, file, findings,
                           fingerprint or _fingerprint(parsed, facts), reuse.names if reuse is not None else None,
                           crashed)
        self._last = version
        return self._result(version)

    def _rules(self) -> list[Rule]:
        return [r for r in load_rules().values() if r.check is not None and self.selection.enabled(r)]

    def _result(self, version: _Version) -> Analysis:
        merged = [f for code in version.findings for f in version.findings[code]]
        return finish(version.source, version.parsed, merged, self.selection, version.crashed)

    # -- one edit ------------------------------------------------------------------------------
    def _incremental(self, source: str) -> Analysis | None:
        last = self._last
        if _OTHER_LINE_BREAKS.search(source) or len(source) > 2_000_000 or "\x00" in source:
            return None
        old_body = last.parsed.tree.body
        edit = LineEdit.between(last.lines, source.splitlines(keepends=True), [statement_span(s) for s in old_body])
        if edit is None or edit.first == 0:
            return None  # the first statement (docstring, `from __future__`) places imports fixes add
        region = edit.parsed_region()
        if region is None or _imports(region) or _imports_in(last.parsed, old_body[edit.first:edit.last + 1]):
            return None
        if last.names is None:
            last.names = {s: statement_names(last.parsed, s) for s in last.parsed.tree.body}
        removed_statements = old_body[edit.first:edit.last + 1]
        new_tree = ast.Module(body=old_body[:edit.first] + region.body + old_body[edit.last + 1:],
                              type_ignores=last.parsed.tree.type_ignores)
        index = last.parsed.index
        following = index.start[id(old_body[edit.last + 1])] if edit.last + 1 < len(old_body) else None
        removed = node_index.replace_statements(index, last.parsed.tree, new_tree, edit.first, edit.last, region.body)
        if removed is None:
            raise _Fallback  # no numbers left between the neighbours: the index is gone
        if following is not None and edit.delta:
            node_index.shift_lines(index, following, edit.delta)
        self._last = None  # the old version's nodes now belong to the new one
        parsed = ParsedModule(source, new_tree, index)
        parsed.__dict__["_segment_lines"] = edit.new_lines + [""] if source.endswith(("\n", "\r")) or not source \
            else edit.new_lines  # what syntax.ParsedModule._segment_lines would split
        qualified = last.parsed.__dict__.get("_qualified_names")
        if qualified is not None:
            for node in removed:
                qualified.pop(node, None)
            parsed.__dict__["_qualified_names"] = qualified
        names = {s: last.names[s] for s in new_tree.body if s in last.names}
        for statement in region.body:
            names[statement] = statement_names(parsed, statement)
        edited = [statement_names(parsed, s) for s in region.body] + [last.names[s] for s in removed_statements]
        affected = _connected(new_tree.body, names, edited, region.body)
        stale = {id(node) for node in removed}
        for statement in affected:
            first, high = index.statement_range(statement)
            lo, hi = bisect.bisect_left(index.numbers, first), bisect.bisect_right(index.numbers, high)
            stale.update(id(node) for node in index.all[lo:hi])
        facts = TrainingFacts(parsed, last.facts, stale)
        set_derived(parsed, "training", facts)
        affected_ids = {id(s) for s in affected}
        shares = {s: share for s, share in last.file.shares.items() if id(s) not in affected_ids}
        file = FileFacts(parsed, shares)
        set_derived(parsed, "file", file)
        fingerprint = _fingerprint(parsed, facts)
        others = [names[s] for s in new_tree.body if id(s) not in affected_ids]
        if fingerprint != last.fingerprint or not file.unchanged(last.file.reads) or \
                _bindings_reach(last.facts.bindings, facts.bindings, others) or \
                _reaches_binding_values(facts, edited, others):
            return self._run(source, parsed, TrainingFacts(parsed), None, None)  # as if just opened
        kept = _kept_findings(last, edit, _lines_of(affected), edit.delta)
        if kept is None:
            return self._run(source, parsed, TrainingFacts(parsed), None, None)
        self.last_was_incremental = True
        return self._run(source, parsed, facts, file, _Reuse(affected, kept, names), fingerprint, edit.new_lines)


class _Fallback(Exception):
    """The incremental path cannot continue and has consumed the last version: go cold."""


@dataclass
class _Reuse:
    affected: list[ast.stmt]  # top-level statements of the new version the rules look at again
    kept: dict[str, list[Finding]]  # statement-scoped rules' findings elsewhere, moved
    names: dict[ast.stmt, StatementNames]


def _imports(tree: ast.AST) -> bool:
    return any(isinstance(node, (ast.Import, ast.ImportFrom)) for node in ast.walk(tree))


def _imports_in(parsed: ParsedModule, statements: list[ast.stmt]) -> bool:
    return any(next(node_index.nodes(parsed, (ast.Import, ast.ImportFrom), s), None) is not None for s in statements)


def _connected(body: list[ast.stmt], names: dict[ast.stmt, StatementNames], edited: list[StatementNames],
               new_statements: list[ast.stmt]) -> list[ast.stmt]:
    """The statements joined to the edited ones, directly or through others, by a name one of
    them mentions and the other defines (file_facts.StatementNames)."""
    defined = set().union(*(n.defines for n in names.values()), *(n.defines for n in edited))
    mentioned_in: dict[str, list[ast.stmt]] = {}
    defined_in: dict[str, list[ast.stmt]] = {}
    for statement in body:
        for name in names[statement].mentions & defined:
            mentioned_in.setdefault(name, []).append(statement)
        for name in names[statement].defines:
            defined_in.setdefault(name, []).append(statement)
    reached = {id(s) for s in new_statements}
    # A name defined by a reached statement reaches who mentions it, and a name it mentions
    # reaches who defines it.
    pending = [(name, True) for n in edited for name in n.defines] + \
              [(name, False) for n in edited for name in n.mentions & defined]
    seen: set[tuple[str, bool]] = set()
    while pending:
        entry = pending.pop()
        if entry in seen:
            continue
        seen.add(entry)
        name, by_definition = entry
        for statement in (mentioned_in if by_definition else defined_in).get(name, ()):
            if id(statement) not in reached:
                reached.add(id(statement))
                pending.extend((n, True) for n in names[statement].defines)
                pending.extend((n, False) for n in names[statement].mentions & defined)
    return [s for s in body if id(s) in reached]


def _lines_of(statements: list[ast.stmt]) -> list[tuple[int, int]]:
    return [(first, end - 1) for first, end in map(statement_span, statements)]


def _kept_findings(last: _Version, edit: LineEdit, affected_lines: list[tuple[int, int]],
                   delta: int) -> dict[str, list[Finding]] | None:
    """Statement-scoped rules' findings outside the affected statements, moved by the edit.
    None when one of them points into the edited lines (it cannot be moved)."""
    rules = load_rules()
    kept: dict[str, list[Finding]] = {}
    for code, findings in last.findings.items():
        if rules[code].scope != "statement":
            continue
        moved = []
        for finding in findings:
            line = finding.span.start.line
            if edit.start <= line < edit.old_end:
                continue  # reported in the edited statements: found again
            new_line = line + delta if line >= edit.old_end else line
            if any(low <= new_line <= high for low, high in affected_lines):
                continue  # reported in an affected statement: found again
            if delta and _lowest_line(finding) >= edit.start:
                finding = _moved(finding, edit, delta)
                if finding is None:
                    return None
            moved.append(finding)
        kept[code] = moved
    return kept


def _lowest_line(finding: Finding) -> int:
    """The last line any position of the finding (span, related, fix) is on."""
    lines = [finding.span.end.line, *(s.end.line for s, _ in finding.related)]
    if finding.fix is not None:
        lines.extend(e.span.end.line for e in finding.fix.edits)
    return max(lines)


def _moved(finding: Finding, edit: LineEdit, delta: int) -> Finding | None:
    def line(number: int) -> int:
        if number < edit.start:
            return number
        if number >= edit.old_end:
            return number + delta
        raise _Unmovable

    def span(old: Span) -> Span:
        return Span(Position(line(old.start.line), old.start.col), Position(line(old.end.line), old.end.col))

    try:
        fix = finding.fix
        if fix is not None:
            fix = Fix(fix.title, tuple(TextEdit(span(e.span), e.new_text) for e in fix.edits), fix.preferred)
        related = tuple((span(s), text) for s, text in finding.related)
        return dataclasses.replace(finding, span=span(finding.span), fix=fix, related=related)
    except _Unmovable:
        return None


class _Unmovable(Exception):
    pass


def _checked(rule: Rule, ctx: RuleContext, path: str, crashed: list[str]) -> list[Finding]:
    yield_point()  # in the server: a message waiting for the event loop goes first
    try:
        return list(rule.check(ctx))
    except Exception:  # noqa: BLE001 - isolate rule bugs from the user, as check.py does
        if os.environ.get("TORCH_LSP_STRICT_RULES") == "1":
            raise
        log.exception("rule %s failed on %s", rule.code, path)
        crashed.append(rule.code)
        return []


# -- what no name leads to ---------------------------------------------------------------------
def _fingerprint(parsed: ParsedModule, facts: TrainingFacts) -> tuple:
    """File-wide facts that statements read without naming the statement they come from (the
    file-wide aggregates are checked by replaying `FileFacts.reads`, bindings by
    `_bindings_reach`)."""
    return tuple(sorted(parsed.imports.items())), tuple(sorted(facts.module_classes))


def _bindings_reach(old: dict, new: dict, others: list[StatementNames]) -> bool:
    """Did a binding change that a statement outside the affected ones reads? A statement reads
    the bindings of the names it mentions, and through them (aliases, an optimizer's model, a
    scheduler's optimizer) the bindings those point to."""
    changed = {key for key in old.keys() | new.keys() if _binding_view(old.get(key)) != _binding_view(new.get(key))}
    if not changed:
        return False
    pointing: dict[str, set[str]] = {}  # key -> keys whose binding leads to it
    for table in (old, new):
        for key, binding in table.items():
            value_key = target_key(binding.value) if isinstance(binding.value, (ast.Name, ast.Attribute)) else None
            for target in (value_key, binding.model_key, binding.optimizer_key):
                if target:
                    pointing.setdefault(target, set()).add(key)
    pending = list(changed)
    while pending:
        for key in pointing.get(pending.pop(), ()):
            if key not in changed:
                changed.add(key)
                pending.append(key)
    names = {part for key in changed for part in key.split(".")} - {"self"}
    return any(names & statement.mentions for statement in others)


def _binding_view(binding) -> tuple | None:
    if binding is None:
        return None
    return binding.kind, binding.constructor, binding.model_key, binding.optimizer_key, _Same(binding.value)


class _Same:
    """Compares equal to another wrapper of the very same node (not an equal-looking one)."""

    __slots__ = ("node",)

    def __init__(self, node: object) -> None:
        self.node = node

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.node is self.node

    def __lt__(self, other: "_Same") -> bool:  # only reached for equal keys; any order will do
        return False

    def __hash__(self) -> int:
        return id(self.node)


def _reaches_binding_values(facts: TrainingFacts, edited: list[StatementNames], others: list[StatementNames]) -> bool:
    """Does the edit define something a binding's value names (`model = Net()`: what `model`
    is depends on class `Net`), or call a helper whose parameter is a binding (its call sites
    type it), for a binding that a statement outside the affected ones reads?"""
    defined = set().union(*(n.defines for n in edited))
    mentioned = set().union(*(n.mentions for n in edited))
    read = set().union(*(n.mentions for n in others))
    for key, binding in facts.bindings.items():
        if not (set(key.split(".")) - {"self"}) & read:
            continue
        value = binding.value
        if isinstance(value, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if value.name in defined or value.name in mentioned:
                return True
        elif defined & facts.memo(value, "names", lambda: {n.id for n in node_index.nodes(facts.parsed, ast.Name, value)}):
            return True
    return False
