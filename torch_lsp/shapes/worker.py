"""The shape worker: imports torch once, then runs each plan in a forked, isolated job.

Started by shapes/engine.py as `python -m torch_lsp.shapes.worker`. Protocol on stdin/stdout:
frames of a 4-byte big-endian length and a JSON object (see `protocol.py`). Jobs:

- run in a fork of this warm process (no torch import per job; a poisoned job cannot affect the
  next), in a new session, with stdin/stdout/stderr on /dev/null, an address-space limit, and the
  runtime guards of guards.py;
- stop themselves at the timeout (an interval timer raises inside the user's code, so shapes up
  to there are kept) and are killed one second later if stuck in C code;
- for the same document key, a newer job kills the running one and replaces a queued one;
- start from a spare fork made while the worker was idle (fork() of a process that imported
  torch costs ~60 ms here), and are reaped without waiting for their exit.

What one job does (run the plan, classify errors) is in job.py.
"""

from __future__ import annotations

import gc
import json
import mmap
import os
import resource
import select
import signal
import struct
import sys
import time
from dataclasses import dataclass, field

import torch

from torch_lsp.analysis.plan import ExecutionPlan, build_plan
from torch_lsp.shapes import guards, inputs
from torch_lsp.shapes.job import run_job
from torch_lsp.shapes.protocol import FrameReader, write_frame
from torch_lsp.shapes.report import ShapeReport

KILL_GRACE_S = 1.0


# --------------------------------------------------------------------------------------------
# The warm process


@dataclass
class Job:
    id: int
    key: str
    plan: dict
    device: str = "meta"
    timeout: float = 5.0
    memory_mb: int = 4096


@dataclass
class Spare:
    """A fork made ahead of time, waiting for its job: a job does not wait for fork() (~60 ms
    for a process that has imported torch)."""

    pid: int
    job_fd: int  # the worker writes the job here
    result_fd: int  # and reads the report here


@dataclass
class RunningJob:
    job: Job
    pid: int
    fd: int
    deadline: float
    output: bytearray = field(default_factory=bytearray)

    def complete(self) -> bool:
        if len(self.output) < _LENGTH.size:
            return False
        (length,) = _LENGTH.unpack_from(self.output)
        return len(self.output) - _LENGTH.size == length

    def report_json(self) -> str:
        return self.output[_LENGTH.size:].decode()


_LENGTH = struct.Struct(">Q")


