"""What one file tells the workspace index: its classes, what it constructs, what it calls.

Pure stdlib `ast`, one walk per top-level statement (`_Inside`), no other file needed: every
name is written as the absolute dotted name it resolves to through this file's imports
(relative ones included), so the index (workspace.py) can join files by plain string lookups. `Net` defined here in module
`pkg.models` is `pkg.models.Net`; `from .layers import Block` there is `pkg.layers.Block`
(when `models` is a module of `pkg`).

Facts are deliberately approximate where Python is dynamic: a name bound to a construction
anywhere in a scope counts for every call of that name in the scope, wrappers such as
`.to(device)`, `DataParallel(...)` and `torch.compile(...)` are seen through, and a function
that constructs classes is a factory of each of them. Drivers chosen from these facts are
checked by running them; nothing here is reported to the user as a finding.
"""

from __future__ import annotations

import ast
import bisect
import functools
import operator
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

from torch_lsp.analysis.line_edit import LineEdit, statement_span
from torch_lsp.analysis.syntax import tokenizer_lines, without_cyclic_gc

# Methods that return their receiver (or the same model): `Net().to(device).eval()`.
_SELF_RETURNING = {"to", "cuda", "cpu", "eval", "train", "float", "half", "double", "bfloat16",
                   "requires_grad_", "share_memory", "to_empty", "apply", "xpu", "mps"}
# Wrappers whose first argument is the model that actually runs.
_WRAPPERS = {"torch.nn.DataParallel", "torch.nn.parallel.DataParallel",
             "torch.nn.parallel.DistributedDataParallel", "torch.nn.parallel.DDP",
             "torch.distributed.fsdp.FullyShardedDataParallel", "torch.compile",
             "torch.jit.script", "torch.jit.trace", "torch.nn.SyncBatchNorm.convert_sync_batchnorm"}
# Callees whose result is never a workspace model (kept out of the facts: they change with every
# keystroke in a forward, and the facts' signature should not).
_NEVER_CONSTRUCTIONS = ("self.", "torch.", "numpy.", "math.", "F.", "einops.")
_DATA_LOADING = ("torch.utils.data.DataLoader", "torchvision.datasets.", "torch.load", "numpy.load",
                 "pandas.read_", "PIL.Image.open", "datasets.load_dataset", "open")


@dataclass(frozen=True, slots=True)
class ClassFacts:
    qualname: str  # pkg.models.Net
    line: int  # 0-based line of `class`
    end_line: int
    bases: tuple[str, ...]  # absolute dotted names
    forward_line: int | None  # 0-based line of `def forward`
    forward_end: int | None
    forward_params: tuple[str, ...]  # after `self`
    builds: tuple[str, ...]  # callees of every call in its methods (children it may construct)


@dataclass(frozen=True, slots=True)
class Binding:
    """`name = callee(...)` in `scope` (wrappers seen through). `alias` instead of `callee`
    for `name = other_name` and `model = DDP(model)`."""

    scope: str  # "" module level; "pkg.mod.train" a function; "pkg.mod.Net" for self.<attr>
    name: str  # "model", "self.encoder", or "model#1" for the 2nd item of a tuple target
    line: int
    callee: str | None = None
    alias: str | None = None
    arguments: str = ""  # the call's arguments as source text
    item: int | None = None  # tuple unpacking position: `a, b = f()`
    # Plain names passed to the call (`DETR(backbone, transformer)`, `ResNet(ResidualBlock)`):
    # instances and classes handed to a model run when it runs.
    argument_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NameCall:
    """`name(...)` or `name.forward(...)` in `scope`; `self.x(...)` has scope = its class."""

    scope: str
    name: str
    function: str  # the function (or "" at module level) the call is written in
    line: int
    end_line: int
    col: int
    end_col: int


@dataclass(frozen=True, slots=True)
class DirectCall:
    """`Callee(...)(...)`: constructed and called in one expression."""

    callee: str
    line: int
    arguments: str
    scope: str = ""


@dataclass(frozen=True, slots=True)
class FunctionFacts:
    qualname: str
    line: int
    params: tuple[str, ...]
    called_params: tuple[int, ...]  # positions of parameters the body calls (`model(x)`)
    returns: tuple[tuple[str, ...], ...]  # per returned tuple position: names/callees returned
    builds: tuple[str, ...]  # callees of every call in the body


