"""Start the shape worker the moment the server receives `initialize`, before it answers.

The worker spends seconds importing torch; the server needs about a second before it has
settings and a first document (importing pygls, `initialized`, `workspace/configuration`,
`didOpen`). Started here, the two overlap: the settings that decide where the worker runs
(`execution.enabled`, `execution.python`) are read from what `initialize` carries
(`initializationOptions`, the workspace's pyproject.toml), and the engine adopts this worker
when the merged settings agree (`take`), or stops it when they do not.

Stdlib only, and light to import: it runs before the server's own imports.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from torch_lsp.own_python import module_command
from torch_lsp.shapes.interpreter import Interpreter, find_interpreter, worker_command

PARALLEL_JOBS = 2  # the engine's default (shapes/engine.py)
# (interpreter, parallel jobs, process, temporary folder, the sandbox's scratch folder)
_started: tuple[Interpreter, int, subprocess.Popen, str | None, str | None] | None = None


def confined(command: list[str]) -> tuple[list[str], str | None]:
    """On Linux the worker starts inside its own sandbox (shapes/sandbox/launch.py): the
    project's interpreter is the repository's code too, and runs before any job. Returns the
    command and the scratch folder (the confined worker's TMPDIR: its jobs' folders)."""
    if not sys.platform.startswith("linux"):
        return command, None
    scratch = tempfile.mkdtemp(prefix="torch-lsp-jobs-")
    return module_command("torch_lsp.shapes.sandbox.launch", scratch, "--", *command), scratch


def worker_environment(interpreter: Interpreter, parallel: int) -> dict[str, str]:
    return {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1", "TORCH_LSP_PARALLEL_JOBS": str(parallel),
            "TORCH_LSP_INTERPRETER": interpreter.describe()}


def die_with_parent() -> None:
    """In the worker, before exec: if the server dies (even by SIGKILL), so does the worker,
    instead of finishing a multi-second torch import for nobody (Linux only)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def start_for_initialize(params: Any) -> None:
    """Start the worker for an `initialize` request's parameters, unless shape analysis is
    switched off there or it already started. Never raises: start-up must go on."""
    global _started
    if _started is not None or not isinstance(params, dict):
        return
    try:
        root = _root(params)
        execution = {**_pyproject_execution(root), **_option_execution(params.get("initializationOptions"))}
        if execution.get("enabled") is False:
            return
        python = execution.get("python") if isinstance(execution.get("python"), str) else None
        interpreter = find_interpreter(python, root)
        command, temporary = worker_command(interpreter)
        command, scratch = confined(command)
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                   env=worker_environment(interpreter, PARALLEL_JOBS), cwd=temporary,
                                   preexec_fn=die_with_parent)
        _started = (interpreter, PARALLEL_JOBS, process, temporary, scratch)
    except Exception:  # noqa: BLE001 - the engine starts one later, as without this
        return


def take(interpreter: Interpreter, parallel: int) -> tuple[subprocess.Popen, str | None, str | None] | None:
    """The early worker, if it runs in this interpreter with these settings (then it is the
    caller's); otherwise it is stopped and None is returned."""
    global _started
    started, _started = _started, None
    if started is None:
        return None
    early, early_parallel, process, temporary, scratch = started
    if early.path == interpreter.path and early_parallel == parallel and process.poll() is None:
        return process, temporary, scratch
    _stop(process, temporary, scratch)
    return None


def discard() -> None:
    """Shape analysis is off (or the server stops): the early worker is not needed."""
    global _started
    started, _started = _started, None
    if started is not None:
        _stop(*started[2:])


def _stop(process: subprocess.Popen, *folders: str | None) -> None:
    process.kill()
    process.wait()
    import shutil

    for folder in folders:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)


def _root(params: dict) -> Path | None:
    folders = params.get("workspaceFolders") or []
    uri = params.get("rootUri") or (folders[0].get("uri") if folders and isinstance(folders[0], dict) else None)
    if isinstance(uri, str) and uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(uri).path))
    path = params.get("rootPath")
    return Path(path) if isinstance(path, str) and path else None


def _option_execution(options: Any) -> dict:
    if isinstance(options, dict) and isinstance(options.get("torchLsp"), dict):
        options = options["torchLsp"]  # clients nest settings either way (server/app.py)
    execution = options.get("execution") if isinstance(options, dict) else None
    return execution if isinstance(execution, dict) else {}


def _pyproject_execution(root: Path | None) -> dict:
    if root is None or not (root / "pyproject.toml").is_file():
        return {}
    try:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        table = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, ValueError, ImportError):
        return {}
    execution = table.get("tool", {}).get("torch-lsp", {}).get("execution", {})
    return execution if isinstance(execution, dict) else {}
