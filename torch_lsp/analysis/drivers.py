"""Which file to run so that a document's nn.Module classes run: its *driver*.

Pure: facts from the workspace index (workspace.py) and paths (project.py); no torch, no LSP
types. The choice, in order:

1. the driver that reaches the most of the document's classes (a class is reached when the
   driver calls an instance of it, or of a class that builds it or derives from it);
2. on a tie, the document itself (its own script code then shows shapes too);
3. then files that load no data before the call (datasets and files are stand-ins at best);
4. then the fewest statements before the first call (the shortest plan to the forward);
5. then the file nearest to the document.

Ranked are the document itself and the files whose live uses reach one of its classes (the
index keeps them: `WorkspaceIndex.runners_of`); no other file could win rule 1.

The result is a `RunSpec` the shape engine understands: the driver, how to run it (its package
module for `python -m`-style runs, the `sys.path` roots, the working directory) and the call
sites, which the server shows as `relatedInformation` and in the hover ("from train.py:42").
Classes that no driver reaches are listed in `unreached`: synthesized calls are tried for them.

`choose_driver_alone` makes the same choice from an index of the document alone, where no other
file can change it (the document runs every class it defines): jobs then need not wait for the
workspace's first scan.
"""

from __future__ import annotations

import builtins
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch_lsp.analysis.project import package_context, workspace_root
from torch_lsp.analysis.workspace import ClassRef, Use, WorkspaceIndex, is_torch_module_base


@dataclass(frozen=True)
class CallSite:
    """Where the driver runs a class of the document (0-based line)."""

    path: str
    line: int
    cls: str  # qualified name of the class called there (it may build the document's class)
    via: str  # "call", "argument" (passed to a function that calls it), "direct"


@dataclass(frozen=True)
class RunSpec:
    document: str
    driver: str
    module: str | None  # the driver's package module ("pkg.train"): run like `python -m`
    package: str | None  # its __package__
    roots: tuple[str, ...]  # sys.path entries, first wins
    cwd: str
    workspace_root: str
    call_sites: tuple[CallSite, ...] = ()
    reached: tuple[str, ...] = ()  # the document's classes the driver runs (qualified names)
    unreached: tuple[str, ...] = ()  # the document's classes nothing runs
    loads_data: bool = False
    statements_before: int = 0
    argv: tuple[str, ...] = field(default=())  # filled from settings by the caller

    @property
    def runs_itself(self) -> bool:
        return self.driver == self.document

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunSpec":
        data = dict(data)
        data["call_sites"] = tuple(CallSite(**c) for c in data.get("call_sites", ()))
        for key in ("roots", "reached", "unreached", "argv"):
            data[key] = tuple(data.get(key, ()))
        return cls(**data)


@dataclass(frozen=True)
class _Candidate:
    path: str
    reached: frozenset[ClassRef]
    uses: tuple[Use, ...]
    loads_data: bool
    statements_before: int


def choose_driver(index: WorkspaceIndex, document: str | os.PathLike) -> RunSpec:
    """The run spec for `document`: itself, or the workspace file that runs its classes best."""
    document = str(Path(document).resolve())
    classes = set(index.classes_in(document))
    candidates = [c for c in (_candidate(index, path, classes) for path in _driver_paths(index, document, classes))
                  if c is not None and (c.reached or c.path == document)]
    best = min(candidates, key=lambda c: _rank(c, document), default=None)
    if best is None or not best.reached:
        return run_spec(document, document, index.root, unreached=classes)
    return run_spec(document, best.path, index.root, best.uses, best.reached, classes - best.reached,
                    best.loads_data, best.statements_before)


def choose_driver_alone(index: WorkspaceIndex, document: str | os.PathLike) -> RunSpec | None:
    """`choose_driver`'s answer when `index` holds the document alone and that answer cannot
    depend on the rest of the workspace; None when it could. It cannot when which of the
    document's classes are nn.Modules is decided by the document itself and it runs all of
    them: other files only add uses, so the document keeps reaching them all, and it wins the
    tie (rule 2). Its call sites may then lack uses through other files' functions."""
    document = str(Path(document).resolve())
    facts = index.files.get(document)
    if facts is None or facts.error or not all(
            _base_decided_alone(index, document, base) for cls in facts.classes.values() for base in cls.bases):
        return None
    run = choose_driver(index, document)
    return run if run.runs_itself and not run.unreached else None


