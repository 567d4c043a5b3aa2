"""Notes from the stand-ins and script helpers (inputs.py, datasets.py, script_env.py) to the
user, through the running job's context (context.py): "CIFAR10 replaced by FakeData (3×32×32,
10 classes): nothing was downloaded", "required options were not given; ran with ...".

A note belongs at the user's line that led to it: the innermost frame of a recorded file. Outside
a job (a helper called from a test) notes are dropped. Stdlib only.
"""

from __future__ import annotations

import os

from torch_lsp.shapes import context


def note(kind: str, message: str, where: tuple[str | None, int] | None = None) -> None:
    """Tell the user `message` at `where` (file, 0-based line), or at the user's line running now."""
    job = context.current()
    if job is None:
        return
    if where is not None and where[0] is not None:
        job.note(message, where[0], where[1], kind)
    else:
        job.note_here(message, kind)


def here() -> tuple[str | None, int]:
    """(file, 0-based line) of the user's code running now: for messages that name the line."""
    job = context.current()
    where = job.user_line() if job is not None else None
    return where if where is not None else (None, 0)


def workspace() -> str | None:
    job = context.current()
    return job.spec.workspace if job is not None else None


def is_project_file(filename: str) -> bool:
    """Is this code file the project's own (in the workspace, not an installed package)? Notes
    about what a library does on its own (and handles) are not the user's business."""
    job = context.current()
    workspace = job.spec.workspace if job is not None else None
    if not workspace or not filename or filename.startswith("<"):
        return job is not None and filename in job.spec.recorded
    path = os.path.abspath(filename)
    inside = os.path.commonpath([os.path.abspath(workspace), path]) == os.path.abspath(workspace)
    folders = os.path.relpath(path, workspace).split(os.sep)[:-1]
    return inside and not any(f in ("site-packages", "dist-packages") or f.startswith(".") for f in folders)
