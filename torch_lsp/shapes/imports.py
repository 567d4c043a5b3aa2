"""How a job imports the user's project (worker side; stdlib only).

- Every module of the workspace that the driver imports runs through the same line-preserving
  plan transform as the driver itself (analysis/plan.py): training loops once, checkpoints and
  optimizer steps left out, in `model.py` as in `train.py`. Lines and columns do not move, so
  shapes recorded in an imported file map straight back to it.
- Open editor buffers win over the disk: an unsaved `model.py` is what `import model` runs.
- Compiled code is never cached to disk (no `__pycache__` writes from analysis).

Installed as the first `sys.meta_path` finder of the job's fork; the warm worker never has it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types

from torch_lsp.analysis.plan import ExecutionPlan, build_plan


def _inside(folder: str | None, path: str) -> bool:
    if not folder:
        return False
    try:
        return os.path.commonpath([folder, path]) == folder
    except ValueError:  # different drives
        return False


# torch-lsp's own modules (imported lazily inside jobs) are never the project's, even when the
# project is torch-lsp's checkout.
_OWN_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _is_library(workspace: str, path: str) -> bool:
    """Installed packages, even when their environment lives inside the workspace (`.venv/`)."""
    folders = os.path.relpath(path, workspace).split(os.sep)[:-1]
    return any(p in ("site-packages", "dist-packages") or p.startswith(".") for p in folders) \
        or _inside(_OWN_PACKAGE, path)


class ProjectSources:
    """Source text and plans of the workspace's files, as this job sees them."""

    def __init__(self, workspace: str | None, overlay: dict[str, str], plans: dict[str, ExecutionPlan],
                 definitions_only: bool = False):
        self.workspace = os.path.abspath(workspace) if workspace else None
        self.overlay = {os.path.abspath(p): text for p, text in overlay.items()}
        self.plans = dict(plans)  # path -> plan; recorded files are built up front
        # A job of synthesized calls only: project modules are loaded for their definitions
        # (shapes/definitions.py), a failing top-level statement skipped, not fatal.
        self.definitions_only = definitions_only

    def owns(self, path: str) -> bool:
        path = os.path.abspath(path)
        if path in self.plans or path in self.overlay:
            return True
        return _inside(self.workspace, path) and not _is_library(self.workspace, path)

    def text(self, path: str) -> str:
        path = os.path.abspath(path)
        if path in self.overlay:
            return self.overlay[path]
        with open(path, "rb") as file:
            return importlib.util.decode_source(file.read())

    def plan(self, path: str) -> ExecutionPlan | None:
        """The plan of a project file (None when it does not parse: Python then raises the
        SyntaxError itself, at the right line)."""
        path = os.path.abspath(path)
        if path not in self.plans:
            plan = build_plan(self.text(path), path)
            self.plans[path] = plan
        plan = self.plans[path]
        return None if plan.error else plan


class _PlannedLoader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname: str, path: str, sources: ProjectSources):
        super().__init__(fullname, path)
        self.sources = sources

    def get_source(self, fullname: str) -> str:
        plan = self.sources.plan(self.path)
        return plan.source if plan is not None else self.sources.text(self.path)

    def get_code(self, fullname: str) -> types.CodeType:
        if self.sources.definitions_only:
            from torch_lsp.shapes.definitions import compile_definitions

            return compile_definitions(self.get_source(fullname), self.path)
        return compile(self.get_source(fullname), self.path, "exec", dont_inherit=True)


class _ProjectFinder(importlib.abc.MetaPathFinder):
    def __init__(self, sources: ProjectSources):
        self.sources = sources

    def find_spec(self, fullname, path, target=None):
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return None
        origin = os.path.abspath(spec.origin)
        if not self.sources.owns(origin):
            return None
        spec.loader = _PlannedLoader(fullname, origin, self.sources)
        return spec


def install(sources: ProjectSources) -> importlib.abc.MetaPathFinder:
    """Serve the project's modules planned and from the editor's buffers, until `uninstall`."""
    sys.dont_write_bytecode = True
    finder = _ProjectFinder(sources)
    finder.previous_main = sys.modules.get("__main__")
    sys.meta_path.insert(0, finder)
    _forget_project_listings(sources)
    return finder


def _forget_project_listings(sources: ProjectSources) -> None:
    """Python's finders cache each folder's listing until its mtime moves; a file created within
    the same timestamp tick (coarse on some file systems) would stay unseen. Forget the
    project's folders only: after `importlib.invalidate_caches()` a job's first import listed
    the standard library and site-packages again (0.3 ms). A job's fork inherits the warm
    worker's finders, made for `sys.path`'s folders; those of the project's packages are made
    in the fork, fresh. So: the folders on `sys.path` inside the workspace, and those of the
    job's files (hundreds of others, every package's, are not even looked at)."""
    keys = {os.path.dirname(path) for path in (*sources.plans, *sources.overlay)}
    keys.update(entry for entry in sys.path if sources.workspace and _project_folder(sources.workspace, entry))
    for key in keys:
        path_finder = sys.path_importer_cache.get(key, False)
        if path_finder is None:  # a folder not there before may be now
            sys.path_importer_cache.pop(key, None)
        elif path_finder is not False and hasattr(path_finder, "invalidate_caches"):
            path_finder.invalidate_caches()


