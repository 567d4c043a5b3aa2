"""When a newer version of a document arrives while its job runs: wait for it, or kill it?

Killing on every keystroke starves a document whose job takes longer than the gap between
edits: nothing is ever shown while the user types. So a job that is within what its document's
jobs usually take is left to finish (its results are shown, moved through the edits made
since, and the newest version runs right after); a job that has already run clearly longer
than usual (a loop the user is editing, a data load) is killed for the newer version.
Which jobs run beside each other is decided here too (`opens_slot`).
Pure and stdlib-only, so the policy is unit-tested without a worker.
"""

from __future__ import annotations

import os

# With no history for a document: a typical small-model job on meta takes 50–500 ms here.
DEFAULT_EXPECTED_S = 1.0
# A job may run this much longer than expected and still be waited for: durations vary with load.
SLACK_FACTOR = 1.5
SLACK_S = 0.25


def keeps_running(elapsed_s: float, expected_s: float | None) -> bool:
    """Let the running job finish (True) or kill it for the newer version (False)."""
    expected = DEFAULT_EXPECTED_S if expected_s is None else expected_s
    return elapsed_s < expected * SLACK_FACTOR + SLACK_S


def spare_cores() -> int:
    """The cores jobs may keep busy at once: all the process may use but one, left to the
    editor and the server (at least one)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def opens_slot(running: list[tuple[float, float | None]], slots: int, cores: int) -> bool:
    """May one more job of a kind (drivers, background probes) start beside the jobs of that
    kind already `running`, given as (elapsed s, expected s)? Up to `slots` of them; beyond
    the `cores` spared for jobs only beside jobs that have all overrun their usual time (a
    loop, a data load), so that such a job never makes another document wait for its timeout.
    Two quick jobs at once on two cores took the core the server answers on: hover p95 inside
    the server while typing into 30 documents 89-131 ms, one at a time 28-52 ms
    (docs/benchmarks.md)."""
    if len(running) >= slots:
        return False
    if len(running) < cores:
        return True
    return not any(keeps_running(elapsed, expected) for elapsed, expected in running)


class Durations:
    """Recent job durations per document: an exponential moving average."""

    def __init__(self, weight: float = 0.5, capacity: int = 512) -> None:
        self.weight = weight
        self.capacity = capacity
        self._by_key: dict[str, float] = {}

    def add(self, key: str, seconds: float) -> None:
        old = self._by_key.pop(key, None)
        self._by_key[key] = seconds if old is None else old + self.weight * (seconds - old)
        while len(self._by_key) > self.capacity:
            self._by_key.pop(next(iter(self._by_key)))

    def expected(self, key: str) -> float | None:
        return self._by_key.get(key)
