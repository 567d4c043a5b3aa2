"""Analysis threads step aside while the event loop has messages to handle.

The server's analyses (static rules, the workspace index, shape job specs) run in threads
beside the event loop, and CPython hands the interpreter lock to one thread at a time, a
switch interval (1 ms, app.py) after another asks for it. With several analyses running, the
loop had a share of the lock, and a hover waited behind the keystrokes queued before it: while
30 documents were typed into, the wait in the queue was most of hover's p95 (a probe of
bench/bench_typing.py). Here the reading thread (server/stdio.py) counts each message it hands
to the loop, the loop counts each one it takes and says when it has handled all of them, and
analysis work waits for that before it starts and at its yield points (yield_points.py): never
longer than MAX_WAIT_S at a time, so a flood of messages slows analyses, it cannot stop them.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from torch_lsp import yield_points

MAX_WAIT_S = 0.02


class LoopFirst:
    """Whether the event loop has messages it has not handled yet, told by the reading thread
    (`handed`) and the loop (`taken`, `all_handled`); analysis threads `step_aside`."""

    def __init__(self, max_wait_s: float = MAX_WAIT_S) -> None:
        self.max_wait_s = max_wait_s
        self._lock = threading.Lock()
        self._handed = self._taken = 0
        self._idle = threading.Event()
        self._idle.set()
        self._loop_thread: int | None = None

    def handed(self) -> None:
        """The reading thread gives the loop a message."""
        with self._lock:
            self._handed += 1
            self._idle.clear()

    def taken(self) -> None:
        """The loop takes a message from its queue (it is handled before the loop asks again)."""
        with self._lock:
            self._taken += 1

    def all_handled(self) -> None:
        """The loop asks for its next message: the ones taken so far are handled. Idle only if
        no message was handed meanwhile (counted under the lock: a message handed between the
        loop's look at its queue and this call keeps the analyses waiting)."""
        with self._lock:
            self._loop_thread = threading.get_ident()
            if self._taken == self._handed:
                self._idle.set()

    def step_aside(self) -> None:
        """In an analysis thread: let the loop handle its messages first. A no-op in the
        loop's own thread (it would wait for itself)."""
        if not self._idle.is_set() and threading.get_ident() != self._loop_thread:
            self._idle.wait(self.max_wait_s)


class LoopFirstExecutor(ThreadPoolExecutor):
    """The loop's default executor (`run_in_executor(None, ...)`): each piece of work steps
    aside before it starts, and the work's own yield points step aside too."""

    def __init__(self, gate: LoopFirst, **kwargs) -> None:
        super().__init__(**kwargs)
        self.gate = gate

    def submit(self, fn, /, *args, **kwargs):
        gate = self.gate

        def after_the_loop():
            gate.step_aside()
            return fn(*args, **kwargs)
        return super().submit(after_the_loop)


def install(loop, gate: LoopFirst) -> None:
    """Make `gate` decide for `loop`'s default executor and for every yield point."""
    loop.set_default_executor(LoopFirstExecutor(gate, thread_name_prefix="analysis"))
    yield_points.install(gate.step_aside)
