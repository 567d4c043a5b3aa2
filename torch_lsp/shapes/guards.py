"""Runtime guards installed in each forked job before the user's code runs (worker side).

The plan already leaves out optimizer steps, torch.save/torch.load and runs training loops
once; these guards catch what static analysis cannot see (side effects inside functions and
libraries). They only ever patch the forked job, never the warm worker it was forked from.
docs/shapes.md lists them; keep the two in sync.
"""

from __future__ import annotations

import builtins
import io
import os
import shutil
import socket
import subprocess
import time


class ExecutionBlocked(BaseException):
    """Raised where user code tries something analysis never does (network, subprocess).

    A BaseException so that a user's `except Exception:` does not swallow it and carry on.
    """


def _blocked(what: str):
    def refuse(*args, **kwargs):
        raise ExecutionBlocked(f"{what} is not run during shape analysis")

    return refuse


def _no_op(*args, **kwargs):
    return None


_WRITE_MODES = set("wax+")


def _guarded_open(real_open):
    def open_without_writes(file, mode="r", *args, **kwargs):
        # Writes go to /dev/null: the script keeps running, the disk is untouched.
        if isinstance(mode, str) and _WRITE_MODES & set(mode) and not isinstance(file, int):
            return real_open(os.devnull, mode, *args, **kwargs)
        return real_open(file, mode, *args, **kwargs)

    return open_without_writes


def install() -> None:
    guarded = _guarded_open(io.open)
    builtins.open = guarded
    io.open = guarded
    builtins.input = lambda *args, **kwargs: ""
    time.sleep = _no_op
    for name in ("makedirs", "mkdir", "remove", "unlink", "rmdir", "rename", "replace", "removedirs"):
        setattr(os, name, _no_op)
    for name in ("rmtree", "move", "copy", "copy2", "copyfile", "copytree"):
        setattr(shutil, name, _no_op)
    for name in ("system", "popen", "execv", "execve", "execvp", "execvpe", "spawnv", "spawnve",
                 "fork", "forkpty", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            setattr(os, name, _blocked(f"os.{name}"))
    for name in ("Popen", "run", "call", "check_call", "check_output", "getoutput", "getstatusoutput"):
        setattr(subprocess, name, _blocked("a subprocess"))
    socket.socket.connect = _blocked("network access")
    socket.socket.connect_ex = _blocked("network access")
    socket.create_connection = _blocked("network access")
    socket.getaddrinfo = _blocked("network access")
    _guard_torch()


def _compile_nothing(model=None, *args, **kwargs):
    return model if model is not None else (lambda function: function)


def _guard_torch() -> None:
    import torch

    torch.save = _no_op
    # Compiling changes no shape and would start compiler processes (refused by the sandbox).
    torch.compile = _compile_nothing
    torch.hub.load = _blocked("torch.hub.load (a download)")
    torch.hub.download_url_to_file = _blocked("a download")
