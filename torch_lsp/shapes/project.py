"""Where a file sits in its project, in the form the shape session needs: the workspace root,
the `sys.path` roots a job needs and the dotted module name it runs under (package imports,
absolute and relative, then work as they do when the project runs its own scripts).

The rules live in analysis/project.py (pure, shared with the workspace index and the driver
choice); this module keeps the session's and the CLI's vocabulary.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch_lsp.analysis import project as rules


@dataclass(frozen=True)
class Layout:
    workspace: Path | None  # imported modules under it are the project's (planned, overlaid)
    roots: list[str]  # sys.path entries, first wins
    module: str | None  # `pkg.sub.mod` when the file is inside a package, else None


def package_root(path: Path) -> Path:
    """The folder above the outermost package containing `path` (its own folder if none)."""
    return rules.module_name(Path(path))[1]


def find_workspace_root(path: Path) -> Path:
    """For the CLI: the nearest folder above `path` with a project marker, else the top of its
    package chain, else its folder."""
    return rules.workspace_root(Path(os.path.abspath(path)))


def layout(path: str, workspace: Path | None) -> Layout:
    """`workspace` None (an editor without a root folder): the file's own project root."""
    root = Path(workspace) if workspace is not None else rules.workspace_root(os.path.abspath(path))
    context = rules.package_context(os.path.abspath(path), root)
    return Layout(root, list(context.roots), context.module)
