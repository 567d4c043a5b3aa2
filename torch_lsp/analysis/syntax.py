"""Parse Python source and expose what every analysis needs: positions, parents, names.

Facts come from the standard library's `ast`, not libcst: measured here, libcst's parse plus
position/scope/qualified-name metadata costs ~2 ms per line (a 5,000-line file: ~10 s), while
`ast` parses the same file in ~50 ms. libcst stays the tool for *edits* (scaffold/ and fixes
that must preserve formatting), where its lossless tree is the point.

One `ParsedModule` per source text, cached: the server, the CLI, rules, plans and scaffolds all
ask for the same text. A syntax error is a value (`ParseFailure`), never an exception: the
buffer is half-typed most of the time someone is typing.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import copy
import gc
import functools
import re
import threading
from dataclasses import dataclass
from typing import Iterator, TypeVar

from torch_lsp.analysis.facts import Position, Span
from torch_lsp.analysis.node_index import NodeIndex
from torch_lsp.analysis.node_index import build as build_index

N = TypeVar("N", bound=ast.AST)

# Larger files are not analysed: a generated or minified file is not someone's model.
MAX_SOURCE_CHARS = 2_000_000


@dataclass(frozen=True)
class ParseFailure:
    message: str
    line: int  # 0-based
    col: int


class ParsedModule:
    """An `ast.Module` with parent links, import-resolved names and position helpers."""

    # On a focused module (analysis/incremental.py): the number ranges of the statements that
    # whole-module enumerations (`node_index.nodes`) cover. None: the whole module.
    focus_ranges: tuple[tuple[int, int], ...] | None = None
    _whole: "ParsedModule | None" = None  # a focused module: the module it focuses

    @property
    def whole(self) -> "ParsedModule":
        """The whole module (itself, unless focused). Not an attribute pointing to itself: a
        module in a cycle of its own would wait for a full collection to be freed."""
        return self._whole if self._whole is not None else self

    def __init__(self, source: str, tree: ast.Module, index: NodeIndex | None = None):
        self.source = source
        self.tree = tree
        self.lines = source.splitlines()
        # One pass for parents, pre-order numbers, nodes by type and imports: most of the cost
        # of analysing a large file after `ast.parse` itself.
        self.index = index if index is not None else build_index(tree)
        self._parents = self.index.parents
        self.imports = _import_table(node for _, _, node in sorted(self.index.imports, key=_depth_first))

    def focused(self, statements: list[ast.stmt]) -> "ParsedModule":
        """The same module, with whole-module enumerations (`node_index.nodes` without
        `within`) limited to `statements` (top-level statements of this module). Everything
        else (parents, `within` queries, names, facts) still sees the whole file. Incremental
        analysis runs rules on the statements an edit can affect this way."""
        view = copy.copy(self)
        view._whole = self
        view.focus_ranges = tuple(sorted(self.index.statement_range(s) for s in statements))
        return view

    # -- positions ----------------------------------------------------------------------------
    def span(self, node: ast.AST) -> Span:
        start = Position(node.lineno - 1, self._col(node.lineno, node.col_offset))
        end_line = getattr(node, "end_lineno", None) or node.lineno
        end_col = getattr(node, "end_col_offset", None)
        end = Position(end_line - 1, self._col(end_line, end_col if end_col is not None else node.col_offset))
        return Span(start, end)

    def _col(self, lineno: int, byte_offset: int) -> int:
        # ast columns are UTF-8 byte offsets; ours are code points.
        if lineno - 1 >= len(self.lines):
            return byte_offset
        line = self.lines[lineno - 1]
        if line.isascii():
            return byte_offset
        return len(line.encode("utf-8")[:byte_offset].decode("utf-8", errors="ignore"))

    def line_text(self, line: int) -> str:
        return self.lines[line] if 0 <= line < len(self.lines) else ""

    def indent_of(self, node: ast.AST) -> str:
        text = self.line_text(node.lineno - 1)
        return text[: len(text) - len(text.lstrip())]

    def code(self, node: ast.AST) -> str:
        # ast.get_source_segment re-splits the whole source on every call (~0.1 s per call on
        # a 5,000-line file); the same slicing over lines split once keeps it O(segment).
        try:
            first, last = node.lineno - 1, node.end_lineno - 1
            start, end = node.col_offset, node.end_col_offset
        except AttributeError:
            return ast.unparse(node)
        lines = self._segment_lines
        if first < 0 or last >= len(lines) or end is None:
            return ast.unparse(node)
        if first == last:
            return lines[first].encode()[start:end].decode()
        head = lines[first].encode()[start:].decode()
        tail = lines[last].encode()[:end].decode()
        return "".join([head, *lines[first + 1:last], tail])

    @functools.cached_property
    def _segment_lines(self) -> list[str]:
        return tokenizer_lines(self.source)

    # -- tree navigation ----------------------------------------------------------------------
    def parent(self, node: ast.AST) -> ast.AST | None:
        return self._parents.get(node)

    def ancestors(self, node: ast.AST) -> Iterator[ast.AST]:
        current = self._parents.get(node)
        while current is not None:
            yield current
            current = self._parents.get(current)

    def walk(self, node: ast.AST | None = None, kind: type[N] | tuple[type, ...] = ast.AST) -> Iterator[N]:
        """Nodes of `kind` under `node` (default: the whole module), in source order."""
        stack = [node if node is not None else self.tree]
        while stack:
            current = stack.pop()
            if isinstance(current, kind):
                yield current
            stack.extend(reversed(list(ast.iter_child_nodes(current))))

    def enclosing(self, node: ast.AST, kind: type[N] | tuple[type, ...]) -> N | None:
        parents = self._parents  # rules ask this tens of thousands of times per file: no generator
        current = parents.get(node)
        while current is not None:
            if isinstance(current, kind):
                return current
            current = parents.get(current)
        return None

    # -- names --------------------------------------------------------------------------------
    def qualified_name(self, expr: ast.AST) -> str | None:
        """What a name or attribute chain resolves to through the file's imports.

        `optim.SGD` with `import torch.optim as optim` -> `torch.optim.SGD`; `nn.Linear` with
        `from torch import nn` -> `torch.nn.Linear`. Names not bound by an import resolve to
        themselves (`Net`, `self.fc1`), like libcst's QualifiedNameProvider does for locals.
        """
        try:  # rules ask for the same callees over and over: one resolution per node
            return self._qualified_names[expr]
        except KeyError:
            pass
        name = self._resolve(expr)
        self._qualified_names[expr] = name
        return name

    @functools.cached_property
    def _qualified_names(self) -> dict[ast.AST, str | None]:
        return {}

    def _resolve(self, expr: ast.AST) -> str | None:
        parts: list[str] = []
        while isinstance(expr, ast.Attribute):
            parts.append(expr.attr)
            expr = expr.value
        if not isinstance(expr, ast.Name):
            return None
        base = self.imports.get(expr.id, expr.id)
        return ".".join([base, *reversed(parts)])

    def resolves_to(self, expr: ast.AST, *names: str) -> bool:
        """True when `expr` names one of `names` exactly, or one under a prefix ending in '.'."""
        qualified = self.qualified_name(expr)
        if qualified is None:
            return False
        exact, prefixes = _name_patterns(names)
        return qualified in exact or (bool(prefixes) and qualified.startswith(prefixes))


@functools.lru_cache(maxsize=256)
def _name_patterns(names: tuple[str, ...]) -> tuple[frozenset[str], tuple[str, ...]]:
    """Exact names and 'prefix.' patterns of a `resolves_to` call, split once per tuple."""
    return frozenset(n for n in names if not n.endswith(".")), tuple(n for n in names if n.endswith("."))


_DERIVED: "collections.OrderedDict[ParsedModule, dict[str, object]]" = collections.OrderedDict()
_DERIVED_LOCK = threading.Lock()
# Modules whose facts are kept (each keeps its module alive): the parse cache's and an
# incremental analysis's latest versions, bounded like the parse cache (`_ParseCache`).
_DERIVED_KEPT, _DERIVED_CHARACTERS = 16, 500_000


def derived(parsed: ParsedModule, name: str, build):
    """A fact of the whole module (training facts, module facts, ...), built once per module.
    Kept beside the module, not on it: facts point back at their module, and a cycle would
    keep every version's tree alive until a full garbage collection."""
    whole = parsed.whole
    with _DERIVED_LOCK:
        facts = _DERIVED.get(whole)
        if facts is not None and name in facts:
            _DERIVED.move_to_end(whole)
            return facts[name]
    value = build(whole)
    set_derived(whole, name, value)
    return value


