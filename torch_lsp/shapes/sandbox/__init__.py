"""OS-level isolation of a shape job: `enter(job_dir, limits)` in the job's fork, after
`setsid()` and before any user code. Stdlib + ctypes only (the worker may run in the project's
own interpreter).

The Python-level guards (shapes/guards.py) stay the first layer: they turn the common cases
into clear messages. This is the layer that holds when the user's code goes around them
(`os.open`, `_socket`, `ctypes`, a C extension). On Linux, each independent of the others:

- network: a new, empty network namespace (inside a new user namespace when we are not root:
  unprivileged since Linux 3.8 where the distribution allows it), plus a seccomp filter that
  refuses `socket()` for every family but AF_UNIX (AF_UNIX too, except for CUDA jobs), plus
  Landlock's TCP bind/connect denial (ABI 4);
- files: Landlock lets the job write only into `job_dir` (a private temporary folder, its
  TMPDIR, removed after the job) and /dev/null (and the GPU's device files for CUDA jobs);
  seccomp refuses chmod/chown/utime/xattr changes, which Landlock does not cover;
- processes: seccomp refuses fork/vfork/clone-without-CLONE_THREAD, exec and ptrace; the worker
  is a child subreaper and kills every leftover process when a job ends (processes.py); the
  job gets SIGKILL when the worker dies;
- resources: RLIMIT_CPU as a backstop of the wall-clock timeout, no core files, a file-size
  limit, RLIMIT_AS for non-CUDA jobs, and the worker's memory watchdog for every device.

docs/shapes.md "Security" says what this does and does not contain on each platform.
"""

from __future__ import annotations

import glob
import math
import os
import resource
import sys
import tempfile
from dataclasses import dataclass, field

from torch_lsp.shapes.sandbox import _linux, landlock, seccomp
from torch_lsp.shapes.sandbox.processes import (  # noqa: F401 - the worker's API
    anonymous_mb, become_subreaper, die_with_parent, kill_descendants, memory_verdict)

LAYERS = ("network", "files", "syscalls", "limits")
_GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia[0-9]*", "/dev/nvidia-uvm*", "/dev/nvidia-modeset",
                     "/dev/nvidia-caps/*", "/dev/kfd", "/dev/dri/*")


@dataclass(frozen=True)
class Limits:
    """What `enter` needs of a job. The worker's job object works as well (same attribute names)."""

    device: str = "meta"
    timeout: float = 5.0
    memory_mb: int | None = 4096


@dataclass
class Outcome:
    applied: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def enter(job_dir: str, limits=None, *, skip: tuple[str, ...] = ()) -> list[str]:
    """Isolate the calling process (a fresh fork, single-threaded); return what could not be
    applied on this system, for one log line. `skip` names LAYERS to leave out (tests only)."""
    return isolate(job_dir, limits, skip=skip).missing


def isolate(job_dir: str, limits=None, *, skip: tuple[str, ...] = ()) -> Outcome:
    limits = limits or Limits()
    device = str(getattr(limits, "device", "meta"))
    uses_gpu = device in ("cuda", "auto")
    outcome = Outcome()
    if os.uname().sysname != "Linux" or _linux.libc is None:
        outcome.missing.append(f"OS-level isolation is not available on {os.uname().sysname}: "
                               "only the Python-level guards and resource limits apply")
        _use_temp_dir(job_dir)
        if "limits" not in skip:  # whatever this system enforces of them
            _note(outcome, "resource limits", lambda: _set_limits(limits, uses_gpu, False, 0))
        return outcome
    die_with_parent()
    if _linux.thread_count() > 1:
        outcome.missing.append(f"{_linux.thread_count() - 1} other threads were already running: "
                               "Landlock and namespaces do not reach them")
    own_processes = _count_own_processes()  # before a user namespace changes how owners read
    if "network" not in skip:
        _note(outcome, "network namespace", _isolate_network)
    _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
    _use_temp_dir(job_dir)
    if "files" not in skip:
        writable_files = ["/dev/null"] + (_gpu_device_files() if uses_gpu else [])
        abi = landlock.abi_version()
        _note(outcome, f"Landlock ABI {abi}", lambda: landlock.restrict([job_dir], writable_files, abi))
    syscalls_filtered = False
    if "syscalls" not in skip:
        syscalls_filtered = _note(outcome, "seccomp filter",
                                  lambda: seccomp.install(allow_unix_sockets=uses_gpu))
    if "limits" not in skip:
        _note(outcome, "resource limits", lambda: _set_limits(limits, uses_gpu, syscalls_filtered, own_processes))
    return outcome