@dataclass(frozen=True, slots=True)
class ArgumentPass:
    """`function(..., name, ...)` at `line`: `name` passed as positional `position` (or, with
    `callee`, a value built right there: `Trainer(Net())`)."""

    scope: str
    function: str
    name: str
    position: int | None
    keyword: str | None
    line: int
    callee: str | None = None


@dataclass(slots=True)
class FileFacts:
    path: str
    module: str
    imports: dict[str, str] = field(default_factory=dict)  # local name -> absolute dotted
    star_imports: list[str] = field(default_factory=list)
    classes: dict[str, ClassFacts] = field(default_factory=dict)  # qualname -> facts
    functions: dict[str, FunctionFacts] = field(default_factory=dict)
    bindings: list[Binding] = field(default_factory=list)
    name_calls: list[NameCall] = field(default_factory=list)
    direct_calls: list[DirectCall] = field(default_factory=list)
    passes: list[ArgumentPass] = field(default_factory=list)
    statement_lines: list[int] = field(default_factory=list)  # executable statements, sorted
    data_lines: list[int] = field(default_factory=list)  # lines that load data (datasets, files)
    module_calls: list[str] = field(default_factory=list)  # callees called when the file runs
    error: str | None = None

    def signature(self) -> tuple:
        """What other files' facts can depend on (names, classes, functions, bindings), without
        positions: an edit that keeps it (typing inside a function body) leaves every other
        file's resolved facts valid."""
        return (self.module, tuple(sorted(self.imports.items())), tuple(self.star_imports),
                tuple((c.qualname, c.bases, c.builds, c.forward_params) for c in self.classes.values()),
                tuple((f.qualname, f.params, f.called_params, f.returns, f.builds) for f in self.functions.values()),
                tuple((b.scope, b.name, b.callee, b.alias, b.item, b.argument_names) for b in self.bindings),
                self.error is None)


def file_facts(path: str, module: str, source: str, is_package: bool = False,
               parts: StatementParts | None = None) -> FileFacts:
    """Facts of one file. `module` is its dotted name (`pkg.mod`; a package's `__init__` is
    `pkg`); `is_package` says whether it is an `__init__.py` (relative imports start there).

    `parts`, for a file whose successive versions are indexed (an open buffer): what each
    top-level statement of the last version added, reused for every statement whose text,
    first line and the meaning of the names it read are unchanged, then replaced by this
    version's."""
    with without_cyclic_gc():  # a burst of nodes and facts, none garbage yet (syntax.py)
        return _file_facts(path, module, source, is_package, parts)


@dataclass(slots=True)
class _Part:
    facts: FileFacts  # what one top-level statement adds to its file's facts
    names: tuple[tuple[str, str | None], ...]  # the file's names it read, and what they meant


@dataclass(slots=True)
class _Statement:
    """One top-level statement of the last version of a buffer, and what it added."""

    first: int  # 0-based first line, its decorators included
    end: int  # exclusive
    text: str  # its lines
    part: _Part
    imports: bool  # an import inside: the file's names may change with its text
    defines: str | None  # the name a top-level `def` or `class` binds


@dataclass(slots=True)
class StatementParts:
    """What each top-level statement of one version of a file added to its facts, for a file
    whose successive versions are indexed (an open buffer). An edit that keeps the file's
    names (its imports and top-level definitions) parses the edited statements alone and
    reuses every other statement's part, moved by the lines the edit added or removed: typing
    inside one function of a 5,000-line buffer parses and walks that function alone. Any other
    edit parses the whole file and reuses the parts of statements whose text and first line
    are unchanged and whose names read mean the same (typing a new function's name walks only
    the statements that use it)."""

    module: str = ""
    lines: list[str] = field(default_factory=list)  # the last version's, as the tokenizer ends them
    statements: list[_Statement] = field(default_factory=list)
    imports: dict[str, str] = field(default_factory=dict)  # the last version's `FileFacts.imports`
    star_imports: list[str] = field(default_factory=list)

    @property
    def by_statement(self) -> dict[tuple[int, str], _Part]:
        return {(s.first, s.text): s.part for s in self.statements}


