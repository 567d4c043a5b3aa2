"""The shape worker: imports torch once, then runs each job in a forked, isolated child.

Started by shapes/engine.py in the project's interpreter (shapes/interpreter.py). Protocol on
stdin/stdout: frames of a 4-byte big-endian length and a JSON object (see `protocol.py`).

- Jobs run in forks of this warm process (no torch import per job; a poisoned job cannot
  affect the next), in a new session, with stdin/stdout/stderr on /dev/null, the OS-level
  sandbox of shapes/sandbox (no network, writes only into the job's own temporary folder, no
  new processes, resource limits) and the runtime guards of guards.py (see `_isolate`).
- No process of a job outlives it: the worker is a child subreaper and kills every leftover
  when a job ends. A job over `memoryMb` (resident, any device) is killed, saying so.
- Several documents' jobs run at once (`parallel`, default 2), as many as the cores spare
  beside the editor (one on two cores); a further one starts beside jobs that have overrun
  their usual time, so one looping document never delays another by its timeout
  (`scheduling.opens_slot`). Jobs of one document run one at a time, newest last.
  Background jobs (a document's synthesized calls, its batch-naming run) have `parallel`
  slots of their own, run niced and are timed on CPU time: they never make a driver job wait,
  and start only while no other document's driver job waits (`scheduling.background_may_start`).
- Queued jobs start in the order their documents were queued (a newer version takes the
  older one's place), the jobs of documents on screen (marked `first` by the server:
  server/on_screen.py) before the others, and any job four of them overtook with them
  (`scheduling.goes_first`). While drivers run, the server is told which queued driver starts
  next (`next`), so that it can replace that job with its document's newest text first.
- A newer version of a document does not kill a job that is about to finish (see
  `scheduling.keeps_running`): it waits, and the server shows that job's results moved
  through the edits made since. A job that has run longer than expected is killed.
- Jobs stop themselves at the timeout (an interval timer raises inside the user's code, so
  shapes up to there are kept) and are killed one second later if stuck in C code.
- A spare fork is made while the worker is idle (fork() of a process that has imported torch
  costs ~60 ms here), and finished jobs are reaped without waiting for their exit. Between
  jobs (once quiet after the warm-up, or after enough jobs: scheduling.huge_page_step_in) the
  worker puts its heap on 2 MB pages (huge_pages.py): forking it and ending a fork then cost
  less system time.
- Start-up is `import torch` and one spare fork, then `ready`: the first job does not wait for
  anything else. The warm-up (a tiny model run once, so that torch's first-use imports are
  not paid again by every job) happens when the worker is next idle, and torchvision (~1 s,
  ~170 MB) is imported only once a job's files mention it (docs/benchmarks.md, "Cold start").
  Likewise the job module and the observers a job names (the cost observers' FLOP counter:
  ~100 ms) are imported by the worker before the first job that needs them, not by every fork.

What one job does (run the driver and probes, classify errors) is in job.py. This module
imports torch only in `main()`, so that a project interpreter without torch gets a clear
message instead of a traceback.
"""

from __future__ import annotations

import gc
import importlib
import json
import mmap
import os
import select
import signal
import struct
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from torch_lsp.shapes import huge_pages, lazy_dynamo, lazy_symbolic, meta_kernels, observers, sandbox, scheduling
from torch_lsp.shapes.protocol import FrameReader, write_frame
from torch_lsp.shapes.report import ShapeReport, reports_to_json
from torch_lsp.shapes.spec import BACKGROUND_WALL_FACTOR, JobSpec
from torch_lsp.shapes.texts import HeldTexts

KILL_GRACE_S = 1.0
# Tests only: sandbox layers to leave out, to show that the others hold (the server's own
# environment; a project cannot set it: spec.env is applied after the sandbox is entered).
_SANDBOX_SKIP = tuple(filter(None, os.environ.get("TORCH_LSP_SANDBOX_SKIP", "").split(",")))
MEMORY_CHECK_S = 0.1  # how often running jobs' memory is looked at (statm: microseconds)
WARM_UP_WHEN_IDLE_S = 3.0  # no job since `ready` for this long: warm up anyway
REHEARSE_AFTER_S = 0.1  # a spare fork with no job for this long rehearses (_wait_for_job)
BACKGROUND_NICE = 10  # background jobs (spec.py) run niced, in slots of their own
_SLOT = struct.Struct("ii")  # per running job: index of the recorded file, 0-based line reached
# A fork's result: the lengths of its reports (JSON, passed on as text) and of the names of the
# modules it had to import that the worker then imports for later jobs (_LAZY).
_HEAD = struct.Struct(">QH")
# Modules the worker starts with stand-ins for, imported when a job needs more than they answer.
_LAZY = {lazy.NAME: lazy for lazy in (lazy_dynamo, lazy_symbolic)}


