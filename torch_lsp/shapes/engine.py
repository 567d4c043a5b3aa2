"""Server side of the shape engine: one warm worker process, jobs, cache, cancellation.

Never imports torch (the worker does, in the project's interpreter: shapes/interpreter.py).
`run(spec)` returns one ShapeReport per recorded file, or None when the job was cancelled
(a newer job for the same document replaced it before it started, or killed it).

- Cache: results by `JobSpec.cache_key()` (the plans, overlays, settings); an edit that does not
  change the plan costs a dictionary lookup and a decode. `invalidate()` drops it when files
  change on disk.
- Supersession: a newer job for a document is sent at once; the worker decides whether the
  running one finishes first (shapes/scheduling.py). Its result still reaches its caller, who
  knows which version it describes.
- Crash: if the worker process dies, it is restarted and in-flight jobs are sent again once.
- Start-up failure (no torch in the project's interpreter, Python too old): every job gets a
  report whose `stopped` says so, naming the interpreter; the worker is not restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import shutil
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from torch_lsp.analysis.plan import ExecutionPlan
from torch_lsp.shapes import early_start, scheduling
from torch_lsp.shapes.interpreter import Interpreter, find_interpreter, worker_command
from torch_lsp.shapes.protocol import encode_frame, read_frame
from torch_lsp.shapes.report import ReportError, ShapeReport, reports_from_json, reports_to_json
from torch_lsp.shapes.spec import BACKGROUND_WALL_FACTOR, JobSpec
from torch_lsp.shapes.texts import SentTexts

log = logging.getLogger(__name__)

# Beyond the job's own timeout, how long to wait before declaring the worker wedged.
_WORKER_SLACK_S = 20.0
_KILL_GRACE_S = 1.0


@dataclass(frozen=True)
class JobSettings:
    """The execution settings a job runs under: the one conversion from `Settings`."""

    device: str = "meta"
    timeout: float = 5.0
    memory_mb: int = 4096

    @classmethod
    def from_settings(cls, settings) -> "JobSettings":
        execution = settings.execution
        return cls(execution.device, execution.timeout, execution.memory_mb)


@dataclass
class _Pending:
    key: str
    message: dict
    future: asyncio.Future
    started: asyncio.Event
    attempts: int = 1
    background: bool = False
    reports_json: str | None = None  # the result as the worker sent it (for the cache)


Reports = dict[str, ShapeReport]


class ShapeEngine:
    def __init__(self, interpreter: Interpreter | None = None, parallel: int = 2, cache_size: int = 64) -> None:
        self.interpreter = interpreter or find_interpreter()
        self.parallel = max(1, parallel)
        self.cache_size = cache_size
        self._cache: OrderedDict[str, bytes] = OrderedDict()  # cache key -> _packed(result)
        self._process: asyncio.subprocess.Process | None = None
        self._ready: asyncio.Event | None = None
        self._reader: asyncio.Task | None = None
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._closing = False
        # Jobs not yet written to the worker, newest per document: when the worker reads slower
        # than edits come, older versions are replaced here instead of piling up in the pipe.
        self._outbox: OrderedDict[str, dict] = OrderedDict()
        self._flushing: asyncio.Task | None = None
        self._temporary: str | None = None
        self._scratch: str | None = None  # the confined worker's TMPDIR: its jobs' folders
        self._texts = SentTexts()  # the open documents' texts the worker process holds (texts.py)
        self.startup_error: str | None = None
        self._changed = asyncio.Condition()  # a job was sent or started (wait_started)
        # One worker whatever the timing: callers arriving while the process is being spawned
        # (8 documents opened at once) wait for it instead of spawning their own.
        self._starting = asyncio.Lock()
        self.worker_info: dict = {}
        self.jobs_started = 0  # by the worker (a job replaced while queued never starts): for benches
        # What the worker imported once for its jobs ({"modules", "seconds"}, worker._import_for),
        # since its process started: for benches and tests.
        self.worker_imports: list[dict] = []
        self.worker_warm_ups: list[dict] = []  # {"warm_up_s", "observers"}: worker._warm_up, likewise
        # The worker's last pass putting its heap on huge pages (worker._collapse_step), likewise.
        self.worker_huge_pages: dict | None = None
        self.restarts = 0
        # Told the key of the driver job the worker starts next (worker._announce_next), so that
        # the server can replace it with its document's newest text before it starts.
        self.on_next: Callable[[str], None] | None = None

    # lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        async with self._starting:
            await self._start()

    async def _start(self) -> None:
        if self._closing or self.startup_error or (self._process is not None and self._process.returncode is None):
            return
        self._ready = asyncio.Event()
        early = early_start.take(self.interpreter, self.parallel)  # started with `initialize`
        try:
            if early is not None:
                popen, self._temporary, self._scratch = early
                process = await _AdoptedProcess.adopt(popen)
            else:
                command, self._temporary = worker_command(self.interpreter)
                command, self._scratch = early_start.confined(command)
                process = await asyncio.create_subprocess_exec(
                    *command,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.DEVNULL,  # never the LSP stream
                    env=early_start.worker_environment(self.interpreter, self.parallel),
                    cwd=self._temporary, preexec_fn=early_start.die_with_parent,
                )
        except OSError as error:
            self._fail(f"the shape worker could not start with {self.interpreter.describe()}: {error}")
            return
        if self._closing:  # closed (execution switched off, shutdown) while it was being spawned
            process.kill()
            self._remove_temporary()
            return
        self._process = process
        self._texts = SentTexts()  # a new process holds no texts
        self._reader = asyncio.create_task(self._read_results(process))

    async def wait_ready(self, timeout: float = 180.0) -> bool:
        await self.start()
        if self.startup_error or self._closing or self._ready is None:
            return False
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return self.startup_error is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def terminate(self) -> None:
        """Synchronous stop for shutdown hooks: the worker's forks die with their session."""
        self._closing = True
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it exited, not yet reaped
                process.kill()
        self._remove_temporary()

    async def close(self) -> None:
        self._closing = True
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            try:
                process.stdin.write(encode_frame({"type": "shutdown"}))
                await asyncio.wait_for(process.wait(), 2.0)
            except (asyncio.TimeoutError, ConnectionError):
                with contextlib.suppress(ProcessLookupError):  # it exited in the meantime
                    process.kill()
                await process.wait()
        if self._reader is not None:
            self._reader.cancel()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_result(None)
        self._pending.clear()
        self._remove_temporary()

    def _remove_temporary(self) -> None:
        for folder in (self._temporary, self._scratch):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
        self._temporary = self._scratch = None

    # jobs -----------------------------------------------------------------------------------

    def cached(self, spec: JobSpec) -> Reports | None:
        packed = self._cache.get(spec.cache_key())
        return None if packed is None else _unpacked(packed)

    def invalidate(self) -> None:
        """Files on disk changed: results that read them may be out of date."""
        self._cache.clear()

    def cancel(self, key: str) -> None:
        """Drop a document's queued or running job (the document was closed)."""
        self._supersede(key, started_too=True)
        self._outbox.pop(key, None)
        self._send({"type": "cancel", "key": key})

    def _supersede(self, key: str, started_too: bool = False) -> None:
        """Older jobs of a document answer None: a job that has not started yet never will (the
        worker keeps only the newest queued job per document, and so does the outbox)."""
        for job_id, pending in list(self._pending.items()):
            if pending.key == key and not pending.future.done() and (started_too or not pending.started.is_set()):
                pending.future.set_result(None)
                self._pending.pop(job_id, None)

    async def run(self, spec: JobSpec, first: bool = False) -> Reports | None:
        """The job's reports (None: replaced by a newer job of its key). `first`: the worker
        starts it before the queued jobs without (a document the editor shows)."""
        cache_key = spec.cache_key()
        if cache_key in self._cache:
            self._cache.move_to_end(cache_key)
            return _unpacked(self._cache[cache_key])
        if not await self.wait_ready():
            return self._stopped(spec, self.startup_error or "the shape worker did not start")
        job_id = next(self._ids)
        message = {"type": "job", "id": job_id, "key": spec.key, "spec": spec.to_dict(), "first": first}
        future = asyncio.get_running_loop().create_future()
        self._supersede(spec.key)
        pending = self._pending[job_id] = _Pending(spec.key, message, future, asyncio.Event(),
                                                   background=spec.background)
        self._send(message)
        await self._notify()
        # `at_once` jobs run at a time at least: those queued ahead may each take their whole timeout
        # (background jobs: up to the worker's wall-time backstop, in slots of their own).
        waves = sum(p.background == spec.background for p in self._pending.values()) // self.at_once + 1
        limit = spec.timeout * (BACKGROUND_WALL_FACTOR if spec.background else 1)
        patience = (limit + _KILL_GRACE_S) * waves + _WORKER_SLACK_S
        try:
            reports = await asyncio.wait_for(asyncio.shield(future), patience)
        except asyncio.TimeoutError:
            log.warning("shape worker wedged; restarting it")
            await self._restart()
            reports = self._stopped(spec, f"shape analysis stopped after {spec.timeout:g} s")
        finally:
            self._pending.pop(job_id, None)
        if reports is not None:
            self._cache[cache_key] = _packed(reports, pending.reports_json)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return reports

    @property
    def at_once(self) -> int:
        """Jobs of one kind the worker runs at once, at least, while more wait (`parallel`, or
        the cores it leaves beside the editor if fewer: scheduling.opens_slot)."""
        return min(self.parallel, scheduling.spare_cores())

    @property
    def running(self) -> list[str]:
        """Keys of the jobs running in the worker now (started, not answered)."""
        return [p.key for p in self._pending.values() if p.started.is_set() and not p.future.done()]

    @property
    def queued(self) -> list[str]:
        """Keys of the jobs sent to the worker that wait for their turn (not started), in the order sent."""
        return [p.key for p in self._pending.values() if not p.started.is_set() and not p.future.done()]

    async def wait_started(self, key: str, timeout: float = 120.0) -> bool:
        """Wait until the newest job sent for `key` runs in the worker (tests, benchmarks)."""
        def newest_started() -> bool:
            mine = [p for p in self._pending.values() if p.key == key]
            return bool(mine) and mine[-1].started.is_set()

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(newest_started), timeout)
                return True
            except asyncio.TimeoutError:
                return False

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def analyse(self, key: str, plan: ExecutionPlan, settings: JobSettings = JobSettings()) -> ShapeReport | None:
        """One file that runs itself (tests, simple callers)."""
        spec = JobSpec(key=key, main=plan, device=settings.device, timeout=settings.timeout,
                       memory_mb=settings.memory_mb)
        reports = await self.run(spec)
        return None if reports is None else reports.get(plan.filename) or next(iter(reports.values()), None)

    @staticmethod
    def _stopped(spec: JobSpec, why: str) -> Reports:
        return {path: ShapeReport(path=path, stopped=why) for path in spec.recorded or [spec.main.filename]}

    def _send(self, message: dict) -> None:
        process = self._process
        if process is None or process.stdin is None or process.returncode is not None:
            return  # the reader notices the death and resubmits
        if message.get("type") == "job" and (self._outbox or _unsent(process) > _MAX_UNSENT):
            self._outbox[message["key"]] = message  # replaces an older version's job
            if self._flushing is None or self._flushing.done():
                self._flushing = asyncio.ensure_future(self._flush(process))
            return
        try:
            self._write(process, message)
        except (ConnectionError, RuntimeError):
            pass

    def _write(self, process: asyncio.subprocess.Process, message: dict) -> None:
        """A job goes with the open documents' texts the worker does not hold yet (texts.py)."""
        messages = self._texts.messages_for(message) if message.get("type") == "job" else [message]
        process.stdin.write(b"".join(encode_frame(each) for each in messages))

    async def _flush(self, process: asyncio.subprocess.Process) -> None:
        """Write the outbox as the worker reads: each job once the pipe has room again."""
        while self._outbox and process is self._process:
            try:
                await process.stdin.drain()
            except (ConnectionError, RuntimeError):
                return
            if not self._outbox or process is not self._process:
                return
            key, message = self._outbox.popitem(last=False)
            if message["id"] in self._pending:  # not superseded or cancelled meanwhile
                try:
                    self._write(process, message)
                except (ConnectionError, RuntimeError):
                    return

    async def _read_results(self, process: asyncio.subprocess.Process) -> None:
        while True:
            message = await read_frame(process.stdout)
            if message is None:
                break
            kind = message.get("type")
            if kind == "ready":
                self.worker_info, self.worker_imports, self.worker_warm_ups = message, [], []
                self.worker_huge_pages = None
                self._ready.set()
            elif kind == "imported":
                self.worker_imports.append({"modules": message.get("modules"), "seconds": message.get("seconds")})
            elif kind == "warm":
                self.worker_warm_ups.append({"warm_up_s": message.get("warm_up_s"), "observers": message.get("observers")})
            elif kind == "huge_pages":
                self.worker_huge_pages = {key: message.get(key) for key in ("collapsed_mb", "skipped_mb", "huge_mb", "unsupported")}
            elif kind == "started":
                self.jobs_started += 1
                pending = self._pending.get(message.get("id"))
                if pending is not None:
                    pending.started.set()
                    await self._notify()
            elif kind == "next":
                self._announce(str(message.get("key", "")))
            elif kind == "fatal":
                self._fail(str(message.get("message")))
            elif kind in ("result", "cancelled"):
                pending = self._pending.get(message.get("id"))
                if pending is not None and not pending.future.done():
                    pending.future.set_result(self._parse(message, pending) if kind == "result" else None)
        if not self._closing and self._process is process and not self.startup_error:
            await self._restart()

    def _announce(self, key: str) -> None:
        if self.on_next is None:
            return
        try:
            self.on_next(key)
        except Exception:  # noqa: BLE001 - the queued job runs its own version then
            log.exception("announcing the next shape job of %s failed", key)

    def _fail(self, why: str) -> None:
        """The worker cannot run in this interpreter: every job says so, none is retried."""
        log.warning("shape worker: %s", why)
        self.startup_error = why
        if self._ready is not None:
            self._ready.set()
        for pending in self._pending.values():
            if not pending.future.done():
                spec = JobSpec.from_dict(pending.message["spec"])
                pending.future.set_result(self._stopped(spec, why))

    @staticmethod
    def _parse(message: dict, pending: _Pending) -> Reports:
        try:
            reports = reports_from_json(message.get("reports_json") or "")
        except (ReportError, TypeError, ValueError, KeyError):
            spec = JobSpec.from_dict(pending.message["spec"])
            return ShapeEngine._stopped(spec, "the shape worker sent an unreadable report")
        pending.reports_json = message["reports_json"]
        return reports

    async def _restart(self) -> None:
        self.restarts += 1
        self._outbox.clear()  # the pending jobs are sent again below
        old = self._process
        self._process = None
        if old is not None and old.returncode is None:
            old.kill()
        self._remove_temporary()
        await self.start()
        if not await self.wait_ready():
            return
        for pending in list(self._pending.values()):
            if pending.future.done():
                continue
            if pending.attempts >= 2:  # the job itself keeps killing the worker
                spec = JobSpec.from_dict(pending.message["spec"])
                pending.future.set_result(self._stopped(spec, "the shape worker crashed on this file"))
                continue
            pending.attempts += 1
            self._send(pending.message)