def _file_facts(path: str, module: str, source: str, is_package: bool, parts: StatementParts | None) -> FileFacts:
    text = _Text(source)
    if parts is not None and parts.module == module and parts.statements:
        facts = _edited_facts(path, module, text, parts)
        if facts is not None:
            return facts
    facts = FileFacts(path, module)
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        facts.error = f"{type(error).__name__}: {error}"
        return facts
    package = module if is_package else module.rpartition(".")[0]
    imports = _imports_in_walk_order(tree)
    _collect_imports(imports, package, facts)
    for node in tree.body:  # local definitions shadow imports of the same name
        if isinstance(node, _DEFINITIONS):
            facts.imports[node.name] = f"{module}.{node.name}"
    reusable = parts.by_statement if parts is not None and parts.module == module else {}
    spans = [statement_span(statement) for statement in tree.body]
    importing = {bisect.bisect_right(spans, (node.lineno - 1, sys.maxsize)) - 1 for node in imports}
    statements: list[_Statement] = []
    for number, (statement, (first, end)) in enumerate(zip(tree.body, spans)):
        key = part = None
        if parts is not None:
            key = (first, "".join(text.lines[first:end]))
            part = reusable.get(key)
            if part is not None and any(facts.imports.get(name) != meant for name, meant in part.names):
                part = None
        if part is None:
            part = _statement_part(statement, path, module, facts.imports, text)
        if key is not None:
            statements.append(_Statement(first, end, key[1], part, number in importing,
                                         statement.name if isinstance(statement, _DEFINITIONS) else None))
        _add(facts, part.facts)
    if parts is not None:
        parts.module, parts.lines, parts.statements = module, text.lines, statements
        parts.imports, parts.star_imports = facts.imports, facts.star_imports
    return _finished(facts)


def _edited_facts(path: str, module: str, text: _Text, parts: StatementParts) -> FileFacts | None:
    """The facts of the next version of a buffer from the last one's parts, parsing only the
    statements the edit touched (`StatementParts`); None when the edit may change the file's
    names (an import or a top-level definition's name in the edited lines) or the edited lines
    do not parse alone: the whole file decides then."""
    edit = LineEdit.between(parts.lines, text.lines, [(s.first, s.end) for s in parts.statements])
    if edit is None:
        return None
    edited = parts.statements[edit.first:edit.last + 1]
    if any(s.imports for s in edited):
        return None  # checked before parsing the edited lines: the whole file is parsed anyway
    region = edit.parsed_region()
    if region is None or _imports_in_walk_order(region):
        return None
    defined = {statement.name for statement in region.body if isinstance(statement, _DEFINITIONS)}
    if defined != {s.defines for s in edited if s.defines is not None}:
        return None
    statements = parts.statements[:edit.first]
    for statement in region.body:
        first, end = statement_span(statement)
        statements.append(_Statement(first, end, "".join(text.lines[first:end]),
                                     _statement_part(statement, path, module, parts.imports, text), False,
                                     statement.name if isinstance(statement, _DEFINITIONS) else None))
    statements += [_moved(s, edit.delta) for s in parts.statements[edit.last + 1:]]
    facts = FileFacts(path, module, imports=parts.imports, star_imports=list(parts.star_imports))
    for statement in statements:
        _add(facts, statement.part.facts)
    parts.lines, parts.statements = text.lines, statements
    return _finished(facts)


def _statement_part(statement: ast.stmt, path: str, module: str, imports: dict[str, str], text: "_Text") -> _Part:
    collector = _Collector(FileFacts(path, module, imports=imports), text, _Inside(statement))
    collector.statement(statement, "", module, None)
    return _Part(collector.facts, tuple(collector.names_read.items()))


def _finished(facts: FileFacts) -> FileFacts:
    facts.statement_lines.sort()
    _keep_resolvable(facts)
    return facts


def _moved(statement: _Statement, delta: int) -> _Statement:
    """A statement below an edit that added (`delta` > 0) or removed lines, and its facts."""
    if delta == 0:
        return statement
    facts = statement.part.facts
    moved = FileFacts(facts.path, facts.module, imports=facts.imports, module_calls=facts.module_calls,
                      statement_lines=[line + delta for line in facts.statement_lines],
                      data_lines=[line + delta for line in facts.data_lines])
    moved.classes = {name: _shifted(cls, delta) for name, cls in facts.classes.items()}
    moved.functions = {name: _shifted(function, delta) for name, function in facts.functions.items()}
    moved.bindings = [_shifted(binding, delta) for binding in facts.bindings]
    moved.name_calls = [_shifted(call, delta) for call in facts.name_calls]
    moved.direct_calls = [_shifted(call, delta) for call in facts.direct_calls]
    moved.passes = [_shifted(passed, delta) for passed in facts.passes]
    return _Statement(statement.first + delta, statement.end + delta, statement.text,
                      _Part(moved, statement.part.names), statement.imports, statement.defines)