# --------------------------------------------------------------------------------------------
# The warm process


@dataclass
class Job:
    id: int
    key: str
    spec: JobSpec
    raw: dict  # the spec as received: forwarded to the child without re-encoding twice
    first: bool = False  # its document is on screen: it starts before queued jobs without (_in_turn)
    overtaken: int = 0  # jobs queued after its document's that started before it (_in_turn)


@dataclass
class Spare:
    """A fork made ahead of time, waiting for its job."""

    pid: int
    job_fd: int  # the worker writes the job here
    result_fd: int  # and reads the reports here


@dataclass
class RunningJob:
    job: Job
    pid: int
    fd: int
    slot: int
    started: float
    deadline: float
    job_dir: str
    baseline_mb: float  # memory the fork shared with the warm worker when it started
    output: bytearray = field(default_factory=bytearray)

    def complete(self) -> bool:
        if len(self.output) < _HEAD.size:
            return False
        reports, names = _HEAD.unpack_from(self.output)
        return len(self.output) - _HEAD.size == reports + names

    def reports_json(self) -> str:
        (reports, _) = _HEAD.unpack_from(self.output)
        return self.output[_HEAD.size:_HEAD.size + reports].decode()

    def imported(self) -> list[str]:
        (reports, _) = _HEAD.unpack_from(self.output)
        return self.output[_HEAD.size + reports:].decode().split()