def confine_worker(writable_dir: str) -> Outcome:
    """The shape worker itself, before the project's interpreter starts (sandbox/launch.py):
    that interpreter, its site-packages and `.pth` files come from the repository too, and run
    before any job. No network, writes only beneath `writable_dir` (where the jobs' folders are
    made), /dev/null and the GPU's device files. Processes, exec and resources are left to each
    job's own sandbox (the worker forks its jobs)."""
    outcome = Outcome()
    if os.uname().sysname != "Linux" or _linux.libc is None:
        outcome.missing.append(f"OS-level isolation is not available on {os.uname().sysname}")
        return outcome
    _note(outcome, "network namespace", _isolate_network)
    _linux.prctl(_linux.PR_SET_NO_NEW_PRIVS, 1)
    abi = landlock.abi_version()
    _note(outcome, f"Landlock ABI {abi}", lambda: landlock.restrict(
        [writable_dir], ["/dev/null", *_gpu_device_files()], abi, execute=False))
    return outcome


def _note(outcome: Outcome, name: str, apply) -> bool:
    try:
        problems = apply() or []
    except OSError as error:
        outcome.missing.append(f"{name}: {error.strerror or error}")
        return False
    outcome.applied.append(name)
    outcome.missing.extend(problems)
    return True


def _isolate_network() -> None:
    """An empty network namespace: no interface but a loopback that is down."""
    uid, gid = os.geteuid(), os.getegid()
    try:
        _linux.unshare(_linux.CLONE_NEWUSER | _linux.CLONE_NEWNET)
    except OSError:
        if uid != 0:
            raise
        _linux.unshare(_linux.CLONE_NEWNET)  # root without user namespaces: it is allowed this
        return
    # Map our own ids so files keep their owners (and our access to them) inside.
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as handle:
            handle.write(text)


def _use_temp_dir(job_dir: str) -> None:
    for name in ("TMPDIR", "TMP", "TEMP"):
        os.environ[name] = job_dir
    tempfile.tempdir = job_dir
    sys.dont_write_bytecode = True  # .pyc files could not be written anyway


def _gpu_device_files() -> list[str]:
    return sorted({path for pattern in _GPU_DEVICE_FILES for path in glob.glob(pattern)})


def _set_limits(limits, uses_gpu: bool, processes_filtered: bool, own_processes: int) -> list[str]:
    problems: list[str] = []
    timeout = float(getattr(limits, "timeout", 5.0) or 5.0)
    memory_mb = getattr(limits, "memory_mb", None)
    # CPU seconds are summed over threads: allow every core the whole timeout, then some.
    cpu_s = math.ceil(timeout * (os.cpu_count() or 1)) + 5
    _set(resource.RLIMIT_CPU, cpu_s, cpu_s + 5)
    _set(resource.RLIMIT_CORE, 0, 0)
    if memory_mb:
        _set(resource.RLIMIT_FSIZE, memory_mb << 20, memory_mb << 20)
        if not uses_gpu:  # CUDA reserves far more address space than it uses: the watchdog only
            _set(resource.RLIMIT_AS, _address_space_now() + (memory_mb << 20))
    if not processes_filtered:
        problems += _limit_processes(own_processes)
    return problems


def _set(kind: int, soft: int, hard: int | None = None) -> None:
    current_soft, current_hard = resource.getrlimit(kind)
    hard = soft if hard is None else hard
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
        soft = min(soft, hard)
    resource.setrlimit(kind, (soft, hard))


def _address_space_now() -> int:
    with open("/proc/self/status") as status:
        return next((int(line.split()[1]) for line in status if line.startswith("VmSize:")), 0) * 1024


def _count_own_processes() -> int:
    """Processes (and threads: RLIMIT_NPROC counts both) of our real user, now."""
    uid, mine = os.getuid(), 0
    if uid == 0:
        return 0
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.stat(f"/proc/{entry}").st_uid == uid:
                mine += len(os.listdir(f"/proc/{entry}/task"))
        except OSError:
            continue
    return mine


def _limit_processes(own_processes: int) -> list[str]:
    """Without seccomp: RLIMIT_NPROC stops a fork bomb (root is exempt from it)."""
    if not own_processes and os.uname().sysname != "Linux":
        return []  # not counted where there is no /proc: no limit rather than a wrong one
    if os.geteuid() == 0 and os.getuid() == 0:
        return ["processes: without seccomp, a job running as root may start processes "
                "(the worker still kills them when the job ends)"]
    # Counted per user, threads included: what runs now, torch's thread pools, a little more.
    _set(resource.RLIMIT_NPROC, own_processes + 4 * (os.cpu_count() or 1) + 32)
    return []


def job_directory() -> str:
    """A private folder for one job (its TMPDIR and the only place it may write)."""
    return tempfile.mkdtemp(prefix="torch-lsp-job-")


def remove_job_directory(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)

