"""Server side of the shape engine: one warm worker process, jobs, cache, cancellation.

Never imports torch (the worker does). Started at `initialize` so that torch is imported while
the user is still opening their first file. `analyse()` returns the worker's ShapeReport, or
None when a newer job for the same document superseded it.

- Cache: reports by (plan hash, device, timeout, memory limit); an edit that does not change the
  plan (the plan has the same text) costs a dictionary lookup.
- Cancellation: a new job for a document key cancels the older one, in the engine (its awaiter
  gets None at once) and in the worker (the running fork is killed).
- Crash: if the worker process dies, it is restarted and in-flight jobs are sent again once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass

from torch_lsp.analysis.plan import ExecutionPlan
from torch_lsp.shapes.protocol import encode_frame, read_frame
from torch_lsp.shapes.report import ShapeReport

log = logging.getLogger(__name__)

# Beyond the job's own timeout, how long to wait before declaring the worker wedged.
_WORKER_SLACK_S = 20.0


@dataclass(frozen=True)
class JobSettings:
    device: str = "meta"
    timeout: float = 5.0
    memory_mb: int = 4096


@dataclass
class _Pending:
    message: dict
    future: asyncio.Future
    attempts: int = 1


class ShapeEngine:
    def __init__(self, python: str = sys.executable, cache_size: int = 64) -> None:
        self.python = python
        self.cache_size = cache_size
        self._cache: OrderedDict[str, ShapeReport] = OrderedDict()
        self._process: asyncio.subprocess.Process | None = None
        self._ready: asyncio.Event | None = None
        self._reader: asyncio.Task | None = None
        self._pending: dict[int, _Pending] = {}
        self._latest_by_key: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._closing = False
        self.restarts = 0

    # lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._process is not None and self._process.returncode is None:
            return
        self._ready = asyncio.Event()
        self._process = await asyncio.create_subprocess_exec(
            self.python, "-m", "torch_lsp.shapes.worker",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,  # never the LSP stream
            env={**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"},
            preexec_fn=_die_with_parent,
        )
        self._reader = asyncio.create_task(self._read_results(self._process))

    async def wait_ready(self, timeout: float = 180.0) -> bool:
        await self.start()
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def terminate(self) -> None:
        """Synchronous stop for shutdown hooks: the worker's forks die with their session."""
        self._closing = True
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.kill()

    async def close(self) -> None:
        self._closing = True
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            try:
                process.stdin.write(encode_frame({"type": "shutdown"}))
                await asyncio.wait_for(process.wait(), 2.0)
            except (asyncio.TimeoutError, ConnectionError):
                process.kill()
                await process.wait()
        if self._reader is not None:
            self._reader.cancel()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_result(None)
        self._pending.clear()

    # jobs -----------------------------------------------------------------------------------

    def cached(self, plan: ExecutionPlan, settings: JobSettings) -> ShapeReport | None:
        return self._cache.get(_cache_key(plan, settings))

    async def analyse(self, key: str, plan: ExecutionPlan, settings: JobSettings = JobSettings()) -> ShapeReport | None:
        cache_key = _cache_key(plan, settings)
        if cache_key in self._cache:
            self._cache.move_to_end(cache_key)
            self._supersede(key)
            return self._cache[cache_key]
        self._supersede(key)
        job_id = next(self._ids)
        self._latest_by_key[key] = job_id
        message = {"type": "job", "id": job_id, "key": key, "plan": plan.to_dict(), "device": settings.device,
                   "timeout": settings.timeout, "memory_mb": settings.memory_mb}
        future = asyncio.get_running_loop().create_future()
        self._pending[job_id] = _Pending(message, future)
        if not await self.wait_ready():
            self._pending.pop(job_id, None)
            return ShapeReport(stopped="the shape worker did not start")
        self._send(message)
        # Jobs run one at a time: those already queued may each take their whole timeout.
        patience = (settings.timeout + 1) * len(self._pending) + _WORKER_SLACK_S
        try:
            report = await asyncio.wait_for(asyncio.shield(future), patience)
        except asyncio.TimeoutError:
            log.warning("shape worker wedged; restarting it")
            await self._restart()
            report = ShapeReport(stopped=f"shape analysis stopped after {settings.timeout:g} s")
        finally:
            self._pending.pop(job_id, None)
        if report is not None:
            self._cache[cache_key] = report
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return report

    def _supersede(self, key: str) -> None:
        old = self._latest_by_key.pop(key, None)
        pending = self._pending.pop(old, None) if old is not None else None
        if pending is not None and not pending.future.done():
            pending.future.set_result(None)
            self._send({"type": "cancel", "key": key})

    def _send(self, message: dict) -> None:
        process = self._process
        if process is None or process.stdin is None or process.returncode is not None:
            return  # the reader notices the death and resubmits
        try:
            process.stdin.write(encode_frame(message))
        except (ConnectionError, RuntimeError):
            pass

    async def _read_results(self, process: asyncio.subprocess.Process) -> None:
        while True:
            message = await read_frame(process.stdout)
            if message is None:
                break
            kind = message.get("type")
            if kind == "ready":
                self._ready.set()
            elif kind in ("result", "cancelled"):
                pending = self._pending.get(message.get("id"))
                if pending is not None and not pending.future.done():
                    pending.future.set_result(_parse_report(message) if kind == "result" else None)
        if not self._closing and self._process is process:
            await self._restart()

    async def _restart(self) -> None:
        self.restarts += 1
        old = self._process
        self._process = None
        if old is not None and old.returncode is None:
            old.kill()
        await self.start()
        if not await self.wait_ready():
            return
        for pending in list(self._pending.values()):
            if pending.future.done():
                continue
            if pending.attempts >= 2:  # the job itself keeps killing the worker
                pending.future.set_result(ShapeReport(stopped="the shape worker crashed on this file"))
                continue
            pending.attempts += 1
            self._send(pending.message)


def _die_with_parent() -> None:
    """In the worker, before exec: if the server dies (even by SIGKILL), so does the worker,
    instead of finishing a multi-second torch import for nobody (Linux only)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _parse_report(message: dict) -> ShapeReport:
    try:
        return ShapeReport.model_validate_json(message.get("report_json") or "")
    except ValueError:
        return ShapeReport(stopped="the shape worker sent an unreadable report")


def _cache_key(plan: ExecutionPlan, settings: JobSettings) -> str:
    return f"{plan.hash}:{settings.device}:{settings.timeout}:{settings.memory_mb}"


async def analyse_source(source: str, filename: str, settings: JobSettings = JobSettings()) -> ShapeReport:
    """One-shot analysis for the CLI: start a worker, run one plan, stop the worker."""
    from torch_lsp.analysis.plan import build_plan

    plan = build_plan(source, filename)
    if plan.error:
        return ShapeReport(stopped=plan.error)
    engine = ShapeEngine()
    try:
        return await engine.analyse(filename, plan, settings) or ShapeReport(stopped="cancelled")
    finally:
        await engine.close()
