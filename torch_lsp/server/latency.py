"""How long the server takes to answer each request, measured inside the server.

From the moment the reading thread has the whole message (server/stdio.py) to the moment the
reply has been written: the wait in the event loop's queue behind other messages is counted,
the client's own delays (its parsing of our notifications, its scheduling) are not. A client
on the same busy cores sees more; this is the part the server is answerable for.
`torch-lsp.serverInfo` reports the last KEEP answers of each method as percentiles
(bench/bench_typing.py reads them beside its own timings).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque

KEEP = 2000  # answers kept per method
_PENDING = 4096  # requests awaiting an answer beyond this many are not timed (a client that
# never waits for replies must not grow the server)
_LARGE = 1 << 16  # a request body this long is not parsed in the reading thread (not timed)


class RequestLatency:
    def __init__(self) -> None:
        self._started: dict[object, tuple[str, float]] = {}  # request id -> (method, read at)
        self._answers: dict[str, deque[float]] = {}
        self._lock = threading.Lock()  # the reading thread and the event loop both touch it

    def received(self, body: bytes) -> None:
        """The reading thread has a whole message: note when, if it is a request."""
        if len(body) > _LARGE or b'"id"' not in body or b'"method"' not in body:
            return  # notifications (most messages, and the large ones) cost a substring search
        try:
            message = json.loads(body)
        except ValueError:
            return
        if isinstance(message, dict) and isinstance(message.get("method"), str) and "id" in message:
            try:
                with self._lock:
                    if len(self._started) < _PENDING:
                        self._started[message["id"]] = (message["method"], time.perf_counter())
            except TypeError:  # an id that cannot be a key (a list): answered as invalid, not timed
                pass

    def answered(self, msg_id: object) -> None:
        """The reply to `msg_id` has been written."""
        now = time.perf_counter()
        with self._lock:
            try:
                method, started = self._started.pop(msg_id)
            except (KeyError, TypeError):
                return
            self._answers.setdefault(method, deque(maxlen=KEEP)).append((now - started) * 1000)

    def summary(self, reset: bool = False) -> dict[str, dict[str, float]]:
        """Per method: how many answers are kept and their p50 / p95 / p99 / max in ms;
        `reset` forgets them (a bench measures one phase at a time)."""
        with self._lock:
            answers = {method: sorted(times) for method, times in self._answers.items() if times}
            if reset:
                self._answers.clear()
        return {method: {"count": len(times), "p50Ms": _percentile(times, 0.50), "p95Ms": _percentile(times, 0.95),
                         "p99Ms": _percentile(times, 0.99), "maxMs": _percentile(times, 1.0)}
                for method, times in answers.items()}


def _percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank percentile of sorted values."""
    return round(ordered[max(1, math.ceil(len(ordered) * q)) - 1], 3)