class Worker:
    def __init__(self, out_fd: int, parallel: int = 2, cores: int | None = None) -> None:
        self.out_fd = out_fd
        self.parallel = max(1, parallel)
        self.cores = scheduling.spare_cores() if cores is None else max(1, cores)  # see opens_slot
        self.queue: OrderedDict[str, Job] = OrderedDict()
        self.running: dict[str, RunningJob] = {}
        self.durations = scheduling.Durations()
        self.spare: Spare | None = None
        self.exiting: list[int] = []  # finished jobs still tearing down; reaped without waiting
        # Each running job writes the line it is on into its slot; read when it has to be killed.
        # Driver jobs and background jobs each have `parallel` slots.
        self.progress = mmap.mmap(-1, _SLOT.size * (2 * self.parallel + 1))
        self.free_slots = list(range(2 * self.parallel + 1))
        self.warmed = False  # the warm-up ran (when idle; see warm_up) with every observer asked for
        self.observers_asked: set[str] = set()  # by jobs so far: the warm-up runs them too
        self.warm_up_due = float("inf")  # when the warm-up may run: after the first job, or idle a while
        self.startup: dict[str, float] = {}  # seconds per start-up step, sent with `ready`
        self.texts = HeldTexts()  # open documents' texts, sent once, named by jobs (texts.py)
        self.huge_pages = huge_pages.Collapser()  # the warm heap on 2 MB pages, between jobs
        self.last_activity = 0.0  # monotonic time of the last message or running job
        self.jobs_while_collapse_due = 0  # jobs started while a huge-page pass was due
        self.jobs_while_cold = 0  # jobs started while the warm-up was due
        self.tried_imports: set[str] = set()  # modules imported here for jobs (see _import_for)
        self.imported_by_jobs: list[str] = []  # what a job's fork had to import (_LAZY)
        self.announced: str | None = None  # the key last announced to start next (_announce_next)

    def send(self, message: dict) -> None:
        write_frame(self.out_fd, message)

    def serve(self) -> None:
        reader = FrameReader(0)
        sandbox.become_subreaper()  # orphans of jobs become ours, so none can outlive its job
        started = time.perf_counter()
        self.spare = self._fork_spare()
        self.startup["spare_fork_s"] = time.perf_counter() - started
        self.send({"type": "ready", "pid": os.getpid(), "python": sys.executable,
                   "version": ".".join(map(str, sys.version_info[:3])), "torch": _torch_version(),
                   "startup": self.startup})
        # The first job (usually a moment away: the editor is opening a file) must not wait for
        # the warm-up; without one, warm up after a while anyway.
        self.warm_up_due = time.monotonic() + WARM_UP_WHEN_IDLE_S
        try:
            self._loop(reader)
        finally:
            for key in list(self.running):
                self._kill_running(key)
            if self.spare is not None:
                _kill(self.spare.pid)

    def _loop(self, reader: FrameReader) -> None:
        while True:
            self._reap()
            by_fd = {running.fd: key for key, running in self.running.items()}
            now = time.monotonic()
            wait = min((r.deadline - now for r in self.running.values()), default=None)
            if self.running:
                wait = min(wait, MEMORY_CHECK_S)
            if self.exiting:
                wait = 0.2 if wait is None else min(wait, 0.2)
            idle = not self.warmed and not self.running and not self.queue
            if idle:  # with the warm-up still to do: look for messages until it is due, then do it
                due = self.warm_up_due - now
                wait = due if wait is None else min(wait, due)
            step_in = None  # seconds until the next huge-page step, if one is due
            if self.huge_pages.busy and not self.running:
                step_in = scheduling.huge_page_step_in(self.warmed, self.jobs_while_collapse_due, now - self.last_activity)
            if step_in is not None:
                wait = step_in if wait is None else min(wait, step_in)
            readable, _, _ = select.select([0, *by_fd], [], [], None if wait is None else max(0.0, wait))
            if readable or self.running:
                self.last_activity = time.monotonic()
            if idle and not readable and time.monotonic() >= self.warm_up_due:
                self._warm_up()
                continue
            if step_in is not None and not readable and time.monotonic() >= now + step_in:
                self._collapse_step()
                if not self.queue:
                    continue  # else the next queued job starts now, the pass goes on after it
            if 0 in readable:
                messages = reader.read()
                if messages is None:  # the server went away
                    return
                for message in messages:
                    if message.get("type") == "shutdown":
                        return
                    self._accept(message)
            for fd in readable:
                key = by_fd.get(fd)
                running = self.running.get(key) if key is not None else None
                if running is None or running.fd != fd:
                    continue
                chunk = os.read(fd, 1 << 20)
                running.output += chunk
                if not chunk or running.complete():
                    self._finish_running(key)
            now = time.monotonic()
            for key, running in list(self.running.items()):
                if now > running.deadline:
                    self._kill_running(key, reason="timeout")
                elif verdict := sandbox.memory_verdict(running.pid, running.job.spec.memory_mb, running.baseline_mb):
                    self._kill_running(key, reason="memory", detail=verdict)
            if not self.running and self.queue:
                self._catch_up_under_load()
            self._start_queued()
            if not self.running and self.spare is None:
                self.spare = self._fork_spare()  # while the user is typing, not when a job waits

    # messages -------------------------------------------------------------------------------

    def _accept(self, message: dict) -> None:
        if self.texts.accept(message):
            return
        kind, key = message.get("type"), message.get("key", "")
        replaced = self.queue.get(key)
        if replaced is not None:
            self.send({"type": "cancelled", "id": replaced.id})
        if kind == "cancel":
            self.queue.pop(key, None)
            if key in self.running:
                self._kill_running(key, reason="cancelled")
            return
        if kind != "job":
            self.queue.pop(key, None)
            return
        try:
            raw = self.texts.resolve(message["spec"])
            job = Job(int(message["id"]), key, JobSpec.from_dict(raw), raw, bool(message.get("first")))
        except (KeyError, TypeError, ValueError) as error:
            self.queue.pop(key, None)
            self.send({"type": "result", "id": message.get("id"), "reports_json": reports_to_json(
                {"": ShapeReport(stopped=f"the shape worker could not read the job: {error}")})})
            return
        running = self.running.get(key)
        if running is not None:
            elapsed = time.monotonic() - running.started
            if not scheduling.keeps_running(elapsed, self.durations.expected(key)):
                self._kill_running(key, reason="cancelled")
        # A newer version takes the queued one's place: the document has waited since then. (At
        # the end of the queue, a document typed into faster than jobs run never got to the front.)
        job.overtaken = replaced.overtaken if replaced is not None else 0
        self.queue[key] = job

    def _start_queued(self) -> None:
        """Start what may start now (scheduling.opens_slot); called on every turn of the loop,
        so a slot that opens when a running job overruns its usual time is filled then."""
        # Driver jobs queued that are not waiting for their own document's running job.
        waiting_drivers = sum(1 for key, job in self.queue.items() if not job.spec.background and key not in self.running)
        for key in self._in_turn():
            if key in self.running:
                continue
            background = self.queue[key].spec.background
            if background and not scheduling.background_may_start(waiting_drivers):
                continue
            now = time.monotonic()
            running = [(now - r.started, self.durations.expected(k))
                       for k, r in self.running.items() if r.job.spec.background == background]
            if scheduling.opens_slot(running, self.parallel, self.cores):
                self._overtake(key)
                self._start(self.queue.pop(key))
                waiting_drivers -= not background
        self._announce_next()

    def _in_turn(self) -> list[str]:
        """The queued keys in the order they may start: those of documents on screen first
        (server/on_screen.py), and those they overtook too often (`scheduling.goes_first`),
        each group in the order its documents were queued."""
        return sorted(self.queue, key=lambda key: not scheduling.goes_first(self.queue[key].first, self.queue[key].overtaken))

    def _overtake(self, key: str) -> None:
        """`key`'s job starts: each driver queued before it that could have started is overtaken."""
        for other, job in self.queue.items():
            if other == key:
                return
            if not job.spec.background and other not in self.running:
                job.overtaken += 1

    def _announce_next(self) -> None:
        """Tell the server which queued driver job starts next, while drivers run. Its document
        may have been edited since that job's version, the edits still waiting out their
        debounce: the server analyses them now, and the newer job takes the queued one's place
        before it starts (many documents typed into: each waits its turn for a round of the
        others' jobs, and ran a version up to two debounces older than its text at the start)."""
        if self.announced not in self.queue:
            self.announced = None  # it started or was cancelled: its next version is announced again
        if not any(not running.job.spec.background for running in self.running.values()):
            return
        upcoming = next((key for key in self._in_turn()
                         if not self.queue[key].spec.background and key not in self.running), None)
        if upcoming is not None and upcoming != self.announced:
            self.announced = upcoming
            self.send({"type": "next", "key": upcoming})

    # jobs -----------------------------------------------------------------------------------

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
            rehearsal = sorted(self.observers_asked) if self.warmed else None
            _wait_for_job(job_read, result_write, self.progress, rehearsal)
        os.close(job_read)
        os.close(result_write)
        return Spare(pid, job_write, result_read)

    def _warm_up(self) -> None:
        started = time.perf_counter()
        warm_up(sorted(self.observers_asked))
        self.warmed = True
        self.jobs_while_cold = 0
        self.huge_pages.dirty = True
        self.last_activity = time.monotonic()
        self._drop_spare()  # forked cold: make the next job's fork from the warm process
        self.send({"type": "warm", "warm_up_s": time.perf_counter() - started, "observers": sorted(self.observers_asked)})

    def _start(self, job: Job) -> None:
        self._import_for(job.spec)
        if self.huge_pages.busy:
            self.jobs_while_collapse_due += 1
        if not self.warmed:
            self.jobs_while_cold += 1
        if not self.observers_asked.issuperset(job.spec.observers):
            # Warm up (again) with them once idle: what they import on first use is then
            # imported here, not by every job's fork (the memory observer's report, ~5 ms).
            self.observers_asked.update(job.spec.observers)
            self.warmed = False
        spare, self.spare = self.spare or self._fork_spare(), None
        slot = self.free_slots.pop(0)
        _SLOT.pack_into(self.progress, slot * _SLOT.size, 0, -1)
        job_dir = sandbox.job_directory()
        baseline = sandbox.anonymous_mb(spare.pid, with_descendants=False)
        data = json.dumps({"slot": slot, "job_dir": job_dir, "spec": job.raw}).encode()
        try:
            while data:
                data = data[os.write(spare.job_fd, data):]
        except OSError:
            pass  # the spare died; its result pipe reports that below
        os.close(spare.job_fd)
        self.send({"type": "started", "id": job.id})
        now = time.monotonic()
        limit = job.spec.timeout * (BACKGROUND_WALL_FACTOR if job.spec.background else 1)
        self.running[job.key] = RunningJob(job, spare.pid, spare.result_fd, slot, now, now + limit + KILL_GRACE_S,
                                           job_dir, baseline)

    def _import_for(self, spec: JobSpec) -> None:
        """Import what the job needs that this process has not imported yet, here, once: in the
        job's fork it would be imported again by every job (torch's FLOP counter, which the cost
        observers use, is ~100 ms and 74 modules; torchvision ~130 ms; the job module ~30 ms).
        The spare, forked without them, is replaced. Each module is tried once (one that fails
        to import fails in the job, which says why)."""
        needed = [name for name in _imports_for(spec) if name not in sys.modules and name not in self.tried_imports]
        needed += [name for name in self.imported_by_jobs  # a job's fork had to import it (_LAZY)
                   if name in _LAZY and not _LAZY[name].imported() and name not in self.tried_imports]
        if not needed:
            return
        started = time.perf_counter()
        for name in needed:
            self.tried_imports.add(name)
            try:
                _LAZY[name].import_real() if name in _LAZY else importlib.import_module(name)
            except Exception:  # noqa: BLE001 - an observer the project's torch cannot run, no torchvision
                pass
        prepare_for_forks()
        self.send({"type": "imported", "modules": needed, "seconds": time.perf_counter() - started})
        self.huge_pages.dirty = True
        self._drop_spare()

    def _drop_spare(self) -> None:
        """The spare was forked from an older state of this process: the next job forks anew."""
        if self.spare is not None:
            _kill(self.spare.pid)
            os.close(self.spare.job_fd)
            os.close(self.spare.result_fd)
            self.spare = None

    def _catch_up_under_load(self) -> None:
        """Between two jobs, with more queued. The warm-up and the huge-page pass wait for the
        worker to be idle, which it never is while many documents are typed into: there every
        fork paid torch's first-use work again and forked a heap on 4 KB pages (CPU per fork
        56 against 41 ms, half as many jobs a second: docs/benchmarks.md). Once enough jobs
        have waited for them they run here, the pass a step (~10-20 ms) at a time."""
        if not self.warmed and scheduling.warm_up_under_load(self.jobs_while_cold):
            self._warm_up()
        elif self.huge_pages.busy and scheduling.huge_page_step_in(self.warmed, self.jobs_while_collapse_due, 0.0) == 0.0:
            self._collapse_step()

    def _collapse_step(self) -> None:
        """One step of putting the heap on huge pages (huge_pages.py). The spare goes
        first (it would keep the 4 KB pages alive beside their huge copies) and is forked
        again once the pass is done, sharing the huge pages."""
        self._drop_spare()
        self.huge_pages.step()
        if self.huge_pages.busy:
            return
        self.jobs_while_collapse_due = 0
        self.spare = self._fork_spare()
        self.send({"type": "huge_pages", "collapsed_mb": self.huge_pages.collapsed_bytes >> 20,
                   "skipped_mb": self.huge_pages.skipped_bytes >> 20, "huge_mb": round(huge_pages.huge_mb()),
                   "unsupported": self.huge_pages.unsupported})

    def _release(self, key: str) -> RunningJob:
        running = self.running.pop(key)
        os.close(running.fd)
        self.free_slots.append(running.slot)
        return running

    def _end_leftovers(self, running: RunningJob) -> None:
        """After a job: its folder goes, and so does every process it started or abandoned
        (anything below the worker that is not a live job, the spare, or a job tearing down)."""
        sandbox.kill_descendants(running.pid)
        keep = [r.pid for r in self.running.values()] + self.exiting + ([self.spare.pid] if self.spare else [])
        sandbox.kill_descendants(spare=keep)
        sandbox.remove_job_directory(running.job_dir)

    def _finish_running(self, key: str) -> None:
        running = self._release(key)
        self.warm_up_due = min(self.warm_up_due, time.monotonic())  # idle after a job: warm up then
        if running.complete():
            self.durations.add(key, time.monotonic() - running.started)
            self.imported_by_jobs += [name for name in running.imported() if name not in self.imported_by_jobs]
            # Passed through as text: the engine validates it once, the worker never parses it.
            self.exiting.append(running.pid)  # tearing down ~1 GB of mappings takes a while
            self._end_leftovers(running)  # before the result: nothing of the job runs on after it
            self.send({"type": "result", "id": running.job.id, "reports_json": running.reports_json()})
            return
        _, status = os.waitpid(running.pid, 0)
        self._end_leftovers(running)
        file, line = self._reached(running)
        code = os.waitstatus_to_exitcode(status)
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        self._send_stopped(running.job, f"shape analysis ended: the process {how} at {_where(running.job, file, line)}",
                           file, line, ended=True)

    def _kill_running(self, key: str, reason: str = "", detail: str = "") -> None:
        running = self._release(key)
        _kill(running.pid)
        self._end_leftovers(running)
        if reason == "memory":
            file, line = self._reached(running)
            self._send_stopped(running.job, f"shape analysis stopped at {_where(running.job, file, line)}: {detail}",
                               file, line, ended=True)
        elif reason == "cancelled":
            self.send({"type": "cancelled", "id": running.job.id})
        elif reason == "timeout":
            file, line = self._reached(running)
            self._send_stopped(running.job, f"shape analysis stopped after {running.job.spec.timeout:g} s at "
                                            f"{_where(running.job, file, line)}", file, line, timed_out=True)

    def _reached(self, running: RunningJob) -> tuple[str, int]:
        index, line = _SLOT.unpack_from(self.progress, running.slot * _SLOT.size)
        recorded = running.job.spec.recorded or [running.job.spec.main.filename]
        return recorded[index] if 0 <= index < len(recorded) else recorded[0], line

    def _send_stopped(self, job: Job, stopped: str, file: str, line: int, timed_out: bool = False,
                      ended: bool = False) -> None:
        reports = {}
        for path in job.spec.recorded or [job.spec.main.filename]:
            here = path == file and line >= 0
            reports[path] = ShapeReport(path=path, stopped=stopped, stopped_line=line if here else None,
                                        timed_out=timed_out and here, ended=ended and here)
        self.send({"type": "result", "id": job.id, "reports_json": reports_to_json(reports)})

    def _reap(self) -> None:
        for pid in list(self.exiting):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.exiting.remove(pid)
                sandbox.kill_descendants(pid)  # (orphans by now: the next job's end collects them)


