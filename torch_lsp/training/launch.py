"""Run a training script unchanged, under the probe: ``python launch.py SCRIPT [ARGS...]``.

The runner starts this file by path (also as torchrun's entry point), so it works with any
interpreter that has torch, even one where torch_lsp is not installed. It behaves like
``python SCRIPT ARGS``: same ``sys.argv``, ``sys.path[0]`` is the script's folder, the script
runs as ``__main__``, and its exit status and traceback are its own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import runpy
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(module_name: str, filename: str):
    spec = importlib.util.spec_from_file_location(module_name, os.path.join(HERE, filename))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


_terminated_by: list[int] = []  # the signal that ended the run, if one did


def _exit_on_sigterm(signum, frame):
    # Unwind normally (finally blocks, atexit: the probe writes its last record); the runner
    # escalates to SIGKILL if the script does not stop in time.
    _terminated_by.append(signum)
    raise SystemExit(128 + signum)


def _owner_alive() -> bool:
    """Is the process that started the run (the language server, the CLI) still there? When it
    dies the kernel sends us SIGTERM (PR_SET_PDEATHSIG, set by the runner)."""
    try:
        owner = int(os.environ.get("TORCH_LSP_OWNER_PID", ""))
    except ValueError:
        return False
    try:  # a dead owner may linger as a zombie until its own parent reaps it
        with open(f"/proc/{owner}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        pass
    try:
        os.kill(owner, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# Once the owner is gone: how long SIGTERM's unwinding may take before this process ends itself.
OWNER_GONE_GRACE_S = 10.0


def _watch_owner(every_s: float = 0.5) -> None:
    """End this process OWNER_GONE_GRACE_S after its owner is gone, whatever it is doing. The
    owner's death reaches torchrun as SIGTERM (PR_SET_PDEATHSIG) and torchrun ends its workers,
    unless it dies first: seen under load, two workers blocked in `init_process_group` (the
    store they dialled had gone with torchrun) outlived everything, their SIGTERM handler never
    run. A thread of their own still runs (the blocked call releases the GIL)."""
    if "TORCH_LSP_OWNER_PID" not in os.environ:
        return  # not started by torch-lsp: nothing to watch

    def watch() -> None:
        while _owner_alive():
            time.sleep(every_s)
        time.sleep(OWNER_GONE_GRACE_S)  # the usual way first: SIGTERM, the script unwinds
        if not _terminated_by:
            _terminated_by.append(signal.SIGTERM)
        _record_exit(128 + signal.SIGTERM)
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="torch-lsp: end with the owner", daemon=True).start()


def _exit_code(error: SystemExit) -> int:
    if error.code is None:
        return 0
    return error.code if isinstance(error.code, int) else 1


def _record_exit(code: int) -> None:
    """How this process ended, in the run folder (exit-rank<N>.json, written atomically): the
    truth for whoever reads the run later, even if nobody was following it when it ended."""
    run_dir = os.environ.get("TORCH_LSP_RUN_DIR")
    if not run_dir:
        return
    reason = None
    if _terminated_by:
        reason = "stopped" if _owner_alive() else "the process that started it (torch-lsp) exited"
    record = {"exit_code": code, "ended_at": time.time(), "reason": reason, "pid": os.getpid()}
    path = os.path.join(run_dir, f"exit-rank{os.environ.get('RANK', '0')}.json")
    try:
        with open(f"{path}.{os.getpid()}.tmp", "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        os.replace(f"{path}.{os.getpid()}.tmp", path)
    except OSError:
        pass


def main() -> None:
    if len(sys.argv) < 2:
        sys.stderr.write("usage: launch.py SCRIPT [ARGS...]\n")
        raise SystemExit(2)
    script = os.path.abspath(sys.argv[1])
    sys.argv = [script, *sys.argv[2:]]
    # Python puts the script's folder first on sys.path; ours must not be visible to the script.
    if sys.path and os.path.abspath(sys.path[0] or ".") == HERE:
        sys.path[0] = os.path.dirname(script)
    else:
        sys.path.insert(0, os.path.dirname(script))
    _load("_torch_lsp_epochs", "epochs.py")
    probe = _load("_torch_lsp_probe", "probe.py")
    run_dir = os.environ.get(probe.ENV_RUN_DIR)
    if run_dir:
        probe.install(run_dir, script)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _watch_owner()
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = _exit_code(exc)
        raise
    except BaseException as exc:
        code = 1
        probe.record_exception(exc, {script})
        raise
    finally:
        _record_exit(code)


if __name__ == "__main__":
    main()
