"""Which Python runs the shape worker (and, by default, training runs): the project's.

Real projects import their own dependencies (einops, timm, their own package installed in
editable mode), which live in the project's environment, not in torch-lsp's. Order: the
setting `execution.python`, the workspace's `.venv`/`venv`, an active `VIRTUAL_ENV` or conda
environment, else torch-lsp's own interpreter. That interpreter needs only torch: the worker's
code is loaded from torch-lsp's installation (`worker_command`), through a folder that holds
nothing but a link to the `torch_lsp` package, so none of torch-lsp's own dependencies (its
torch, pygls, ...) can shadow the project's.

Stdlib only; no torch (the server calls this).
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch_lsp

_VENV_FOLDERS = (".venv", "venv")


@dataclass(frozen=True)
class Interpreter:
    path: str
    source: str  # where it was found, in words: "execution.python", "the workspace's .venv", ...

    @property
    def is_own(self) -> bool:
        """torch-lsp's own interpreter and environment (not just the same Python binary: a venv's
        python is a link to the base interpreter, with other site-packages)."""
        return _environment(self.path) == _environment(sys.executable)

    def describe(self) -> str:
        return f"{self.path} ({self.source})"


def _environment(python: str) -> str:
    """The environment a python executable belongs to: its `bin/..` (as spelled, not resolved)."""
    return os.path.normcase(os.path.abspath(os.path.join(os.path.dirname(python), os.pardir)))


def _python_in(env: Path) -> Path | None:
    for candidate in (env / "bin" / "python", env / "bin" / "python3", env / "Scripts" / "python.exe"):
        if candidate.is_file():
            return candidate
    return None


def find_interpreter(setting: str | None = None, root: Path | None = None,
                     environ: dict[str, str] | None = None) -> Interpreter:
    environ = os.environ if environ is None else environ
    if setting:
        path = Path(os.path.expanduser(setting))
        if not path.is_absolute() and root is not None:
            path = root / path
        if path.is_dir():  # an environment folder rather than its python
            path = _python_in(path) or path
        return Interpreter(str(path), "execution.python")
    if root is not None:
        for folder in _VENV_FOLDERS:
            python = _python_in(root / folder)
            if python is not None:
                return Interpreter(str(python), f"the workspace's {folder}")
    for variable, what in (("VIRTUAL_ENV", "VIRTUAL_ENV"), ("CONDA_PREFIX", "the active conda environment")):
        value = environ.get(variable)
        python = _python_in(Path(value)) if value else None
        if python is not None:
            return Interpreter(str(python), what)
    return Interpreter(sys.executable, "torch-lsp's own")


_BOOTSTRAP = ("import sys; sys.path.insert(0, sys.argv[1]); "
              "from torch_lsp.shapes.worker import main; main()")


def worker_command(interpreter: Interpreter) -> tuple[list[str], str | None]:
    """The command that starts the shape worker in `interpreter`, and a temporary folder to
    remove when the worker is done (None when nothing was created)."""
    if interpreter.is_own:
        return [interpreter.path, "-m", "torch_lsp.shapes.worker"], None
    folder = tempfile.mkdtemp(prefix="torch-lsp-worker-")
    package = os.path.dirname(os.path.abspath(torch_lsp.__file__))
    os.symlink(package, os.path.join(folder, "torch_lsp"))
    return [interpreter.path, "-c", _BOOTSTRAP, folder], folder
