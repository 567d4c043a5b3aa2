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


# A queued job of a document not on screen goes first too once this many jobs queued after it
# have started before it: the documents on screen, typed into without a pause, would otherwise
# take every turn. (Counted in turns, not seconds: the order does not depend on the machine's load.)
MOST_OVERTAKEN = 4


def goes_first(on_screen: bool, overtaken: int) -> bool:
    """Does a queued job start ahead of the others (which keep the order they were queued in)?
    Those of documents the editor shows (server/on_screen.py): while many documents' jobs wait
    (a module many open files import was edited, many files changed at once), the shapes the
    user looks at come first. And any that MOST_OVERTAKEN jobs queued after it overtook."""
    return on_screen or overtaken >= MOST_OVERTAKEN


# A document edited again within this long of its previous edit is being typed into: its jobs
# leave the cost observers out (server/shapes.py).
TYPING_GAP_S = 1.0
# ... and once it has been quiet this long, its version runs again with them.
COSTS_WHEN_QUIET_S = 1.0


def costs_now(gap_before_s: float | None) -> bool:
    """Run the cost observers (FLOPs, memory, the summary's module tree) in the job of a
    version whose edit came `gap_before_s` after the one before it (None: opened, not edited)?
    Not while the document is typed into: they were about half of each job's Python (30
    documents typed into at once: shapes' age p50 1.1 s with them, 0.85-1.1 s without:
    docs/benchmarks.md). The costs shown stay those of the last version measured, on the
    lines that did not change."""
    return gap_before_s is None or gap_before_s >= TYPING_GAP_S


def background_may_start(waiting_drivers: int) -> bool:
    """May a background job (a document's synthesized calls, its batch-naming run) start now,
    with `waiting_drivers` driver jobs queued that could start once a slot opens (not those
    waiting for their own document's running job)? Only when none waits: background jobs
    have slots of their own, but on two cores a background fork beside every driver's took
    the core the server and the editor use, and while 30 documents were typed into half of all
    forks were batch-naming runs whose results the next edit replaced (shapes' age p50
    1.4-1.6 s; with them waiting 1.1 s: docs/benchmarks.md). They run once typing pauses."""
    return waiting_drivers == 0


# The worker's heap goes onto huge pages (huge_pages.py) a step at a time between jobs, once it
# has been quiet this long after its warm-up (no message, no job), so that a document being
# typed into does not wait for a step; or once this many jobs have started meanwhile: under
# steady load (many documents typed into, where the warm-up also waits) the pass costs each job
# a step (~10-20 ms) for a while and pays for itself after ~60 jobs (~8 ms less CPU per job).
COLLAPSE_WHEN_QUIET_S = 1.0
COLLAPSE_AFTER_JOBS = 20
# Likewise the warm-up (a tiny model run once, ~0.1-0.3 s, so that jobs do not each pay torch's
# first-use work): when idle, or between two jobs once this many have started without it.
WARM_UP_AFTER_JOBS = 10


def warm_up_under_load(jobs_while_cold: int) -> bool:
    """Warm up now, between two jobs, although more wait?"""
    return jobs_while_cold >= WARM_UP_AFTER_JOBS


def huge_page_step_in(warmed: bool, jobs_waiting_for_it: int, quiet_s: float) -> float | None:
    """Seconds until the idle worker's next huge-page step (0: now), None while it waits for the
    warm-up. Asked only while a pass is due and no job runs."""
    if jobs_waiting_for_it >= COLLAPSE_AFTER_JOBS:
        return 0.0
    if not warmed:
        return None
    return max(0.0, COLLAPSE_WHEN_QUIET_S - quiet_s)


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