class Worker:
    def __init__(self, out_fd: int) -> None:
        self.out_fd = out_fd
        self.queue: dict[str, Job] = {}
        self.running: RunningJob | None = None
        self.spare: Spare | None = None
        self.exiting: list[int] = []  # finished jobs still tearing down; reaped without waiting
        # The child writes the line it is on here; read when it has to be killed.
        self.progress = mmap.mmap(-1, 8)

    def send(self, message: dict) -> None:
        write_frame(self.out_fd, message)

    def serve(self) -> None:
        reader = FrameReader(0)
        self.spare = self._fork_spare()
        self.send({"type": "ready", "pid": os.getpid()})
        try:
            self._loop(reader)
        finally:
            self._kill_running()
            if self.spare is not None:
                _kill(self.spare.pid)

    def _loop(self, reader: FrameReader) -> None:
        while True:
            self._reap()
            fds = [0] + ([self.running.fd] if self.running else [])
            wait = max(0.0, self.running.deadline - time.monotonic()) if self.running else None
            if self.exiting:
                wait = 0.2 if wait is None else min(wait, 0.2)
            readable, _, _ = select.select(fds, [], [], wait)
            if 0 in readable:
                messages = reader.read()
                if messages is None:  # the server went away
                    return
                for message in messages:
                    if message.get("type") == "shutdown":
                        return
                    self._accept(message)
            if self.running and self.running.fd in readable:
                chunk = os.read(self.running.fd, 1 << 20)
                self.running.output += chunk
                if not chunk or self.running.complete():
                    self._finish_running()
            if self.running and time.monotonic() > self.running.deadline:
                self._kill_running(reason="timeout")
            if self.running is None and self.queue:
                self._start(self.queue.pop(next(iter(self.queue))))
            elif self.running is None and self.spare is None:
                self.spare = self._fork_spare()  # while the user is typing, not when a job waits

    def _accept(self, message: dict) -> None:
        key = message.get("key", "")
        replaced = self.queue.pop(key, None)
        if replaced is not None:
            self.send({"type": "cancelled", "id": replaced.id})
        if self.running and self.running.job.key == key:
            self._kill_running(reason="cancelled")
        if message.get("type") == "job":
            self.queue[key] = Job(**{k: message[k] for k in Job.__dataclass_fields__ if k in message})

    def _fork_spare(self) -> Spare:
        # Objects that exist now are never collected by the job's garbage collector, so a fork
        # does not write to (and copy) every page of the warm heap when gc walks it.
        gc.freeze()
        job_read, job_write = os.pipe()
        result_read, result_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            # Only the job's own pipes stay open: the worker's protocol pipe must reach EOF
            # when the worker dies, whatever its children are doing.
            for fd in (job_write, result_read, self.out_fd):
                os.close(fd)
            _wait_for_job(job_read, result_write, self.progress)
        os.close(job_read)
        os.close(result_write)
        return Spare(pid, job_write, result_read)

    def _start(self, job: Job) -> None:
        spare, self.spare = self.spare or self._fork_spare(), None
        struct.pack_into("i", self.progress, 0, -1)
        data = json.dumps(job.__dict__).encode()
        try:
            while data:
                data = data[os.write(spare.job_fd, data):]
        except OSError:
            pass  # the spare died; its result pipe reports that below
        os.close(spare.job_fd)
        self.running = RunningJob(job, spare.pid, spare.result_fd, time.monotonic() + job.timeout + KILL_GRACE_S)

    def _finish_running(self) -> None:
        running, self.running = self.running, None
        os.close(running.fd)
        if running.complete():
            # Passed through as text: the engine validates it once, the worker never parses it.
            self.send({"type": "result", "id": running.job.id, "report_json": running.report_json()})
            self.exiting.append(running.pid)  # tearing down ~1 GB of mappings takes a while
            return
        _, status = os.waitpid(running.pid, 0)
        line = struct.unpack_from("i", self.progress, 0)[0]
        self._send_report(running.job, ShapeReport(
            stopped=f"the script ended the shape analysis process at line {line + 1} (exit status {status})",
            stopped_line=max(line, 0)))

    def _send_report(self, job: Job, report: ShapeReport) -> None:
        self.send({"type": "result", "id": job.id, "report_json": report.model_dump_json()})

    def _reap(self) -> None:
        for pid in list(self.exiting):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.exiting.remove(pid)

    def _kill_running(self, reason: str = "") -> None:
        running, self.running = self.running, None
        if running is None:
            return
        _kill(running.pid)
        os.close(running.fd)
        if reason == "cancelled":
            self.send({"type": "cancelled", "id": running.job.id})
        elif reason == "timeout":
            line = struct.unpack_from("i", self.progress, 0)[0]
            self._send_report(running.job, ShapeReport(
                stopped=f"shape analysis stopped after {running.job.timeout:g} s at line {line + 1}",
                stopped_line=max(line, 0), timed_out=True))


def _kill(pid: int) -> None:
    """Kill a job and everything it started (its session), then reap it."""
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            continue
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _wait_for_job(job_fd: int, result_fd: int, progress: mmap.mmap) -> None:
    """In a spare fork: read the job (until the worker closes the pipe), run it, exit."""
    try:
        chunks = []
        while chunk := os.read(job_fd, 1 << 20):
            chunks.append(chunk)
        os.close(job_fd)
        if not chunks:  # the worker is shutting down or gone
            os._exit(0)
        job = Job(**json.loads(b"".join(chunks)))
    except BaseException:  # noqa: BLE001
        os._exit(1)
    _run_child(job, result_fd, progress)


