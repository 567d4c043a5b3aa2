"""The workspace index: every nn.Module class of the project, where it is built and where called.

Pure (stdlib `ast` through workspace_facts.py; reads files only in `scan`), no torch, no LSP
types. Facts are kept per file and replaced when a file changes (`update`/`remove`: didOpen,
didChange, didSave, workspace/didChangeWatchedFiles); everything across files is resolved on
demand from those facts and memoised until the next change, so an edit costs one file's parse.

Names are resolved as Python would from the importing file: its own folder first (a script's
`sys.path[0]`), then the folders holding top-level packages, the workspace root and `src/`;
a name a module only re-exports (`from .model import GPT` in a package `__init__`) is followed
to its definition.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from torch_lsp.analysis.workspace_facts import ClassFacts, FileFacts, FunctionFacts, StatementParts, file_facts

# Bases that make a class an nn.Module besides anything under torch.nn with a capitalised name.
_MODULE_BASES = {"pytorch_lightning.LightningModule", "lightning.LightningModule",
                 "lightning.pytorch.LightningModule", "pytorch_lightning.core.LightningModule"}
_SKIPPED_DIRS = {"site-packages", "node_modules", "__pycache__", "build", "dist", "venv", "env",
                 "wandb", "outputs", "lightning_logs"}


def is_torch_module_base(base: str) -> bool:
    """An nn.Module base of torch or Lightning, whatever the workspace holds."""
    return base in _MODULE_BASES or (base.startswith("torch.nn.") and base.rpartition(".")[2][:1].isupper())


@dataclass(frozen=True)
class ScanLimits:
    max_files: int = 5000
    max_file_bytes: int = 1_000_000


@dataclass(frozen=True)
class ScanResult:
    files: int
    skipped_large: int
    truncated: bool  # max_files reached: the rest of the workspace is not indexed
    seconds: float


@dataclass(frozen=True)
class ClassRef:
    path: str
    qualname: str  # module-qualified: pkg.models.Net

    @property
    def name(self) -> str:
        return self.qualname.rpartition(".")[2]


@dataclass(frozen=True)
class FunctionRef:
    path: str
    qualname: str


@dataclass(frozen=True)
class Use:
    """`cls` runs in `path` because of the statement at `line` (0-based): a call of an instance,
    an instance passed to a function that calls it, or a construction called at once."""

    cls: ClassRef
    path: str
    line: int
    via: str  # "call", "argument", "direct"
    construction_line: int | None = None
    scope: str = ""  # the function the use is written in ("" at module level)


@dataclass(frozen=True)
class Construction:
    """`cls(...)` built at `line` (0-based) of `path`, with the call's arguments as written."""

    cls: ClassRef
    path: str
    line: int
    arguments: str


@dataclass
class _Memo:
    resolved: dict = field(default_factory=dict)
    module_classes: set[ClassRef] | None = None
    uses: dict[str, list[Use]] = field(default_factory=dict)
    reach: dict[ClassRef, frozenset[ClassRef]] = field(default_factory=dict)
    live: dict[str, frozenset[tuple[str, str]]] = field(default_factory=dict)
    package_roots: list[str] | None = None
    # Which files run which classes (`runners_of`): built once from every file's live uses,
    # then kept current file by file (`stale`: files forgotten since).
    runners: dict[ClassRef, set[str]] | None = None
    reached_from: dict[str, frozenset[ClassRef]] = field(default_factory=dict)
    stale: set[str] = field(default_factory=set)

    def forget(self, path: str) -> None:
        """Drop what depends on `path`'s own positions and module-level code only."""
        self.uses.pop(path, None)
        self.live.pop(path, None)
        self.stale.add(path)


