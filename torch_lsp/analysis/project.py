"""Where a file sits in its project: the workspace root, its package, and the `sys.path` it needs.

Pure (paths and the file system's `exists`, no torch, no LSP types). Real repositories are run
from their root (`python train.py`, `python -m pkg.train`), while `torch-lsp shapes FILE` and the
editor start from one file; these rules rebuild the context the author had in mind:

- **workspace root**: the nearest folder above the file holding `pyproject.toml`, `setup.py`,
  `setup.cfg` or `.git`; else the top of the file's package chain; else the file's folder;
- **package context**: a file inside a package (folders with `__init__.py`) is the module
  `pkg.sub.mod` and runs like `python -m pkg.sub.mod`, so relative imports work;
- **sys.path**: the folder above the top package first (what `python -m pkg.mod` gives), then
  the file's folder (what `python pkg/mod.py` gives: sibling imports), then the workspace root
  and its `src/` (the src layout), without duplicates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT_MARKERS = ("pyproject.toml", "setup.py", "setup.cfg", ".git")


@dataclass(frozen=True)
class PackageContext:
    """How to run one file: `module` is None for a plain script outside any package."""

    path: str
    module: str | None  # "pkg.sub.mod" (a package's __init__.py is "pkg.sub")
    package: str | None  # __package__ of the running module ("pkg.sub"), None for a script
    package_root: str  # the folder on sys.path from which `module` is importable
    roots: tuple[str, ...]  # sys.path entries, first wins


def workspace_root(path: str | os.PathLike, stop_at: str | os.PathLike | None = None) -> Path:
    """The project folder of `path` (a file or folder); `stop_at` bounds the walk (the editor's
    workspace folder), never looking above it."""
    start = Path(path).resolve()
    folder = start if start.is_dir() else start.parent
    limit = Path(stop_at).resolve() if stop_at is not None else None
    for candidate in (folder, *folder.parents):
        if any((candidate / marker).exists() for marker in ROOT_MARKERS):
            return candidate
        if limit is not None and candidate == limit:
            break
    top = package_top(folder)
    if top is not None:
        return top.parent
    return limit if limit is not None and limit in folder.parents else folder


def package_top(folder: Path) -> Path | None:
    """The outermost folder of the package chain holding `folder` (None: not in a package)."""
    top = None
    current = folder
    while (current / "__init__.py").exists():
        top = current
        if current.parent == current:
            break
        current = current.parent
    return top


def module_name(path: Path) -> tuple[str | None, Path]:
    """(dotted module name inside its package, the folder it is importable from), or
    (None, the file's folder) for a file outside any package."""
    path = path.resolve()
    folder = path.parent
    top = package_top(folder)
    if top is None:
        return None, folder
    parts = list(folder.relative_to(top.parent).parts)
    if path.stem != "__init__":
        parts.append(path.stem)
    if not all(p.isidentifier() for p in parts):
        return None, top.parent  # not importable by name (a folder such as `02-intro`)
    return ".".join(parts), top.parent


def package_context(path: str | os.PathLike, root: str | os.PathLike | None = None) -> PackageContext:
    """The context `path` runs in, inside the workspace `root` (found when not given)."""
    file = Path(path).resolve()
    workspace = Path(root).resolve() if root is not None else workspace_root(file)
    module, package_root = module_name(file)
    package = None
    if module is not None:
        package = module if file.stem == "__init__" else module.rpartition(".")[0] or None
    roots = _unique([package_root, file.parent, workspace, *_src_layout(workspace)])
    return PackageContext(str(file), module, package, str(package_root), tuple(str(r) for r in roots))


def _src_layout(workspace: Path) -> list[Path]:
    src = workspace / "src"
    return [src] if src.is_dir() and not (src / "__init__.py").exists() else []


def _unique(paths: list[Path]) -> list[Path]:
    seen: list[Path] = []
    for p in paths:
        if p not in seen:
            seen.append(p)
    return seen