def set_derived(parsed: ParsedModule, name: str, value) -> None:
    with _DERIVED_LOCK:
        facts = _DERIVED.get(parsed.whole)
        if facts is None:
            facts = _DERIVED[parsed.whole] = {}
        facts[name] = value
        _DERIVED.move_to_end(parsed.whole)
        _keep_newest(_DERIVED, _DERIVED_KEPT, _DERIVED_CHARACTERS, lambda module: len(module.source))


def _keep_newest(kept: dict, entries: int, characters: int, size) -> None:
    """Drop the oldest of `kept` (oldest first) until at most `entries` remain and their
    `size`s add up to at most `characters`; the newest stays whatever its size."""
    total = sum(map(size, kept))
    while len(kept) > 1 and (len(kept) > entries or total > characters):
        oldest = next(iter(kept))
        total -= size(oldest)
        del kept[oldest]


def _depth_first(entry: tuple[int, int, ast.AST]) -> tuple[int, int]:
    return entry[0], entry[1]  # depth, then source order: the order ast.walk meets imports


_OTHER_LINE_BREAKS = re.compile("[\v\f\x1c\x1d\x1e\x85\u2028\u2029]")


def tokenizer_lines(source: str) -> list[str]:
    """`source` split where the tokenizer ends lines (not at \\f, \\v, U+2028... as
    str.splitlines does), line ends kept; a last "" after a final line end."""
    if _OTHER_LINE_BREAKS.search(source) is None:  # str.splitlines agrees, ~10x faster
        lines = source.splitlines(keepends=True)
        return lines + [""] if not lines or lines[-1].endswith(("\n", "\r")) else lines
    return re.split(r"(?<=\r\n)|(?<=\n)|(?<=\r)(?!\n)", source)


