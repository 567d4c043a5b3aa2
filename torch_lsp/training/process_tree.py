"""Ending a whole process tree: the script, its DataLoader workers, torchrun and its workers.

The runner starts each run in a new session (its own process group), but torchrun starts every
worker in yet another session, so killing one group is not enough. We collect the descendants
from /proc (Linux) before signalling, signal every group and pid found, and escalate from
SIGTERM to SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import signal
import time


def _parents() -> dict[int, int]:
    """pid -> parent pid for every process we can see; empty where /proc is absent."""
    parents = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return parents
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
        except OSError:
            continue
        # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1:
            parents[int(entry)] = int(fields[1])
    return parents


def descendants(pid: int) -> list[int]:
    parents = _parents()
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    found, pending = [], [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")  # a zombie has already ended
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True


def _signal_all(pids: list[int], sig: int) -> None:
    groups = set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except OSError:
            pass
    own_group = os.getpgrp()
    for group in groups - {own_group}:
        try:
            os.killpg(group, sig)
        except OSError:
            pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def kill_tree(pid: int, grace_s: float = 5.0, reap=None) -> list[int]:
    """SIGTERM the tree rooted at pid, SIGKILL what is left after grace_s; returns all pids.

    ``reap`` (e.g. ``Popen.poll``) is called while waiting so our own child does not linger
    as a zombie.
    """
    tree = [pid, *descendants(pid)]
    _signal_all(tree, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        tree += [p for p in descendants(pid) if p not in tree]  # late forks
        if not any(alive(p) for p in tree):
            return tree
        time.sleep(0.05)
    _signal_all([p for p in tree if alive(p)], signal.SIGKILL)
    if reap is not None:
        for _ in range(40):
            if reap() is not None:
                break
            time.sleep(0.05)
    return tree