def _project_folder(workspace: str, entry: str) -> bool:
    folder = os.path.abspath(entry or os.curdir)
    return (folder == workspace or folder.startswith(workspace + os.sep)) \
        and not _is_library(workspace, os.path.join(folder, "__init__.py"))


def uninstall(finder: importlib.abc.MetaPathFinder) -> None:
    """Undo `install` (in-process runs: tests, warm-up, the CPU re-run of a job)."""
    if finder in sys.meta_path:
        sys.meta_path.remove(finder)
    if getattr(finder, "previous_main", None) is not None:
        sys.modules["__main__"] = finder.previous_main


def load_file(path: str, sources: ProjectSources, roots: list[str], name: str | None = None) -> types.ModuleType:
    """The module object of a project file, imported by its dotted name (`name`, else the one
    under the longest root that contains it) so its own relative imports work, else loaded
    from its path."""
    path = os.path.abspath(path)
    main = sys.modules.get("__main__")
    if main is not None and getattr(main, "__file__", None) == path:
        return main
    name = name or module_name(path, roots)
    if name is not None:
        try:
            module = import_in_package(name, path)
            if os.path.abspath(getattr(module, "__file__", "") or "") == path:
                return module
        except ImportError:
            pass
    name = "_torch_lsp_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path, loader=_PlannedLoader(name, path, sources))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def module_name(path: str, roots: list[str]) -> str | None:
    """`pkg.sub.mod` for `<root>/pkg/sub/mod.py` under the longest root of `roots` whose
    folders down to the file are packages (or namespace folders)."""
    path = os.path.abspath(path)
    best = None
    for root in roots:
        root = os.path.abspath(root)
        if _inside(root, path) and root != path and (best is None or len(root) > len(best)):
            best = root
    if best is None:
        return None
    parts = os.path.relpath(path, best).split(os.sep)
    parts[-1] = os.path.splitext(parts[-1])[0]
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or not all(p.isidentifier() for p in parts):
        return None
    return ".".join(parts)


def import_in_package(name: str, path: str) -> types.ModuleType:
    """`importlib.import_module(name)`; when a parent package's `__init__` raises (a data file
    it reads is missing, an optional dependency is not installed), the parents are made again
    without running their `__init__` (see `_bare_packages`) and the module is imported in them."""
    return _with_bare_parents(importlib.import_module, name, path)


def _with_bare_parents(attempt, name: str, path: str):
    """`attempt(name)` (which imports the parent packages); once more in bare parents when a
    parent's `__init__` fails."""
    try:
        return attempt(name)
    except ImportError as error:
        if not _failed_in_parent(error, name):
            raise
        parents_error: BaseException = error
    except Exception as error:  # noqa: BLE001 - whatever the package's __init__ raised
        parents_error = error
    _bare_packages(name, path, parents_error)
    return attempt(name)


def _failed_in_parent(error: ImportError, name: str) -> bool:
    """Did the ImportError come from inside a parent package's `__init__` (not: no such module)?"""
    missing = getattr(error, "name", None)
    return bool(missing) and not name.startswith(missing) and missing != name


def _bare_packages(name: str, path: str, error: BaseException) -> None:
    """Register each parent package of `name` as a bare package (its folder as `__path__`, its
    `__init__` not run), and say so in the job's notes."""
    from torch_lsp.shapes import context

    parts = name.split(".")[:-1]
    folder = os.path.dirname(os.path.abspath(path))
    folders = []
    for _ in parts:
        folders.insert(0, folder)
        folder = os.path.dirname(folder)
    for index, (part, package_folder) in enumerate(zip(parts, folders)):
        dotted = ".".join(parts[: index + 1])
        for stale in [m for m in sys.modules if m == dotted or m.startswith(dotted + ".")]:
            sys.modules.pop(stale, None)
        spec = importlib.machinery.ModuleSpec(dotted, None, is_package=True)
        spec.submodule_search_locations = [package_folder]
        package = importlib.util.module_from_spec(spec)
        package.__file__ = os.path.join(package_folder, "__init__.py")
        sys.modules[dotted] = package
        if index:
            setattr(sys.modules[".".join(parts[:index])], part, package)
    job = context.current()
    if job is not None:
        text = str(error).strip().splitlines()[0][:160] if str(error).strip() else ""
        job.note(f"package {parts[0]}'s __init__ failed ({type(error).__name__}{': ' + text if text else ''}); "
                 f"{name} ran in its package without it", kind="package")
    importlib.invalidate_caches()


def main_module(filename: str, module: str | None) -> types.ModuleType:
    """A fresh `__main__` for the driver, with its package context when it runs as
    `python -m pkg.mod` would (relative imports work), registered in sys.modules. A parent
    package whose `__init__` fails is made bare (`_bare_packages`): the module still runs."""
    main = types.ModuleType("__main__")
    main.__file__ = filename
    main.__builtins__ = __builtins__
    if module and "." in module:
        main.__package__ = module.rpartition(".")[0]
        try:
            main.__spec__ = _spec_in_package(module, filename)
        except (ImportError, ValueError):
            main.__spec__ = None
    else:
        main.__package__ = None
        main.__spec__ = None
    sys.modules["__main__"] = main
    return main


def _spec_in_package(module: str, filename: str):
    """`find_spec(module)`, which imports the parent packages, with bare parents when one of
    their `__init__`s fails."""
    return _with_bare_parents(importlib.util.find_spec, module, filename)