def _run_child(job: Job, write_fd: int, progress: mmap.mmap) -> None:
    try:
        gc.disable()  # a short-lived job: collection would only copy shared pages
        os.setsid()  # one process group: killing it also kills anything the job started
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        if job.device not in ("cuda", "auto"):  # CUDA reserves far more address space than it uses
            _limit_memory(job.memory_mb)
        plan = ExecutionPlan.from_dict(job.plan)
        directory = os.path.dirname(os.path.abspath(plan.filename))
        if os.path.isdir(directory):
            os.chdir(directory)
            sys.path.insert(0, directory)
        sys.argv = [plan.filename]
        guards.install()
        inputs.install()
        report = run_job(plan, job.device, job.timeout,
                         on_line=lambda line: struct.pack_into("i", progress, 0, line))
        body = report.model_dump_json().encode()
        data = _LENGTH.pack(len(body)) + body
        while data:
            data = data[os.write(write_fd, data):]
        os.close(write_fd)  # the worker has the whole report before this process tears down
    except BaseException:  # noqa: BLE001 - the parent reports where the job stopped
        os._exit(1)
    os._exit(0)


def _limit_memory(memory_mb: int) -> None:
    with open("/proc/self/status") as status:
        size_kb = next((int(l.split()[1]) for l in status if l.startswith("VmSize:")), 0)
    limit = size_kb * 1024 + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


# Touches the op families most models use, so their first-use imports inside torch (meta
# decompositions, fx symbolic shapes) happen once here instead of in every forked job.
_WARM_UP = """
import torch, torch.nn as nn, torch.nn.functional as F
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 8)
        self.norm = nn.LayerNorm(8)
    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.norm(self.fc(torch.flatten(x, 1)))
net = Net()
out = net(torch.randn(2, 3, 14, 14))
pooled = nn.AdaptiveAvgPool2d(1)(torch.randn(2, 4, 5, 5))
loss = nn.CrossEntropyLoss()(out, torch.zeros(2, dtype=torch.long))
loss.backward()
tokens = nn.Embedding(10, 8)(torch.zeros(2, 5, dtype=torch.long))
seq, (h, c) = nn.LSTM(8, 8, batch_first=True)(tokens)
attn, _ = nn.MultiheadAttention(8, 2, batch_first=True)(seq, seq, seq)
both = torch.cat([attn, seq], dim=-1).view(2, -1).softmax(-1)
"""


def warm_up() -> None:
    """Import what jobs will need and run one tiny plan, so forks start hot."""
    import torch.nn.functional  # noqa: F401
    import torch.optim  # noqa: F401
    import torch.utils.data  # noqa: F401

    try:
        import torchvision  # noqa: F401
        import torchvision.datasets  # noqa: F401
        import torchvision.models  # noqa: F401
        import torchvision.transforms  # noqa: F401
    except ImportError:
        pass
    _skip_lazy_accelerator_calls()
    run_job(build_plan(_WARM_UP, "<torch-lsp warm-up>"), "meta", 10.0)


def _skip_lazy_accelerator_calls() -> None:
    """`torch.manual_seed` queues a seeding call for each absent accelerator and formats a stack
    trace each time (FakeData seeds every sample: ~3 ms a sample). Without the accelerator the
    queue never runs, so queue nothing."""
    import importlib

    for name in ("cuda", "xpu", "mtia"):
        backend = getattr(torch, name, None)
        if backend is None or not hasattr(backend, "_lazy_call") or _may_have(name, backend):
            continue
        backend._lazy_call = _queue_nothing
        try:  # random.py imported the function by name
            importlib.import_module(f"torch.{name}.random")._lazy_call = _queue_nothing
        except (ImportError, AttributeError):
            pass


def _may_have(name: str, backend) -> bool:
    """Whether the accelerator may be present, asked WITHOUT initialising it.

    Checked on an H200: `torch.cuda.is_available()` here (even with the NVML-based check) left
    the forked jobs with "CUDA error: initialization error". So for CUDA only the build and the
    driver's device files are looked at; a job (a fresh fork) is the first to touch CUDA.
    """
    if name == "cuda":
        built = torch.backends.cuda.is_built()
        return built and any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia"))
    return getattr(backend, "is_available", lambda: True)()


def _queue_nothing(*args, **kwargs) -> None:
    return None


def main() -> None:
    # Jobs are forks of this process: it must never initialise CUDA itself (a forked child
    # cannot use a parent's CUDA context), so availability is asked of NVML, not of CUDA.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    out_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # nothing printed by torch or user code can corrupt the protocol
    warm_up()
    Worker(out_fd).serve()


if __name__ == "__main__":
    main()