# What every job's fork imports: the job, what isolates it (_isolate) and the single-process
# group stand-in script_env joins torch.distributed to.
_EVERY_JOB = ["torch_lsp.shapes.job", "torch_lsp.shapes.meta_compat", "torch.testing._internal.distributed.fake_pg"]


def _imports_for(spec: JobSpec) -> list[str]:
    """The modules a job will import that the worker can import for all jobs alike."""
    names = [*_EVERY_JOB, *observers.modules_of(spec.observers)]
    if "torchvision" not in sys.modules and _mentions_torchvision(spec):
        # PIL.ImageFile: PIL imports it on an image's first `tobytes`, which every dataset stand-in
        # (FakeData's images through ToTensor) calls.
        names += ["torchvision", "torchvision.datasets", "torchvision.models", "torchvision.transforms", "PIL.ImageFile"]
    return names


def prepare_for_forks() -> None:
    """After imports for jobs: what each fork would otherwise make from them, made once here
    (the classes it puts in torchvision.datasets' place)."""
    if "torchvision.datasets" in sys.modules:
        from torch_lsp.shapes import datasets

        datasets.prepare_stand_ins()


def _mentions_torchvision(spec: JobSpec) -> bool:
    """Does the job's driver or one of the open documents it may import use torchvision?
    (A file on disk that imports it is imported by the job's own fork: correct, just slower.)"""
    return "torchvision" in spec.main.source or any("torchvision" in text for text in spec.overlay.values())


