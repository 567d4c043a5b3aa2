"""A seccomp-BPF filter for shape jobs: what the kernel refuses however the call is made
(`os.fork`, `ctypes.CDLL(None).system`, `_socket`, a C extension...).

Refused, with an errno the caller sees as an ordinary OSError:
- `socket()` of every family but AF_UNIX (EACCES); AF_UNIX too unless `allow_unix_sockets`
  (a named socket such as /var/run/docker.sock is reachable from any network namespace and
  Landlock does not cover connecting to one). `socketpair()` stays allowed (asyncio needs it);
- new processes: `clone` without CLONE_THREAD, `fork`, `vfork` (EPERM); threads stay allowed.
  `clone3` answers ENOSYS so that the C library falls back to `clone`, whose flags a filter
  can read (clone3 passes them in memory);
- `execve`/`execveat`, `ptrace`, `process_vm_*`, namespaces (`unshare`, `setns`), io_uring
  (its operations would bypass this filter), bpf, perf events, userfaultfd, keyrings;
- metadata changes Landlock does not cover: chmod/chown/utime/xattr families (EPERM);
- anything through a foreign syscall ABI (x32, `int 0x80` on x86_64).
"""

from __future__ import annotations

import ctypes
import errno

from torch_lsp.shapes.sandbox import _linux

_LD_W_ABS = 0x20
_JEQ = 0x15
_JGE = 0x35
_JSET = 0x45
_RET = 0x06
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_SET_MODE_FILTER = 1
_FILTER_FLAG_TSYNC = 1
_SECCOMP_MODE_FILTER = 2
_X32_SYSCALL_BIT = 0x40000000
_AF_UNIX = 1
# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6];
_NR, _ARCH, _ARG0_LOW = 0, 4, 16  # little-endian: the low half of args[0] comes first

_DENIED_EPERM = (
    "fork", "vfork", "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev",
    "unshare", "setns", "bpf", "perf_event_open", "userfaultfd", "add_key", "request_key", "keyctl",
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
    "utime", "utimes", "futimesat", "utimensat", "setxattr", "lsetxattr", "fsetxattr",
    "removexattr", "lremovexattr", "fremovexattr", "setxattrat", "removexattrat",
)
_DENIED_ENOSYS = ("clone3", "io_uring_setup", "io_uring_enter", "io_uring_register")


class _Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_Filter))]


class _Assembler:
    """Instructions with symbolic jump targets, resolved to BPF's relative offsets."""

    def __init__(self) -> None:
        self.code: list[tuple[int, object, object, int]] = []
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def load(self, offset: int) -> None:
        self.code.append((_LD_W_ABS, 0, 0, offset))

    def jump(self, op: int, value: int, if_true: str | int = 0, if_false: str | int = 0) -> None:
        self.code.append((op, if_true, if_false, value))

    def ret(self, value: int) -> None:
        self.code.append((_RET, 0, 0, value))

    def assemble(self) -> list[tuple[int, int, int, int]]:
        def offset(index: int, target) -> int:
            if isinstance(target, int):
                return target
            relative = self.labels[target] - index - 1
            if not 0 <= relative <= 255:
                raise ValueError(f"seccomp jump to {target} out of range")
            return relative

        return [(op, offset(i, jt), offset(i, jf), k) for i, (op, jt, jf, k) in enumerate(self.code)]


def build(allow_unix_sockets: bool) -> list[tuple[int, int, int, int]]:
    numbers = _linux.SYSCALLS
    if numbers is None or _linux.AUDIT_ARCH is None:
        raise OSError(f"seccomp filter: syscall numbers unknown on {_linux.MACHINE}")
    deny = lambda e: _ERRNO | e  # noqa: E731
    asm = _Assembler()
    asm.load(_ARCH)
    asm.jump(_JEQ, _linux.AUDIT_ARCH, 0, "eperm")
    asm.load(_NR)
    if _linux.MACHINE == "x86_64":
        asm.jump(_JGE, _X32_SYSCALL_BIT, "eperm", 0)
    asm.jump(_JEQ, numbers["socket"], "socket", 0)
    asm.jump(_JEQ, numbers["clone"], "clone", 0)
    for name in _DENIED_EPERM:
        if name in numbers:
            asm.jump(_JEQ, numbers[name], "eperm", 0)
    for name in _DENIED_ENOSYS:
        asm.jump(_JEQ, numbers[name], "enosys", 0)
    asm.ret(_ALLOW)
    asm.label("socket")
    asm.load(_ARG0_LOW)
    asm.jump(_JEQ, _AF_UNIX, "allow" if allow_unix_sockets else "eacces", "eacces")
    asm.label("clone")
    asm.load(_ARG0_LOW)
    asm.jump(_JSET, _linux.CLONE_THREAD, "allow", "eperm")
    asm.label("allow")
    asm.ret(_ALLOW)
    asm.label("eperm")
    asm.ret(deny(errno.EPERM))
    asm.label("eacces")
    asm.ret(deny(errno.EACCES))
    asm.label("enosys")
    asm.ret(deny(errno.ENOSYS))
    return asm.assemble()


def install(allow_unix_sockets: bool = False) -> None:
    """Apply the filter to every thread of this process (and all it starts). Needs
    PR_SET_NO_NEW_PRIVS. Raises OSError when seccomp is unavailable."""
    instructions = build(allow_unix_sockets)
    filters = (_Filter * len(instructions))(*[_Filter(*i) for i in instructions])
    program = _Program(len(instructions), filters)
    try:
        _linux.syscall("seccomp", ctypes.c_uint(_SET_MODE_FILTER), ctypes.c_uint(_FILTER_FLAG_TSYNC),
                       ctypes.byref(program))
    except OSError as error:
        if error.errno != errno.ENOSYS:
            raise
        # Kernels before 3.17 have no seccomp(2); prctl cannot synchronise threads.
        _linux.prctl(_linux.PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(program))