_MAX_UNSENT = 256 * 1024  # bytes written but not yet read by the worker before jobs wait


def _unsent(process: asyncio.subprocess.Process) -> int:
    transport = getattr(process.stdin, "transport", None)
    return transport.get_write_buffer_size() if transport is not None else 0


class _AdoptedProcess:
    """The parts of `asyncio.subprocess.Process` the engine uses, for a worker started before
    the event loop ran (shapes/early_start.py)."""

    def __init__(self, popen) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stdout = asyncio.StreamReader()
        self.stdin: asyncio.StreamWriter | None = None

    @classmethod
    async def adopt(cls, popen) -> "_AdoptedProcess":
        process = cls(popen)
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(process.stdout), popen.stdout)
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, popen.stdin)
        process.stdin = asyncio.StreamWriter(transport, protocol, None, loop)
        return process

    @property
    def returncode(self) -> int | None:
        # Asked before every job is written: poll() is a wait4() call, which gives up the GIL on
        # the event loop (and waits to get it back behind the analysis threads). A worker that
        # ends closes its stdout first, so only then is it asked.
        if self._popen.returncode is None and self.stdout.at_eof():
            self._popen.poll()
        return self._popen.returncode

    def kill(self) -> None:
        try:
            self._popen.kill()
        except ProcessLookupError:
            pass

    async def wait(self) -> int:
        return await asyncio.get_running_loop().run_in_executor(None, self._popen.wait)


def _packed(reports: Reports, reports_json: str | None) -> bytes:
    """A result as the cache keeps it: its JSON, compressed (1-3 KB where the report objects take
    ~50-80 KB; 64 results held that way were 3-4 MiB of the server's memory). `reports_json`:
    the worker's own text of it, when it sent one (a stopped job's reports are made here)."""
    return zlib.compress((reports_json or reports_to_json(reports)).encode(), 1)


def _unpacked(packed: bytes) -> Reports:
    """A cached result, decoded (0.15-0.2 ms for the seed's): new objects on every hit, so a
    caller that adds to them (session.analyse adds the document's own report) changes nothing
    that is cached."""
    return reports_from_json(zlib.decompress(packed))