def _where(job: Job, file: str, line: int) -> str:
    where = f"line {line + 1}" if line >= 0 else "the start"
    return where if file == job.spec.main.filename else f"{os.path.basename(file)} {where}"


def _kill(pid: int) -> None:
    """Kill a job and everything it started (its tree, its session), then reap it."""
    sandbox.kill_descendants(pid)
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except (ProcessLookupError, PermissionError):
            continue
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


# --------------------------------------------------------------------------------------------
# The job's fork


def _wait_for_job(job_fd: int, result_fd: int, progress: mmap.mmap, rehearsal: list[str] | None = None) -> None:
    """In a spare fork: read the job (until the worker closes the pipe), run it, exit.

    With a `rehearsal` (the observers jobs ask for), a fork that has waited REHEARSE_AFTER_S
    without a job runs the warm-up plan with them:
    its first touch of the warm heap (reference counts, torch's dispatch tables) copies every
    page it writes, ~10 ms of a resnet50 job, and the rehearsal pays for most of them before the
    job is there. Not sooner: while jobs queue (many documents typed into) the next one comes at
    once and would wait for the rehearsal."""
    if rehearsal is not None and not select.select([job_fd], [], [], REHEARSE_AFTER_S)[0]:
        try:
            warm_up(rehearsal)
        except BaseException:  # noqa: BLE001 - a rehearsal that fails only means no head start
            pass
    try:
        chunks = []
        while chunk := os.read(job_fd, 1 << 20):
            chunks.append(chunk)
        os.close(job_fd)
        if not chunks:  # the worker is shutting down or gone
            os._exit(0)
        message = json.loads(b"".join(chunks))
        spec = JobSpec.from_dict(message["spec"])
        slot, job_dir = int(message["slot"]), str(message["job_dir"])
    except BaseException:  # noqa: BLE001
        os._exit(1)
    _run_child(spec, result_fd, progress, slot, job_dir)


