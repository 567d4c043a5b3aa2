"""Raw Linux calls the sandbox needs, through ctypes (no third-party binding: the worker may
run in the project's interpreter, which has torch but nothing of ours).

Syscall numbers differ by architecture; only x86_64 and aarch64 are known here. Elsewhere
`SYSCALLS` is None and every layer that needs a number reports itself unavailable.
"""

from __future__ import annotations

import ctypes
import os
import platform

MACHINE = platform.machine()

# AUDIT_ARCH_* values, checked by the seccomp filter (a syscall made through another ABI,
# e.g. `int 0x80` on x86_64, has other numbers and must not slip through).
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}.get(MACHINE)

_COMMON = {  # the generic table: the same numbers on x86_64 and aarch64
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "clone3": 435,
    "landlock_create_ruleset": 444, "landlock_add_rule": 445, "landlock_restrict_self": 446,
    "fchmodat2": 452, "setxattrat": 463, "removexattrat": 466,
}
_X86_64 = {
    "socket": 41, "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "chmod": 90, "fchmod": 91,
    "chown": 92, "fchown": 93, "lchown": 94, "ptrace": 101, "utime": 132, "setxattr": 188,
    "lsetxattr": 189, "fsetxattr": 190, "removexattr": 197, "lremovexattr": 198,
    "fremovexattr": 199, "utimes": 235, "add_key": 248, "request_key": 249, "keyctl": 250,
    "fchownat": 260, "futimesat": 261, "fchmodat": 268, "unshare": 272, "utimensat": 280,
    "perf_event_open": 298, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311,
    "seccomp": 317, "bpf": 321, "execveat": 322, "userfaultfd": 323,
}
_AARCH64 = {
    "setxattr": 5, "lsetxattr": 6, "fsetxattr": 7, "removexattr": 14, "lremovexattr": 15,
    "fremovexattr": 16, "fchmod": 52, "fchmodat": 53, "fchownat": 54, "fchown": 55,
    "utimensat": 88, "unshare": 97, "ptrace": 117, "socket": 198, "add_key": 217,
    "request_key": 218, "keyctl": 219, "clone": 220, "execve": 221, "perf_event_open": 241,
    "setns": 268, "process_vm_readv": 270, "process_vm_writev": 271, "seccomp": 277, "bpf": 280,
    "execveat": 281, "userfaultfd": 282,
}
SYSCALLS: dict[str, int] | None = (
    {**_COMMON, **_X86_64} if MACHINE == "x86_64" else {**_COMMON, **_AARCH64} if MACHINE == "aarch64" else None)

# prctl options
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_SECCOMP = 22

CLONE_THREAD = 0x00010000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000


def _load_libc():
    if not os.uname().sysname == "Linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        return libc
    except OSError:
        return None


libc = _load_libc()


class SyscallError(OSError):
    pass


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise SyscallError(errno, f"{what}: {os.strerror(errno)}")
    return result


def syscall(name: str, *args) -> int:
    if libc is None or SYSCALLS is None or name not in SYSCALLS:
        raise SyscallError(38, f"{name}: not available on {MACHINE}")  # ENOSYS
    return _check(libc.syscall(ctypes.c_long(SYSCALLS[name]), *args), name)


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    if libc is None:
        raise SyscallError(38, "prctl: not Linux")
    return _check(libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                             ctypes.c_ulong(0), ctypes.c_ulong(0)), f"prctl({option})")


def unshare(flags: int) -> None:
    if libc is None:
        raise SyscallError(38, "unshare: not Linux")
    _check(libc.unshare(ctypes.c_int(flags)), "unshare")


def thread_count() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 1
