"""Worker side: no process of a job outlives it, and no job uses more memory than allowed.

The worker makes itself a *child subreaper*: a process a job started and abandoned (a
`fork(); setsid()` daemon, the 20 children of a fork bomb) is re-parented to the worker instead
of to init, so the worker can still find it. `kill_descendants` then kills a whole tree, in
rounds, until nothing new appears (a process forking while we kill it is caught next round).

Memory: RLIMIT_AS cannot bound a CUDA job (the driver reserves far more address space than it
uses), so the worker also watches each job's resident memory in /proc and kills it over the
limit, saying which limit it hit.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Iterable

from torch_lsp.shapes.sandbox import _linux

_KILL_ROUNDS = 50
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024 if hasattr(os, "sysconf") else 4


def become_subreaper() -> bool:
    """Make orphans of this process's descendants our children. False where unsupported."""
    try:
        _linux.prctl(_linux.PR_SET_CHILD_SUBREAPER, 1)
        return True
    except OSError:
        return False


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` when our parent ends (not inherited across fork)."""
    try:
        parent = os.getppid()
        _linux.prctl(_linux.PR_SET_PDEATHSIG, int(sig))
    except OSError:
        return False
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)
    return True


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rfind(b")") + 2:].split()
    return (fields[0].decode(), int(fields[1])) if len(fields) > 1 else None


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return children
    for entry in entries:
        if entry.isdigit():
            found = _stat(int(entry))
            if found is not None:
                children.setdefault(found[1], []).append(int(entry))
    return children


def _children_of(pid: int) -> list[int] | None:
    """Direct children from /proc/PID/task/*/children (CONFIG_PROC_CHILDREN); None if absent."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    children: list[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                children += [int(child) for child in handle.read().split()]
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            continue
    return children


def descendants(root: int, spare: Iterable[int] = ()) -> list[int]:
    """Every process below `root`, except the `spare` pids and what is below them."""
    spared = set(spare)
    if _children_of(root) is None:  # no children files: one scan of every process
        table = _children_map()
        children_of = lambda pid: table.get(pid, [])  # noqa: E731
    else:
        children_of = lambda pid: _children_of(pid) or []  # noqa: E731
    found, pending = [], [root]
    while pending:
        for child in children_of(pending.pop()):
            if child not in spared:
                found.append(child)
                pending.append(child)
    return found


def kill_descendants(root: int | None = None, spare: Iterable[int] = ()) -> list[int]:
    """SIGKILL every process below `root` (default: this process) except the `spare` pids and
    their subtrees, until none is left; reap those that were our children. Returns the pids
    killed. The worker calls it when a job ends (normally, by timeout, or cancelled) with the
    live jobs and the spare fork as `spare`: anything else below the worker is a leftover.
    """
    root = os.getpid() if root is None else root
    spare = set(spare)
    killed: dict[int, None] = {}  # ordered, unique
    for _ in range(_KILL_ROUNDS):
        found = [pid for pid in descendants(root, spare) if (_stat(pid) or ("X", 0))[0] not in ("Z", "X")]
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                continue
            killed[pid] = None
        time.sleep(0.005)  # let them die and the kernel re-parent their children
    _reap_children(spare, killed)
    return list(killed)


def _reap_children(spare: set[int], killed: Iterable[int]) -> None:
    """Collect the exit status of our children that were just killed (waiting for each: gone
    within milliseconds) and of those already dead (an orphan that ended on its own). A live
    child that was not killed (another job still running, the spare fork, a finished job still
    exiting) is never waited for: its owner reaps it. (Waiting for every child cost up to 1 s per
    live one: every job that followed another within a second started a second late.)"""
    me = os.getpid()
    killed = set(killed)
    for pid in descendants(me, spare):
        found = _stat(pid)
        if found is None or found[1] != me or (pid not in killed and found[0] not in ("Z", "X")):
            continue
        for _ in range(200):  # SIGKILLed: gone within milliseconds unless stuck in the kernel
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.005)


def anonymous_mb(pid: int, with_descendants: bool = True) -> float:
    """Anonymous resident memory (heap, tensors) of a process and what it started, in MiB; 0
    when it is gone. O(1) per process (statm), so the worker can poll it often: smaps_rollup's
    exact private size costs ~50 ms for a process that imported torch."""
    return sum(_anonymous_mb(member) for member in [pid, *(descendants(pid) if with_descendants else [])])


def _anonymous_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as statm:
            fields = statm.read().split()
        return (int(fields[1]) - int(fields[2])) * _PAGE_KB / 1024  # resident - file-backed/shared
    except (OSError, IndexError, ValueError):
        return 0.0


def memory_verdict(pid: int, limit_mb: float, baseline_mb: float = 0.0) -> str | None:
    """Why a job must be killed for memory, or None while it is within `limit_mb`.

    `baseline_mb` is what the job had when it started: a fork shares the warm worker's pages
    (torch itself, ~0.5 GB) and they count as its own anonymous memory from the start. Each
    process the job started shares them too, so the baseline is taken off each."""
    used = sum(max(0.0, _anonymous_mb(member) - baseline_mb) for member in [pid, *descendants(pid)])
    if used <= limit_mb:
        return None
    return f"it used {used:,.0f} MiB of memory, over the limit execution.memoryMb = {limit_mb:,.0f} MiB"