def _base_decided_alone(index: WorkspaceIndex, document: str, base: str) -> bool:
    """Is the base an nn.Module, or not, whatever other files of the workspace hold? torch's own
    bases, the document's own classes, the standard library's and builtins' are (unless the
    workspace holds a module of that name: torch's own repository); a name of another module,
    or one a star import may bring, could be a workspace class."""
    if is_torch_module_base(base):
        return True
    found = index.resolve(base, document)
    if isinstance(found, ClassRef):
        return found.path == document
    top, dot, _ = base.partition(".")
    if dot:
        return (top == "torch" or top in sys.stdlib_module_names) and not _workspace_has_module(index, document, top)
    return not index.files[document].star_imports and hasattr(builtins, base)


def _workspace_has_module(index: WorkspaceIndex, document: str, top: str) -> bool:
    """Does `import top` reach a workspace file from `document` (its folder, the root, `src/`)?"""
    folders = {os.path.dirname(document), index.root, os.path.join(index.root, "src")}
    return any(os.path.exists(os.path.join(folder, top)) or os.path.exists(os.path.join(folder, top + ".py"))
               for folder in folders)


def run_spec(document: str, driver: str, root: str | None = None, uses=(), reached=frozenset(),
             unreached=frozenset(), loads_data: bool = False, statements_before: int = 0) -> RunSpec:
    """A RunSpec for running `driver` (with its package context) to analyse `document`."""
    root = str(Path(root).resolve()) if root else str(workspace_root(driver))
    context = package_context(driver, root)
    sites = tuple(CallSite(u.path, u.line, u.cls.qualname, u.via) for u in uses)
    return RunSpec(document=document, driver=driver, module=context.module, package=context.package,
                   roots=context.roots, cwd=os.path.dirname(driver), workspace_root=root, call_sites=sites,
                   reached=_names(reached), unreached=_names(unreached),
                   loads_data=loads_data, statements_before=statements_before)


def _names(classes) -> tuple[str, ...]:
    return tuple(sorted(c.qualname for c in classes))


def _driver_paths(index: WorkspaceIndex, document: str, classes: set[ClassRef]) -> list[str]:
    """The document itself, and the files that run any of its classes (no other file can reach
    one: it would be filtered out below)."""
    paths = [document] if document in index.files else []
    if classes:
        paths += sorted(index.runners_of(classes) - {document})
    return paths


def _candidate(index: WorkspaceIndex, path: str, classes: set[ClassRef]) -> _Candidate | None:
    reached: set[ClassRef] = set()
    uses: list[Use] = []
    for use in index.live_uses(path):
        hit = index.reach(use.cls) & classes
        if hit:
            reached |= hit
            uses.append(use)
    facts = index.files.get(path)
    if facts is None or facts.error:
        return None
    if not uses:
        return _Candidate(path, frozenset(), (), False, 0)
    first = min(u.line for u in uses)
    before = sum(1 for line in facts.statement_lines if line < first)
    loads = any(line < first for line in facts.data_lines)
    # Call sites first in line order, the document's own classes' direct calls before the rest.
    ordered = sorted(uses, key=lambda u: (u.cls not in classes, u.line))
    return _Candidate(path, frozenset(reached), tuple(ordered), loads, before)


def _rank(candidate: _Candidate, document: str):
    return (-len(candidate.reached), candidate.path != document, candidate.loads_data,
            candidate.statements_before, _distance(candidate.path, document), candidate.path)


def _distance(path: str, document: str) -> int:
    a, b = Path(path).parent.parts, Path(document).parent.parts
    common = 0
    for x, y in zip(a, b):
        if x != y:
            break
        common += 1
    return (len(a) - common) + (len(b) - common)