def _run_child(spec: JobSpec, write_fd: int, progress: mmap.mmap, slot: int, job_dir: str) -> None:
    try:
        from torch_lsp.shapes.job import run_spec

        gc.disable()  # a short-lived job: collection would only copy shared pages
        _isolate(spec, job_dir)
        _enter_project(spec)
        recorded = spec.recorded
        index = {path: i for i, path in enumerate(recorded)}
        lazy_before = {name for name, lazy in _LAZY.items() if lazy.imported()}
        offset = slot * _SLOT.size

        def on_line(filename: str, line: int) -> None:
            _SLOT.pack_into(progress, offset, index.get(filename, 0), line)

        reports = run_spec(spec, on_line=on_line)
        body = reports_to_json(reports).encode()
        names = " ".join(name for name, lazy in _LAZY.items() if lazy.imported() and name not in lazy_before).encode()
        data = _HEAD.pack(len(body), len(names)) + body + names
        while data:
            data = data[os.write(write_fd, data):]
        os.close(write_fd)  # the worker has the whole report before this process tears down
    except BaseException:  # noqa: BLE001 - the parent reports where the job stopped
        os._exit(1)
    os._exit(0)


def _isolate(spec: JobSpec, job_dir: str) -> None:
    """Everything that keeps a job from touching more than it should, before user code runs."""
    from torch_lsp.shapes import guards, inputs, meta_compat, script_env

    os.setsid()  # one process group: killing it also kills anything the job started
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    # What this system cannot enforce is reported once by the server (server/sandbox_notice.py).
    sandbox.enter(job_dir, spec, skip=_SANDBOX_SKIP)
    if spec.device in ("cuda", "auto"):
        with_triton()  # torch.compile of a model on the GPU compiles with triton
    guards.install()
    inputs.install()
    script_env.install(spec)
    meta_compat.install()
    if spec.background:  # synthesized calls yield the CPU to drivers (and to the editor)
        os.nice(BACKGROUND_NICE)
        _one_thread()


