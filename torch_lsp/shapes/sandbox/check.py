"""Try, in a sandboxed fork, every way out that ordinary code has, and check the effects from
outside: `torch-lsp serve --check-sandbox`, the tests, and the server's one-time log line.

This process plays the shape worker: it becomes a child subreaper, forks a "job" that enters
the sandbox and then attacks (files outside its folder, an existing file truncated, commands,
TCP to a listener we opened on 127.0.0.1, a UDP packet, a `fork(); setsid()` spinner, a
20-child fork bomb), and afterwards kills the job's leftovers exactly as the worker does. An
attempt is *contained* when its effect is absent, whichever layer stopped it.

    python -m torch_lsp.shapes.sandbox.check [--json] [--skip LAYER ...] [--missing-only]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from torch_lsp.shapes import sandbox
from torch_lsp.shapes.sandbox import landlock
from torch_lsp.shapes.sandbox.processes import become_subreaper, kill_descendants

FORK_BOMB_SIZE = 20


@dataclass
class Attempt:
    name: str
    contained: bool
    how: str


class _Targets:
    """What the job attacks, set up by the checker before the fork."""

    def __init__(self, root: Path) -> None:
        self.outside = root / "outside"
        self.outside.mkdir()
        self.existing = self.outside / "existing.txt"
        self.existing.write_text("keep me")
        self.job_dir = root / "job"
        self.job_dir.mkdir()
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(8)
        self.tcp.setblocking(False)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.setblocking(False)
        self.pids_read, self.pids_write = os.pipe()  # escaped processes write their pid here

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


# -- in the job ------------------------------------------------------------------------------

def _attack(targets: _Targets) -> dict[str, str]:
    """Run every attempt; return name -> what the job saw (an error, or what happened)."""
    import ctypes
    import sqlite3

    outside = str(targets.outside)
    seen: dict[str, str] = {}

    def attempt(name, action):
        try:
            seen[name] = f"ran: {action()!r}"
        except BaseException as error:  # noqa: BLE001 - every failure is an answer
            seen[name] = f"{type(error).__name__}: {error}"

    def report_pid():
        os.write(targets.pids_write, f"{os.getpid()}\n".encode())

    def spinner():
        if os.fork() == 0:
            os.setsid()
            report_pid()
            deadline = time.monotonic() + 60  # bounded, in case nothing kills it
            while time.monotonic() < deadline:
                pass
            os._exit(0)
        return "forked"

    def fork_bomb():
        started = 0
        for _ in range(FORK_BOMB_SIZE):
            if os.fork() == 0:
                report_pid()
                time.sleep(60)
                os._exit(0)
            started += 1
        return f"{started} children"

    def spawn():
        pid = os.posix_spawn("/bin/sh", ["sh", "-c", "exit 7"], os.environ)
        return f"exit status {os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])}"

    def udp():
        raw = __import__("_socket")
        sock = raw.socket(raw.AF_INET, raw.SOCK_DGRAM)
        return sock.sendto(b"hello", targets.udp.getsockname())

    def sqlite():
        connection = sqlite3.connect(f"{outside}/created.sqlite")
        connection.execute("create table t (x)")
        connection.commit()

    attempt("os.open", lambda: os.open(f"{outside}/created-os-open", os.O_CREAT | os.O_WRONLY))
    attempt("io.FileIO", lambda: io.FileIO(f"{outside}/created-fileio", "w"))
    attempt("Path.touch", lambda: Path(f"{outside}/created-touch").touch())
    attempt("sqlite3.connect", sqlite)
    attempt("os.truncate", lambda: os.truncate(targets.existing, 0))
    attempt("os.chmod", lambda: os.chmod(targets.existing, 0o777))
    attempt("os.posix_spawn", spawn)
    attempt("ctypes system()", lambda: f"exit status {os.waitstatus_to_exitcode(ctypes.CDLL(None).system(b'exit 7'))}")
    attempt("TCP connect", lambda: __import__("_socket").socket().connect(targets.tcp.getsockname()))
    attempt("UDP packet", udp)
    attempt("fork + setsid spinner", spinner)
    attempt(f"{FORK_BOMB_SIZE}-child fork", fork_bomb)
    attempt("write in its own folder", lambda: Path(tempfile.mkstemp()[1]).write_text("ok"))
    return seen


def _job(targets: _Targets, skip: tuple[str, ...], result_fd: int) -> None:
    try:
        os.setsid()
        outcome = sandbox.isolate(str(targets.job_dir), sandbox.Limits(timeout=5, memory_mb=1024), skip=skip)
        seen = _attack(targets)
        body = json.dumps({"applied": outcome.applied, "missing": outcome.missing, "seen": seen}).encode()
        while body:
            body = body[os.write(result_fd, body):]
    finally:
        os._exit(0)


# -- in the checker ------------------------------------------------------------------------

def run_checks(skip: tuple[str, ...] = ()) -> dict:
    """Fork a sandboxed job that attacks; return facilities, what was applied, and attempts."""
    become_subreaper()
    with tempfile.TemporaryDirectory(prefix="torch-lsp-sandbox-check-") as root:
        targets = _Targets(Path(root))
        try:
            return _check_with(targets, skip)
        finally:
            targets.close()


def _check_with(targets: _Targets, skip: tuple[str, ...]) -> dict:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _job(targets, skip, write_fd)
    os.close(write_fd)
    os.waitpid(pid, 0)  # the job's children hold the pipe open: do not wait for its end
    raw = _read_available(read_fd)
    escaped = _reported_pids(targets)
    killed = kill_descendants(spare=())  # what the worker does when a job ends
    report = json.loads(raw or b'{"applied": [], "missing": ["the job died"], "seen": {}}')
    seen = report["seen"]
    attempts = _judge(targets, seen, escaped, killed)
    for pid in escaped:  # never leave a spinner behind, even when not contained
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return {"system": _system(), "facilities": facilities(), "applied": report["applied"],
            "missing": report["missing"], "attempts": [asdict(a) for a in attempts]}


def _read_available(fd: int) -> bytes:
    """What is in a pipe now (the writer has exited; its children may keep it open)."""
    os.set_blocking(fd, False)
    data = b""
    try:
        while chunk := os.read(fd, 1 << 16):
            data += chunk
    except BlockingIOError:
        pass
    os.close(fd)
    return data


def _reported_pids(targets: _Targets) -> list[int]:
    os.close(targets.pids_write)
    return [int(p) for p in _read_available(targets.pids_read).split()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def _judge(targets: _Targets, seen: dict[str, str], escaped: list[int], killed: list[int]) -> list[Attempt]:
    outside = targets.outside
    results = []

    def judge(name: str, happened: bool, effect: str) -> None:
        what = seen.get(name, "not tried (the job died first)")
        how = effect if happened else ("refused: " + what if not what.startswith("ran") else "no effect: " + what)
        results.append(Attempt(name, not happened, how))

    judge("os.open", (outside / "created-os-open").exists(), "created a file outside its folder")
    judge("io.FileIO", (outside / "created-fileio").exists(), "created a file outside its folder")
    judge("Path.touch", (outside / "created-touch").exists(), "created a file outside its folder")
    judge("sqlite3.connect", (outside / "created.sqlite").exists(), "created a database outside its folder")
    judge("os.truncate", targets.existing.read_text() != "keep me", "emptied an existing file")
    judge("os.chmod", targets.existing.stat().st_mode & 0o777 == 0o777, "changed an existing file's mode")
    judge("os.posix_spawn", seen.get("os.posix_spawn") == "ran: 'exit status 7'", "ran a command")
    judge("ctypes system()", seen.get("ctypes system()") == "ran: 'exit status 7'", "ran a command")
    judge("TCP connect", _pending(targets.tcp.accept), "reached a TCP listener on 127.0.0.1")
    judge("UDP packet", _pending(lambda: targets.udp.recv(64)), "delivered a UDP packet to 127.0.0.1")
    survivors = [pid for pid in escaped if _alive(pid)]
    for name in ("fork + setsid spinner", f"{FORK_BOMB_SIZE}-child fork"):
        started = seen.get(name, "").startswith("ran")
        results.append(Attempt(name, not survivors, (
            f"{len(survivors)} processes outlived the job" if survivors else
            f"started, then killed when the job ended ({len(killed)} killed)" if started else
            f"refused: {seen.get(name)}")))
    own = seen.get("write in its own folder", "")
    results.append(Attempt("write in its own folder (must work)", own.startswith("ran"), own))
    return results


def _pending(receive) -> bool:
    try:
        receive()
        return True
    except (BlockingIOError, OSError):
        return False


def _system() -> str:
    uname = os.uname()
    return f"{uname.sysname} {uname.release} {uname.machine}, running as uid {os.geteuid()}"


def facilities() -> dict[str, str]:
    """What this system offers, without entering anything."""
    if os.uname().sysname != "Linux":
        return {"OS-level isolation": f"not available on {os.uname().sysname}"}
    abi = landlock.abi_version()
    return {
        "Landlock": f"ABI {abi}" if abi else "not available",
        "user namespaces": _user_namespaces(),
        "architecture": sandbox._linux.MACHINE + ("" if sandbox._linux.SYSCALLS else " (no syscall table: no seccomp)"),
    }


def _user_namespaces() -> str:
    try:
        limit = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        return "unknown"
    return "available" if limit > 0 else "disabled (max_user_namespaces = 0)"


def render(report: dict) -> str:
    lines = [f"torch-lsp shape-job sandbox on {report['system']}", ""]
    lines += [f"  {name:<18} {value}" for name, value in report["facilities"].items()]
    lines += ["", f"  applied: {', '.join(report['applied']) or 'nothing'}"]
    lines += [f"  missing: {problem}" for problem in report["missing"]]
    lines += ["", "What a job tried:"]
    width = max(len(a["name"]) for a in report["attempts"])
    for attempt in report["attempts"]:
        mark = ("contained" if attempt["contained"] else "NOT CONTAINED") if "must work" not in attempt["name"] \
            else ("works" if attempt["contained"] else "FAILED")
        lines.append(f"  {attempt['name']:<{width}}  {mark}: {attempt['how']}")
    failed = [a for a in report["attempts"] if not a["contained"]]
    lines += ["", f"{len(failed)} of {len(report['attempts'])} attempts were not contained; see docs/shapes.md#security"
              if failed else f"All {len(report['attempts'])} attempts were contained."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torch_lsp.shapes.sandbox.check")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--skip", action="append", default=[], choices=sandbox.LAYERS)
    args = parser.parse_args(argv)
    report = run_checks(tuple(args.skip))
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0 if all(a["contained"] for a in report["attempts"]) else 1


if __name__ == "__main__":
    sys.exit(main())
