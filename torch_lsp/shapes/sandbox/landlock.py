"""Landlock (Linux >= 5.13, unprivileged): after `restrict()`, this process and everything it
starts can write only beneath the allowed paths; reads stay allowed everywhere.

The access rights we *handle* are chosen by the kernel's ABI version: a right the kernel does
not know cannot be handled (the ruleset would be refused), and a right that is not handled is
not restricted. So on an ABI 1 kernel truncating an existing file is still possible (TRUNCATE is
ABI 3); docs/shapes.md "Security" lists what each version adds.
"""

from __future__ import annotations

import ctypes
import os

from torch_lsp.shapes.sandbox import _linux

# File-system rights (include/uapi/linux/landlock.h)
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5
# Network rights (ABI 4) and scopes (ABI 6)
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

_RULE_PATH_BENEATH = 1
_CREATE_RULESET_VERSION = 1 << 0
# Rights that make sense on a file (not a directory): a rule for a file may only grant these.
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1  # __attribute__((packed)) in the kernel header
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """0 when Landlock is absent (old kernel, disabled at boot, not Linux)."""
    try:
        return _linux.syscall("landlock_create_ruleset", None, ctypes.c_size_t(0),
                              ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except OSError:
        return 0


def handled_fs_rights(abi: int) -> int:
    """Everything that changes the file system (and exec), as far as this ABI can express."""
    rights = (EXECUTE | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_CHAR | MAKE_DIR | MAKE_REG
              | MAKE_SOCK | MAKE_FIFO | MAKE_BLOCK | MAKE_SYM)
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def restrict(writable_dirs: list[str], writable_files: list[str], abi: int | None = None,
             execute: bool = True) -> list[str]:
    """Confine this thread (and its future children) to writing beneath `writable_dirs` and into
    `writable_files` (device files such as /dev/null); TCP bind/connect, signals to and abstract
    UNIX sockets of processes outside the sandbox are denied where the ABI allows.

    Returns what could not be restricted on this kernel. Raises OSError when Landlock is
    unusable altogether. Needs PR_SET_NO_NEW_PRIVS set first. `execute=False` leaves running
    programs alone (the shape worker's launcher must exec the project's interpreter).
    """
    abi = abi_version() if abi is None else abi
    if abi < 1:
        raise OSError("Landlock is not available (Linux >= 5.13 with landlock in the LSM list)")
    handled = handled_fs_rights(abi) & (~0 if execute else ~EXECUTE)
    attr = _RulesetAttr(handled_access_fs=handled)
    size = 8
    limits: list[str] = []
    if abi >= 4:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP
        size = 16
    if abi >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
        size = 24
    if abi < 3:
        limits.append(f"Landlock ABI {abi}: truncating an existing file is not prevented (needs ABI 3, Linux 6.2)")
    ruleset = _linux.syscall("landlock_create_ruleset", ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    try:
        for path in writable_dirs:  # nothing written there may be executed either
            _allow(ruleset, path, handled & ~EXECUTE)
        for path in writable_files:
            if os.path.exists(path):
                _allow(ruleset, path, handled & _FILE_RIGHTS & ~EXECUTE)
        _linux.syscall("landlock_restrict_self", ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    return limits


def _allow(ruleset: int, path: str, rights: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        _linux.syscall("landlock_add_rule", ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                       ctypes.byref(rule), ctypes.c_uint32(0))
    finally:
        os.close(fd)