def _one_thread() -> None:
    import torch

    try:
        torch.set_num_threads(1)
    except RuntimeError:
        pass


def _enter_project(spec: JobSpec) -> None:
    """Working directory, sys.path, argv and environment as the driver expects them."""
    main = spec.main.filename
    directory = spec.cwd or os.path.dirname(os.path.abspath(main))
    if os.path.isdir(directory):
        os.chdir(directory)
    roots = spec.roots or [os.path.dirname(os.path.abspath(main))]
    sys.path[:0] = [r for r in dict.fromkeys(roots) if r]
    sys.argv = [main, *spec.argv]
    os.environ.update(spec.env)


# --------------------------------------------------------------------------------------------
# Start-up


# Touches the op families most models use, a training step and a shape error's explanation, so
# that their first-use imports inside torch (meta decompositions; not symbolic shapes, which
# plain sizes never need: lazy_symbolic.py) and torch-lsp happen once here instead of in every
# forked job.
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
optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
out = net(torch.randn(2, 3, 14, 14))
pooled = nn.AdaptiveAvgPool2d(1)(torch.randn(2, 4, 5, 5))
loss = nn.CrossEntropyLoss()(out, torch.zeros(2, dtype=torch.long))
optimizer.zero_grad()
loss.backward()
optimizer.step()
tokens = nn.Embedding(10, 8)(torch.zeros(2, 5, dtype=torch.long))
seq, (h, c) = nn.LSTM(8, 8, batch_first=True)(tokens)
attn, _ = nn.MultiheadAttention(8, 2, batch_first=True)(seq, seq, seq)
both = torch.cat([attn, seq], dim=-1).view(2, -1).softmax(-1)
wrong = net.fc(torch.ones(2, 5))  # last: a shape error, as files being typed often have, explained
"""


def warm_up(observers: list[str] | None = None) -> None:
    """Run one tiny plan, with the observers jobs ask for, so that jobs forked afterwards find
    torch's and the observers' first-use imports done."""
    from torch_lsp.analysis.plan import build_plan
    from torch_lsp.shapes.job import run_spec

    plan = build_plan(_WARM_UP, "<torch-lsp warm-up>")
    run_spec(JobSpec(key=plan.filename, main=plan, device="meta", timeout=10.0, observers=list(observers or ())))


def prepare() -> None:
    """What every job needs, before the first one: torch's submodules jobs use, stand-ins for
    what torch's meta functions and decompositions import on first use and shape jobs on plain
    sizes do not need (symbolic shapes and sympy: lazy_symbolic.py; dynamo: lazy_dynamo.py),
    faster meta kernels (meta_kernels.py) and no queued calls for absent accelerators."""
    import torch  # noqa: F401
    import torch.nn.functional  # noqa: F401
    import torch.optim  # noqa: F401
    import torch.utils.data  # noqa: F401

    _without_triton()
    lazy_dynamo.install()  # a stand-in for dynamo until a job needs more than it answers
    lazy_symbolic.install()  # and for symbolic shapes and sympy until a size is symbolic

    meta_kernels.install()  # C++ meta kernels where torch has them; batch norm without its decomposition

    _skip_lazy_accelerator_calls()


_REAL_TRITON_CHECKS: dict[str, object] = {}


def _without_triton() -> None:
    """Dynamo imports triton when it is installed (~100 MB of the worker's memory, ~0.5 s) for
    compiling GPU kernels, which shape jobs on meta or CPU never do. A job on CUDA gets the
    real check back (`with_triton`)."""
    import torch.utils._triton as triton_checks

    for name in ("has_triton_package", "has_triton"):
        _REAL_TRITON_CHECKS[name] = getattr(triton_checks, name)
        setattr(triton_checks, name, _no_triton)


def with_triton() -> None:
    import torch.utils._triton as triton_checks

    for name, check in _REAL_TRITON_CHECKS.items():
        setattr(triton_checks, name, check)


def _no_triton(*args, **kwargs) -> bool:
    return False


def _skip_lazy_accelerator_calls() -> None:
    """`torch.manual_seed` queues a seeding call for each absent accelerator and formats a stack
    trace each time (FakeData seeds every sample: ~3 ms a sample). Without the accelerator the
    queue never runs, so queue nothing."""
    import importlib

    import torch

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
    import torch

    if name == "cuda":
        built = torch.backends.cuda.is_built()
        return built and any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia"))
    return getattr(backend, "is_available", lambda: True)()


def _queue_nothing(*args, **kwargs) -> None:
    return None


def _torch_version() -> str | None:
    torch = sys.modules.get("torch")
    return getattr(torch, "__version__", None)


def _fatal(out_fd: int, message: str) -> None:
    write_frame(out_fd, {"type": "fatal", "message": message})
    os._exit(3)


def main() -> None:
    # Jobs are forks of this process: it must never initialise CUDA itself (a forked child
    # cannot use a parent's CUDA context), so availability is asked of NVML, not of CUDA.
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    out_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # nothing printed by torch or user code can corrupt the protocol
    if sys.version_info < (3, 10):
        _fatal(out_fd, f"{sys.executable} is Python {sys.version.split()[0]}; shape analysis needs Python 3.10 or newer")
    started = time.perf_counter()
    try:
        import torch  # noqa: F401
    except BaseException as error:  # noqa: BLE001 - ImportError, or a broken binary install
        _fatal(out_fd, f"torch cannot be imported by {sys.executable}: {type(error).__name__}: {error}")
    imported = time.perf_counter()
    prepare()
    parallel = int(os.environ.get("TORCH_LSP_PARALLEL_JOBS", "2") or 2)
    worker = Worker(out_fd, parallel)
    worker.startup.update(import_torch_s=imported - started, prepare_s=time.perf_counter() - imported)
    worker.serve()


if __name__ == "__main__":
    main()