_LINE_FIELDS = {"line", "end_line", "forward_line", "forward_end"}  # the facts' line numbers


@functools.cache
def _line_fields(cls: type) -> tuple[Callable, tuple[bool, ...]]:
    names = [f.name for f in fields(cls)]
    return operator.attrgetter(*names), tuple(name in _LINE_FIELDS for name in names)


def _shifted(fact, delta: int):
    """`fact` (a frozen fact of this module) `delta` lines lower: dataclasses.replace is ~6x
    slower, and a 5,000-line buffer moves ~1,000 facts at each new line typed near its top."""
    values, lined = _line_fields(type(fact))
    return type(fact)(*[value + delta if is_line and value is not None else value
                        for value, is_line in zip(values(fact), lined)])


def _add(facts: FileFacts, part: FileFacts) -> None:
    """`part`'s facts (one statement's) after those of the statements before it."""
    facts.classes.update(part.classes)
    facts.functions.update(part.functions)
    facts.bindings += part.bindings
    facts.name_calls += part.name_calls
    facts.direct_calls += part.direct_calls
    facts.passes += part.passes
    facts.statement_lines += part.statement_lines
    facts.data_lines += part.data_lines
    facts.module_calls += part.module_calls


def _imports_in_walk_order(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The file's imports in `ast.walk`'s order (which decides between two imports of one name),
    walking statements only: an import is a statement, and the headers between a statement and
    its nested bodies (`except ...:`, `case ...:`) are a level of the walk of their own."""
    found = []
    queue = deque([tree])
    while queue:
        node = queue.popleft()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
            continue
        for name in node._fields:
            if name in _BODIES:
                queue.extend(item for item in getattr(node, name) if isinstance(item, _STATEMENT_LEVELS))
    return found


def _keep_resolvable(facts: FileFacts) -> None:
    """Drop the calls and passes of names that nothing in this file binds: the index resolves a
    name only through this file's bindings (its scope, then module level), so they can never
    become a use. Most calls in a file are of this kind (`print(...)`, `len(...)`, `F.relu(...)`),
    and they were two thirds of the index's memory."""
    bound = {(binding.scope, binding.name) for binding in facts.bindings}

    def resolvable(scope: str, name: str) -> bool:
        return (scope, name) in bound or (bool(scope) and not name.startswith("self.") and ("", name) in bound)

    facts.name_calls = [call for call in facts.name_calls if resolvable(call.scope, call.name)]
    facts.passes = [passed for passed in facts.passes if passed.callee or resolvable(passed.scope, passed.name)]


def _collect_imports(imports: list[ast.Import | ast.ImportFrom], package: str, facts: FileFacts) -> None:
    for node in imports:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    facts.imports[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    facts.imports.setdefault(top, top)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute_module(node.module, node.level, package)
            if base is None:
                continue
            for alias in node.names:
                if alias.name == "*":
                    facts.star_imports.append(base)
                else:
                    facts.imports[alias.asname or alias.name] = f"{base}.{alias.name}" if base else alias.name


def _absolute_module(module: str | None, level: int, package: str) -> str | None:
    if level == 0:
        return module
    parts = package.split(".") if package else []
    if level - 1 > len(parts):
        return None  # beyond the top package: an ImportError at run time
    base = parts[: len(parts) - (level - 1)]
    if module:
        base.append(module)
    return ".".join(base)


_DEFINITIONS = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_BODIES = {"body", "handlers", "orelse", "finalbody", "cases"}  # fields holding nested statements
_STATEMENT_LEVELS = (ast.stmt, ast.excepthandler, ast.match_case)
# Fields that never hold a node with a call inside (names, flags, `Load`/`Store` contexts).
_SCALAR_FIELDS = {"ctx", "id", "attr", "arg", "name", "module", "level", "kind", "type_comment", "is_async",
                  "conversion", "asname", "op", "ops", "names"}
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {}  # node type -> its fields that may hold calls


class _Inside:
    """One walk of a top-level statement's tree: the calls and returns inside each class and
    function (nested ones included), and the calls of each statement's own expressions (not
    those of its nested bodies, nor of an `except` clause's or a `case`'s header). The facts of
    a class, of each of its methods and of each statement read these lists: walking each
    definition and statement again made a file cost its nesting depth times its size (a scan
    of 1,480 torchvision files: 15-18 s before, 8 s with this walk; bench/bench_workspace_index.py)."""

    __slots__ = ("calls", "returns", "own_calls")

    def __init__(self, tree: ast.AST) -> None:
        self.calls: dict[ast.AST, list[ast.Call]] = {}  # definition -> calls inside it
        self.returns: dict[ast.AST, list[ast.Return]] = {}
        self.own_calls: dict[ast.stmt, list[ast.Call]] = {}  # statement -> its own calls
        queue = deque([(tree, (), None)])
        while queue:
            node, enclosing, statement = queue.popleft()
            if isinstance(node, ast.Call):
                for definition in enclosing:
                    self.calls[definition].append(node)
                if statement is not None:
                    self.own_calls.setdefault(statement, []).append(node)
            elif isinstance(node, ast.stmt):
                statement = node
                if isinstance(node, _DEFINITIONS):
                    self.calls[node], self.returns[node] = [], []
                    enclosing = (*enclosing, node)
                elif isinstance(node, ast.Return):
                    for definition in enclosing:
                        self.returns[definition].append(node)
            elif isinstance(node, (ast.excepthandler, ast.match_case)):
                statement = None  # a header between a statement and its nested body
            fields = _CHILD_FIELDS.get(type(node))
            if fields is None:
                fields = _CHILD_FIELDS[type(node)] = tuple(f for f in node._fields if f not in _SCALAR_FIELDS)
            for name in fields:  # ast.iter_child_nodes, without its generators and leaves
                value = getattr(node, name, None)
                if isinstance(value, ast.AST):
                    queue.append((value, enclosing, statement))
                elif isinstance(value, list):
                    queue.extend((item, enclosing, statement) for item in value if isinstance(item, ast.AST))


class _Text:
    """A file's source, split into lines on first use, for all the statements' collectors."""

    def __init__(self, source: str) -> None:
        self.source = source

    @functools.cached_property
    def lines(self) -> list[str]:
        """Split once, when first needed: ast.get_source_segment re-splits the whole source on
        every call (quadratic on a large file), and most files of a workspace bind no model."""
        return tokenizer_lines(self.source)


class _Collector:
    def __init__(self, facts: FileFacts, text: _Text, inside: _Inside) -> None:
        self.facts = facts
        self.inside = inside
        self.text = text
        self.names_read: dict[str, str | None] = {}  # the file's names looked up, and their meaning

    # names -----------------------------------------------------------------------------------

    def dotted(self, node: ast.AST) -> str | None:
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        meant = self.names_read[node.id] = self.facts.imports.get(node.id)
        return sys.intern(".".join([node.id if meant is None else meant, *reversed(parts)]))  # the same callees recur in every file

    def arguments(self, call: ast.Call) -> str:
        pieces = [self.code(a) for a in call.args]
        pieces += [(f"{k.arg}=" if k.arg else "**") + self.code(k.value) for k in call.keywords]
        return ", ".join(pieces)

    def code(self, node: ast.expr) -> str:
        first, last = node.lineno - 1, node.end_lineno - 1
        if last >= len(self.text.lines):
            return ast.unparse(node)
        if first == last:
            return self.text.lines[first].encode()[node.col_offset:node.end_col_offset].decode(errors="replace")
        head = self.text.lines[first].encode()[node.col_offset:].decode(errors="replace")
        tail = self.text.lines[last].encode()[:node.end_col_offset].decode(errors="replace")
        return "".join([head, *self.text.lines[first + 1:last], tail])

    def constructed(self, value: ast.AST) -> tuple[str | None, str | None, ast.Call | None]:
        """(callee, alias, call) for the value of an assignment, seeing through wrappers."""
        for _ in range(8):
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) \
                    and value.func.attr in _SELF_RETURNING:
                value = value.func.value
                continue
            if isinstance(value, ast.Call):
                callee = self.dotted(value.func)
                if callee in _WRAPPERS and value.args:
                    value = value.args[0]
                    continue
                return callee, None, value
            if isinstance(value, ast.Name):
                return None, value.id, None
            if isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name) and value.value.id == "self":
                return None, f"self.{value.attr}", None
            return None, None, None
        return None, None, None

    # walking ---------------------------------------------------------------------------------

    def visit_body(self, body: list[ast.stmt], scope: str, qual: str, cls: str | None = None) -> None:
        for statement in body:
            self.statement(statement, scope, qual, cls)

    def statement(self, node: ast.stmt, scope: str, qual: str, cls: str | None) -> None:
        if isinstance(node, ast.ClassDef):
            self.class_def(node, f"{qual}.{node.name}")
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.function_def(node, f"{qual}.{node.name}", cls)
            return
        if not cls:  # module level and plain functions: statements a driver runs before its call
            self.facts.statement_lines.append(node.lineno - 1)
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                self.bind(target, node.value, scope, cls, node.lineno - 1)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None:
                    self.bind(item.optional_vars, item.context_expr, scope, cls, node.lineno - 1)
        self.expressions(node, scope, cls)
        for child_body in _child_bodies(node):
            self.visit_body(child_body, scope, qual, cls)

    def class_def(self, node: ast.ClassDef, qualname: str) -> None:
        forward = next((s for s in node.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))
                        and s.name == "forward"), None)
        builds = self.builds(node)
        self.facts.classes[qualname] = ClassFacts(
            qualname, node.lineno - 1, node.end_lineno - 1,
            tuple(b for b in (self.dotted(base) for base in node.bases) if b),
            forward.lineno - 1 if forward else None, forward.end_lineno - 1 if forward else None,
            tuple(a.arg for a in (forward.args.posonlyargs + forward.args.args)[1:]) if forward else (),
            tuple(builds))
        for statement in node.body:
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.function_def(statement, f"{qualname}.{statement.name}", qualname)
            elif isinstance(statement, ast.ClassDef):
                self.class_def(statement, f"{qualname}.{statement.name}")
        self.held_and_called(qualname)

    def held_and_called(self, qualname: str) -> None:
        """`Trainer(model)` keeps `self.model = model` and calls `self.model(batch)` in a method:
        its constructor calls that parameter, like a function that calls its argument."""
        init = self.facts.functions.get(f"{qualname}.__init__")
        if init is None:
            return
        called = {c.name for c in self.facts.name_calls if c.scope == qualname}
        held = {init.params.index(b.alias) for b in self.facts.bindings
                if b.scope == qualname and b.name in called and b.alias in init.params}
        if held - set(init.called_params):
            self.facts.functions[init.qualname] = replace(init, called_params=tuple(sorted(held | set(init.called_params))))

    def function_def(self, node: ast.FunctionDef | ast.AsyncFunctionDef, qualname: str, cls: str | None) -> None:
        args = node.args
        params = tuple(a.arg for a in args.posonlyargs + args.args)
        if cls is not None and params[:1] in (("self",), ("cls",)):
            params = params[1:]
        called = set()
        for call in self.inside.calls[node]:
            name = _called_name(call)
            if name in params:
                called.add(params.index(name))
        self.facts.functions[qualname] = FunctionFacts(
            qualname, node.lineno - 1, params, tuple(sorted(called)), self.returns(node), self.builds(node))
        self.visit_body(node.body, qualname, qualname, cls)

    def builds(self, definition: ast.AST) -> tuple[str, ...]:
        """The callees of every call inside a class or function (nested ones included)."""
        return tuple(sorted({c for c in (self.dotted(call.func) for call in self.inside.calls[definition]) if c}))

    def returns(self, function: ast.AST) -> tuple[tuple[str, ...], ...]:
        """What each position of the returned value may be: callees or local names (`=name`)."""
        positions: list[set[str]] = []
        for node in self.inside.returns[function]:
            if node.value is None:
                continue
            items = node.value.elts if isinstance(node.value, ast.Tuple) else [node.value]
            for index, item in enumerate(items):
                while len(positions) <= index:
                    positions.append(set())
                callee, alias, _ = self.constructed(item)
                if callee:
                    positions[index].add(callee)
                elif alias:
                    positions[index].add("=" + alias)
        return tuple(tuple(sorted(p)) for p in positions)

    def bind(self, target: ast.AST, value: ast.AST, scope: str, cls: str | None, line: int) -> None:
        if isinstance(target, (ast.Tuple, ast.List)):
            for index, element in enumerate(target.elts):
                if isinstance(element, ast.Name):
                    callee, alias, call = self.constructed(value)
                    if callee or alias:
                        self.facts.bindings.append(Binding(scope, element.id, line, callee, alias,
                                                           self.arguments(call) if call else "", index,
                                                           _argument_names(call)))
            return
        key = _target_name(target)
        if key is None:
            return
        if key.startswith("self."):
            if cls is None:
                return
            scope = cls
        callee, alias, call = self.constructed(value)
        if callee and callee.startswith(_NEVER_CONSTRUCTIONS):
            return  # `x = self.conv(x)`, `y = torch.cat(...)`: a forward's lines, never a model
        if callee or alias:
            self.facts.bindings.append(Binding(scope, key, line, callee, alias, self.arguments(call) if call else "",
                                               None, _argument_names(call)))

    def expressions(self, statement: ast.stmt, scope: str, cls: str | None) -> None:
        """Calls in the statement itself (not in nested bodies, which are visited on their own)."""
        for node in self.inside.own_calls.get(statement, ()):
            callee = self.dotted(node.func)
            if callee is not None and not scope:
                self.facts.module_calls.append(callee)
            if callee is not None and any(callee == d or (d.endswith((".", "_")) and callee.startswith(d))
                                          for d in _DATA_LOADING):
                self.facts.data_lines.append(node.lineno - 1)
            name = _called_name(node)
            if name is not None and not (name.startswith("self.") and cls is None):
                owner = cls if name.startswith("self.") else scope
                self.facts.name_calls.append(NameCall(owner, name, scope, node.lineno - 1, node.end_lineno - 1,
                                                      node.col_offset, node.end_col_offset))
            if isinstance(node.func, ast.Call):
                inner, _, inner_call = self.constructed(node.func)
                if inner:
                    self.facts.direct_calls.append(DirectCall(inner, node.lineno - 1, self.arguments(inner_call), scope))
            if callee is not None:
                passed = [(index, None, arg) for index, arg in enumerate(node.args)]
                passed += [(None, keyword.arg, keyword.value) for keyword in node.keywords if keyword.arg]
                for index, keyword, value in passed:
                    self.argument_pass(scope, callee, index, keyword, value, node.lineno - 1)

    def argument_pass(self, scope: str, function: str, index: int | None, keyword: str | None, value: ast.expr,
                      line: int) -> None:
        if isinstance(value, ast.Name):
            self.facts.passes.append(ArgumentPass(scope, function, value.id, index, keyword, line))
        elif isinstance(value, ast.Call):
            built, _, _ = self.constructed(value)
            if built and not built.startswith(_NEVER_CONSTRUCTIONS):
                self.facts.passes.append(ArgumentPass(scope, function, "", index, keyword, line, built))


def _argument_names(call: ast.Call | None) -> tuple[str, ...]:
    if call is None:
        return ()
    values = list(call.args) + [k.value for k in call.keywords]
    values = [v.value if isinstance(v, ast.Starred) else v for v in values]
    return tuple(dict.fromkeys(v.id for v in values if isinstance(v, ast.Name)))


def _called_name(call: ast.Call) -> str | None:
    """`model` for `model(x)` and `model.forward(x)`; `self.encoder` likewise."""
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr == "forward":
        func = func.value
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self":
        return f"self.{func.attr}"
    return None


def _target_name(target: ast.AST) -> str | None:
    if isinstance(target, ast.Name):
        return target.id
    if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
        return f"self.{target.attr}"
    return None


def _child_bodies(node: ast.stmt) -> list[list[ast.stmt]]:
    bodies = []
    for name in ("body", "orelse", "finalbody"):
        value = getattr(node, name, None)
        if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
            bodies.append(value)
    for handler in getattr(node, "handlers", []) or []:
        bodies.append(handler.body)
    for case in getattr(node, "cases", []) or []:
        bodies.append(case.body)
    return bodies