def _import_table(imports) -> dict[str, str]:
    """Local name -> dotted module path, from every import in the file (any scope)."""
    if isinstance(imports, ast.AST):
        imports = [n for n in ast.walk(imports) if isinstance(n, (ast.Import, ast.ImportFrom))]
    table: dict[str, str] = {}
    for node in imports:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    table[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    table[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if alias.name != "*":
                    table[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return table


def parse(source: str) -> ParsedModule | ParseFailure:
    """Parse `source`; the last few results are cached by text (`_ParseCache`)."""
    if len(source) > MAX_SOURCE_CHARS:
        return ParseFailure(f"file too large to analyse ({len(source):,} characters)", 0, 0)
    if "\x00" in source:
        return ParseFailure("binary content (NUL bytes) is not Python source", 0, 0)
    return _CACHE.get(source)


class _ParseCache:
    """The last parses, by text, so that the features asking about one version share a parse
    (a shape job's plan and its probes, a code action's analyses). Bounded by their sources'
    size as well as their number: a parsed module holds ~130 bytes per character of source
    (a 5,000-line file: ~20 MB), and sixteen versions of one large file, kept here and by
    their derived facts (`derived`), held the server at ~420 MB after 16 shape jobs
    (bench/bench_typing_long_file.py). The newest parse is kept whatever its size."""

    def __init__(self, entries: int = 16, characters: int = 250_000) -> None:
        self.entries, self.characters = entries, characters
        self._parses: dict[str, ParsedModule | ParseFailure] = {}  # oldest first
        self._lock = threading.Lock()  # parses run in the server's pool threads

    def get(self, source: str) -> ParsedModule | ParseFailure:
        with self._lock:
            parsed = self._parses.pop(source, None)
            if parsed is not None:
                self._parses[source] = parsed  # the newest again
                return parsed
        parsed = parse_private(source)
        with self._lock:
            self._parses[source] = parsed
            _keep_newest(self._parses, self.entries, self.characters, len)
        return parsed


_CACHE = _ParseCache()


def parse_private(source: str) -> ParsedModule | ParseFailure:
    """`parse` without the cache: a module nobody else holds (analysis/incremental.py edits
    its nodes in place)."""
    if len(source) > MAX_SOURCE_CHARS:
        return ParseFailure(f"file too large to analyse ({len(source):,} characters)", 0, 0)
    if "\x00" in source:
        return ParseFailure("binary content (NUL bytes) is not Python source", 0, 0)
    with without_cyclic_gc():
        try:
            return ParsedModule(source, ast.parse(source))
        except SyntaxError as error:
            return ParseFailure(error.msg or "invalid syntax", max((error.lineno or 1) - 1, 0), max((error.offset or 1) - 1, 0))
        except (RecursionError, ValueError, MemoryError) as error:  # pathological nesting, bad bytes
            return ParseFailure(f"cannot parse: {type(error).__name__}", 0, 0)


# Analyses run in several threads and the collector's switch is process-wide: the pause is
# counted, and the collector resumes when the last analysis running ends.
_PAUSE_LOCK = threading.Lock()
_paused = 0  # analyses running now, in all threads
_nested = threading.local()  # this thread's depth of pauses (an analysis parses inside its own)
_resume = False  # the collector was on when the first of them started
# For full collections (see _resume_collector): objects tracked after the last one, and
# objects promoted by pauses since.
_tracked_after_full_collection: int | None = None
_promoted_since_full_collection = 0
# A full collection runs when the pauses promoted this fraction of what the last one left:
# CPython's own rule for its oldest generation (long_lived_pending > long_lived_total / 4).
_FULL_COLLECTION_GROWTH = 0.25
# Analyses that overlap without a break keep the collector paused: past this many new objects
# the young ones are collected anyway (what a pause of the collector may hold back).
_YOUNG_OBJECTS_WHILE_PAUSED = 100_000


@contextlib.contextmanager
def without_cyclic_gc():
    """Pause the cyclic garbage collector while analysis allocates a burst of objects.

    Parsing a large file creates ~100,000 node objects (and facts about them) at once; the GC
    would scan them several times while none is garbage yet. Reference counting still frees
    everything as usual. Measured on 5,000 lines: parse 352 -> 132 ms CPU.

    The pause is counted across threads: with `isenabled()` then `disable()` in each thread, an
    analysis starting while another one ended could switch the collector off for good (seen in
    the server while typing: every later cycle of ASTs and facts leaked, ~50 KB per edit).
    """
    global _paused, _resume
    with _PAUSE_LOCK:
        if _paused == 0:
            _resume = gc.isenabled()
            gc.disable()
        _paused += 1
    _nested.depth = getattr(_nested, "depth", 0) + 1
    try:
        yield
    finally:
        _nested.depth -= 1
        with _PAUSE_LOCK:
            _paused -= 1
            if _paused == 0 and _resume:
                _resume_collector()
            elif _nested.depth == 0 and gc.get_count()[0] > _YOUNG_OBJECTS_WHILE_PAUSED:
                gc.collect(1)  # another thread's analysis runs on: young garbage does not wait for its end


def _resume_collector() -> None:
    """Switch the collector back on. The survivors go straight to the oldest generation
    (`freeze` + `unfreeze` moves lists, it does not scan): otherwise the first allocation
    after `enable` scans them all as one young generation (~30 ms on 5,000 lines). Objects
    moved that way do not count for the interpreter's rule for full collections, so the same
    rule is applied here (`get_count()[0]`: the objects allocated and still tracked since the
    last collection or freeze, counted without walking them), and a full collection runs only
    if a count of the tracked objects confirms that the heap grew."""
    global _tracked_after_full_collection, _promoted_since_full_collection
    if gc.get_freeze_count():  # the shape worker froze its warm heap for forking jobs: it stays frozen
        gc.enable()
        return
    promoted = gc.get_count()[0]
    gc.freeze()
    gc.unfreeze()
    gc.enable()
    if _tracked_after_full_collection is None:
        _tracked_after_full_collection = _tracked_objects()
    _promoted_since_full_collection += promoted
    if _promoted_since_full_collection > _tracked_after_full_collection * _FULL_COLLECTION_GROWTH:
        # Most of what was promoted is freed again by reference counting (an analysis replaces
        # the last one): collect only if the heap really grew, by cycles or by live objects.
        # In the server, 30 documents typed into promoted enough for a full collection every
        # few seconds, each finding nothing and holding the interpreter lock 10-20 ms (far
        # longer when the thread lost its core meanwhile): hovers waited behind them.
        _promoted_since_full_collection = 0
        if _tracked_objects() > _tracked_after_full_collection * (1 + _FULL_COLLECTION_GROWTH):
            gc.collect()
            _tracked_after_full_collection = _tracked_objects()


def _tracked_objects() -> int:
    """How many objects the collector tracks (a walk of its lists: ~3 ms per 100,000 objects,
    so only on the first resume and after a full collection).

    Counted with `freeze` + `get_freeze_count`, never with `len(gc.get_objects())`: that list
    holds a reference to every object for a moment, including a tuple another thread is still
    building, and CPython's `_PyTuple_Resize` then fails with "SystemError: bad argument to
    internal function" in that thread (seen in the server: libcst's import died that way
    while an analysis thread resumed the collector)."""
    gc.freeze()
    tracked = gc.get_freeze_count()
    gc.unfreeze()
    return tracked


def target_key(node: ast.AST) -> str | None:
    """A stable key for an assignable expression: `model`, `self.model`, `trainer.opt`."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = target_key(node.value)
        return f"{base}.{node.attr}" if base else None
    return None