class WorkspaceIndex:
    def __init__(self, root: str | os.PathLike, limits: ScanLimits = ScanLimits()) -> None:
        self.root = str(Path(root).resolve())
        self.limits = limits
        self.files: dict[str, FileFacts] = {}
        self._parts: dict[str, StatementParts] = {}  # open buffers' statements (`update`)
        self._memo = _Memo()

    # maintenance ------------------------------------------------------------------------------

    def scan(self) -> ScanResult:
        """Index every Python file under the root (bounded; see ScanLimits). Run it off the
        event loop: 2-2.7x a bare `ast.parse` of the same files (docs/benchmarks.md)."""
        started = time.perf_counter()
        selection = FileSelection(self.root, self.limits)
        found = 0
        for path in selection:
            try:
                with open(path, encoding="utf-8", errors="replace") as handle:
                    source = handle.read()
            except OSError:
                continue
            self._store(path, source)
            found += 1
        self._memo = _Memo()
        return ScanResult(found, selection.large, selection.truncated, time.perf_counter() - started)

    def adopt(self, files: dict[str, FileFacts]) -> None:
        """Take the facts of a scan made elsewhere (another process: shapes/scan_process.py)."""
        self.files.update(files)
        self._memo = _Memo()

    def update(self, path: str | os.PathLike, source: str, buffer: bool = False) -> bool:
        """A file's new text (an open buffer's, unsaved, or the disk's after a change). True
        when what other files see of it changed (its classes, functions, imports, bindings);
        False for typing inside a function, whose facts hold for the other files.

        `buffer`: the text of an open document, which will change again: what each of its
        top-level statements adds to the facts is kept, so that the next version walks only
        the statements an edit changed (workspace_facts.StatementParts)."""
        path = str(Path(path).resolve())
        old = self.files.get(path)
        if buffer:
            parts = self._parts.setdefault(path, StatementParts())
        else:  # the disk's text: what a buffer of it kept goes
            self._parts.pop(path, None)
            parts = None
        if len(source) > self.limits.max_file_bytes or "\x00" in source:
            self.files.pop(path, None)
        else:
            self._store(path, source, parts)
        new = self.files.get(path)
        if old is None and new is None:
            return False
        if old is not None and new is not None and old.signature() == new.signature():
            self._memo.forget(path)
            return False
        self._memo = _Memo()
        return True

    def remove(self, path: str | os.PathLike) -> None:
        self.files.pop(str(Path(path).resolve()), None)
        self._parts.pop(str(Path(path).resolve()), None)
        self._memo = _Memo()

    def contains(self, path: str | os.PathLike) -> bool:
        return str(Path(path).resolve()) in self.files

    def _indexed_path(self, path: str | os.PathLike) -> str:
        """The index's key for `path`: queries pass the index's own keys (already resolved) far
        more often than editors' paths, and resolving costs a system call per folder."""
        if isinstance(path, str) and path in self.files:
            return path
        return str(Path(path).resolve())

    def _store(self, path: str, source: str, parts: StatementParts | None = None) -> None:
        module, is_package = self._module_name(path)
        self.files[path] = file_facts(path, module, source, is_package, parts)

    def _module_name(self, path: str) -> tuple[str, bool]:
        folder, name = os.path.split(path)
        stem = name[:-3]
        parts = [] if stem == "__init__" else [stem]
        while os.path.exists(os.path.join(folder, "__init__.py")) or os.path.join(folder, "__init__.py") in self.files:
            folder, package = os.path.split(folder)
            parts.insert(0, package)
            if not folder or folder == os.path.dirname(folder):
                break
        return ".".join(parts) or stem, stem == "__init__"

    # resolution -------------------------------------------------------------------------------

    def package_roots(self) -> list[str]:
        if self._memo.package_roots is None:
            roots = [self.root]
            src = os.path.join(self.root, "src")
            if os.path.isdir(src):
                roots.append(src)
            for path, facts in self.files.items():
                is_init = os.path.basename(path) == "__init__.py"
                if "." not in facts.module and not is_init:
                    continue  # a plain script: its folder is on sys.path only when it runs
                top = path
                for _ in range(facts.module.count(".") + 1 + is_init):
                    top = os.path.dirname(top)
                if top not in roots:
                    roots.append(top)
            self._memo.package_roots = roots
        return self._memo.package_roots

    def find_module(self, dotted: str, importer: str) -> str | None:
        """The indexed file that `import dotted` reaches from `importer`, if any."""
        relative = dotted.replace(".", os.sep)
        for folder in [os.path.dirname(importer), *self.package_roots()]:
            for candidate in (os.path.join(folder, relative + ".py"), os.path.join(folder, relative, "__init__.py")):
                if candidate in self.files:
                    return candidate
        return None

    def resolve(self, dotted: str, importer: str, _depth: int = 0) -> ClassRef | FunctionRef | None:
        """The workspace class or function `dotted` (absolute, as written in the facts) names."""
        key = (dotted, importer)
        if key in self._memo.resolved:
            return self._memo.resolved[key]
        self._memo.resolved[key] = None  # cycle guard (a package importing itself)
        result = self._resolve(dotted, importer, _depth) if _depth < 12 else None
        self._memo.resolved[key] = result
        return result

    def _resolve(self, dotted: str, importer: str, depth: int) -> ClassRef | FunctionRef | None:
        parts = dotted.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            path = self.find_module(".".join(parts[:cut]), importer)
            if path is not None:
                return self._resolve_in(path, parts[cut:], depth)
        if len(parts) == 1:  # an unqualified name: defined in the importer, or star-imported
            return self._resolve_in(importer, parts, depth) if importer in self.files else None
        return None

    def _resolve_in(self, path: str, names: list[str], depth: int) -> ClassRef | FunctionRef | None:
        facts = self.files[path]
        qualname = ".".join([facts.module, *names])
        if qualname in facts.classes:
            return ClassRef(path, qualname)
        if qualname in facts.functions:
            return FunctionRef(path, qualname)
        target = facts.imports.get(names[0])
        if target is not None and target != f"{facts.module}.{names[0]}":
            return self.resolve(".".join([target, *names[1:]]), path, depth + 1)
        for star in facts.star_imports:
            found = self.resolve(".".join([star, *names]), path, depth + 1)
            if found is not None:
                return found
        return None

    # classes ----------------------------------------------------------------------------------

    def class_facts(self, ref: ClassRef) -> ClassFacts | None:
        facts = self.files.get(ref.path)
        return facts.classes.get(ref.qualname) if facts else None

    def module_classes(self) -> set[ClassRef]:
        """Every nn.Module subclass defined in the workspace (through workspace base classes)."""
        if self._memo.module_classes is None:
            found: set[ClassRef] = set()
            candidates = [(ClassRef(p, q), c) for p, f in self.files.items() for q, c in f.classes.items()]
            changed = True
            while changed:
                changed = False
                for ref, cls in candidates:
                    if ref not in found and any(self._is_module_base(b, ref.path, found) for b in cls.bases):
                        found.add(ref)
                        changed = True
            self._memo.module_classes = found
        return self._memo.module_classes

    def _is_module_base(self, base: str, importer: str, found: set[ClassRef]) -> bool:
        return is_torch_module_base(base) or self.resolve(base, importer) in found

    def classes_in(self, path: str | os.PathLike) -> list[ClassRef]:
        path = self._indexed_path(path)
        modules = self.module_classes()
        facts = self.files.get(path)
        if facts is None:
            return []
        return sorted((r for r in (ClassRef(path, q) for q in facts.classes) if r in modules),
                      key=lambda r: facts.classes[r.qualname].line)

    def products(self, callee: str, importer: str, item: int | None = None, _depth: int = 0) -> set[ClassRef]:
        """Module classes that calling `callee` from `importer` may return: the class itself, or
        what a factory function returns (position `item` of a returned tuple)."""
        target = self.resolve(callee, importer)
        if isinstance(target, ClassRef):
            return {target} if target in self.module_classes() else set()
        if not isinstance(target, FunctionRef) or _depth > 5:
            return set()
        function = self.files[target.path].functions[target.qualname]
        return self._returned(function, target.path, item, _depth)

    def _returned(self, function: FunctionFacts, path: str, item: int | None, depth: int) -> set[ClassRef]:
        positions = function.returns
        if len(positions) > 1:  # `return model, criterion`: the caller unpacked one position
            values, item = (positions[item or 0] if (item or 0) < len(positions) else ()), None
        else:  # `return build(args)`: the position is the inner function's
            values = positions[0] if positions else ()
        found: set[ClassRef] = set()
        for value in values:
            if value.startswith("="):
                found |= self.instance_classes(path, function.qualname, value[1:], depth + 1)[0]
            else:
                found |= self.products(value, path, item, depth + 1)
        return found

    def _bindings(self, path: str, scope: str, name: str):
        return [b for b in self.files[path].bindings if b.scope == scope and b.name == name]

    def instance_classes(self, path: str, scope: str, name: str, _depth: int = 0) -> tuple[set[ClassRef], int | None]:
        """Classes that run when the object `name` holds in `scope` of `path` runs (falling back
        to module scope): what built it, and the models and classes handed to its constructor.
        Also the line of the construction."""
        bindings = self._bindings(path, scope, name)
        if not bindings and scope and not name.startswith("self."):
            bindings = self._bindings(path, "", name)
        found: set[ClassRef] = set()
        line = None
        if _depth > 6:
            return found, line
        for binding in bindings:
            made: set[ClassRef] = set()
            if binding.callee:
                made = self.products(binding.callee, path, binding.item)
                for argument in binding.argument_names:
                    made |= self._argument_classes(path, binding.scope, argument, _depth)
            elif binding.alias and binding.alias != name:
                made, _ = self.instance_classes(path, binding.scope, binding.alias, _depth + 1)
            if made:
                found |= made
                line = binding.line if line is None else min(line, binding.line)
        return found, line

    def _argument_classes(self, path: str, scope: str, name: str, depth: int) -> set[ClassRef]:
        target = self.resolve(self.files[path].imports.get(name, name), path)
        if isinstance(target, ClassRef):
            return {target} if target in self.module_classes() else set()
        return self.instance_classes(path, scope, name, depth + 1)[0]

    # uses -------------------------------------------------------------------------------------

    def uses_in(self, path: str | os.PathLike) -> list[Use]:
        """Every place in `path` that runs a workspace module class, in line order."""
        path = self._indexed_path(path)
        if path in self._memo.uses:
            return self._memo.uses[path]
        facts = self.files.get(path)
        uses: list[Use] = []
        if facts is not None:
            for call in facts.name_calls:
                classes, built = self.instance_classes(path, call.scope, call.name)
                uses += [Use(c, path, call.line, "call", built, call.function) for c in classes]
            for direct in facts.direct_calls:
                uses += [Use(c, path, direct.line, "direct", direct.line, direct.scope)
                         for c in self.products(direct.callee, path)]
            for passed in facts.passes:
                uses += self._passed_uses(path, passed)
        uses = sorted(set(uses), key=lambda u: (u.line, u.cls.qualname))
        self._memo.uses[path] = uses
        return uses

    def _passed_uses(self, path: str, passed) -> list[Use]:
        """A model handed to a function, or to a plain class (a trainer), that calls it."""
        target = self.resolve(passed.function, path)
        if isinstance(target, ClassRef) and target not in self.module_classes():
            # (a module class runs what it is given when it is called: instance_classes)
            target = FunctionRef(target.path, f"{target.qualname}.__init__")
        if not isinstance(target, FunctionRef) or target.qualname not in self.files[target.path].functions:
            return []
        function = self.files[target.path].functions[target.qualname]
        position = passed.position
        if position is None and passed.keyword in function.params:
            position = function.params.index(passed.keyword)
        if position is None or position not in function.called_params:
            return []
        if passed.callee:
            classes, built = self.products(passed.callee, path), passed.line
        else:
            classes, built = self.instance_classes(path, passed.scope, passed.name)
        return [Use(c, path, passed.line, "argument", built, passed.scope) for c in classes]

    def reach(self, cls: ClassRef) -> frozenset[ClassRef]:
        """`cls` and every workspace module class running it may run: classes its methods build
        (children, also through factory functions) and its workspace base classes."""
        if cls in self._memo.reach:
            return self._memo.reach[cls]
        seen = {cls}
        todo = [cls]
        modules = self.module_classes()
        while todo:
            current = todo.pop()
            facts = self.class_facts(current)
            if facts is None:
                continue
            linked: set[ClassRef] = set()
            for callee in facts.builds:
                linked |= self.products(callee, current.path)
            for base in facts.bases:
                target = self.resolve(base, current.path)
                if isinstance(target, ClassRef) and target in modules:
                    linked.add(target)
            for ref in linked - seen:
                seen.add(ref)
                todo.append(ref)
        result = frozenset(seen)
        self._memo.reach[cls] = result
        return result

    def constructions_of(self, cls: ClassRef) -> list[Construction]:
        """Every place in the workspace that builds `cls` directly (`Net(...)`, `Net(...).to(d)`,
        `DDP(Net(...))`), with the arguments as source text (for synthesized calls)."""
        found = []
        for path, facts in self.files.items():
            for binding in facts.bindings:
                if binding.callee and binding.item is None and self.resolve(binding.callee, path) == cls:
                    found.append(Construction(cls, path, binding.line, binding.arguments))
            for direct in facts.direct_calls:
                if self.resolve(direct.callee, path) == cls:
                    found.append(Construction(cls, path, direct.line, direct.arguments))
        return sorted(set(found), key=lambda c: (c.path, c.line))

    def calls_of(self, cls: ClassRef) -> list[Use]:
        """Every place in the workspace that calls an instance of `cls` itself."""
        return [use for path in self.files for use in self.uses_in(path) if use.cls == cls]

    # what runs when a file runs ---------------------------------------------------------------

    def live_scopes(self, path: str | os.PathLike) -> frozenset[tuple[str, str]]:
        """(path, qualname) of the functions and classes that run when `path` runs as a script:
        what its module-level code (the `__main__` block included) calls, transitively, across
        workspace files. A class that is constructed counts with all of its methods."""
        path = self._indexed_path(path)
        if path in self._memo.live:
            return self._memo.live[path]
        facts = self.files.get(path)
        seen: set[tuple[str, str]] = set()
        todo = [(callee, path) for callee in facts.module_calls] if facts else []
        if facts is not None and "unittest.main" in facts.module_calls:  # runs every TestCase's tests
            todo += [(f"{facts.module}.{q[len(facts.module) + 1:]}", path) for q, cls in facts.classes.items()
                     if any(b.endswith("TestCase") for b in cls.bases)]
        while todo:
            callee, importer = todo.pop()
            target = self.resolve(callee, importer)
            if target is None or (target.path, target.qualname) in seen:
                continue
            seen.add((target.path, target.qualname))
            owner = self.files[target.path]
            if isinstance(target, FunctionRef):
                todo += [(c, target.path) for c in owner.functions[target.qualname].builds]
                continue
            todo += [(c, target.path) for c in owner.classes[target.qualname].builds]
            prefix = target.qualname + "."
            seen |= {(target.path, q) for q in owner.functions if q.startswith(prefix)}
        result = frozenset(seen)
        self._memo.live[path] = result
        return result

    def runners_of(self, classes: set[ClassRef]) -> set[str]:
        """The files whose live uses reach any of `classes`: the only drivers worth ranking for
        a document defining them. Ranking every file of the workspace for every job cost ~130
        ms per job on 1,480 files (bench/bench_workspace_index.py); the files that run each
        class are found once, and an edit that keeps a file's names updates that file alone."""
        memo = self._memo
        if memo.runners is None:
            memo.runners, memo.reached_from, memo.stale = {}, {}, set(self.files)
        for path in memo.stale:
            for cls in memo.reached_from.pop(path, ()):
                memo.runners[cls].discard(path)
            if path in self.files:
                reached = frozenset().union(*(self.reach(use.cls) for use in self.live_uses(path)))
                memo.reached_from[path] = reached
                for cls in reached:
                    memo.runners.setdefault(cls, set()).add(path)
        memo.stale = set()
        return set().union(*(memo.runners.get(cls, ()) for cls in classes))

    def live_uses(self, path: str | os.PathLike) -> list[Use]:
        """The uses of `path` that run when it runs as a script."""
        path = self._indexed_path(path)
        live = self.live_scopes(path)
        return [u for u in self.uses_in(path) if not u.scope or (path, u.scope) in live]


class FileSelection:
    """The files a scan indexes, in its order: the Python files under the root (`python_files`)
    within the size limit, at most `max_files` of them. One pass; `large` and `truncated` say
    what it left out. The scan and the early search for a document's runners
    (shapes/session.py) both go through it, so they see the same workspace."""

    def __init__(self, root: str, limits: ScanLimits) -> None:
        self.root, self.limits = root, limits
        self.large = 0
        self.truncated = False

    def __iter__(self):
        chosen = 0
        for path in python_files(self.root):
            if chosen >= self.limits.max_files:
                self.truncated = True
                return
            try:
                if os.path.getsize(path) > self.limits.max_file_bytes:
                    self.large += 1
                    continue
            except OSError:
                continue
            chosen += 1
            yield path


def python_files(root: str):
    """The Python files under `root` that a scan indexes, in its order: hidden folders, virtual
    environments and build folders are skipped."""
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _SKIPPED_DIRS
                         and not os.path.exists(os.path.join(folder, d, "pyvenv.cfg")))
        for name in sorted(names):
            if name.endswith(".py"):
                yield os.path.join(folder, name)
