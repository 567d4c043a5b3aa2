"""A job's time limit: it fires again when Python drops a timeout, never inside the job's clean-up,
and puts back the timer it replaced. Every loop here is bounded, so a broken limit fails the
test instead of hanging it."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from tests.shapes.helpers import line_of
from torch_lsp.shapes.time_limit import JobTimeout, time_limit


def _spin(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def test_a_timeout_that_was_caught_fires_again():
    with pytest.raises(JobTimeout):
        with time_limit(0.05):
            try:
                _spin(10)
            except JobTimeout:
                pass  # what Python does with one raised in a finalizer
            _spin(10)
            pytest.fail("the time limit fired once only")


def test_nothing_fires_after_cancel():
    with time_limit(0.05) as limit:
        limit.cancel()
        _spin(0.3)


def test_the_timer_it_replaced_is_put_back():
    fired = []

    def handler(signum, frame):
        fired.append(signum)

    outer_handler = signal.signal(signal.SIGALRM, handler)  # pytest-timeout's, while tests run
    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, 100)
    try:
        with time_limit(5):
            pass
        delay, _ = signal.getitimer(signal.ITIMER_REAL)
        assert signal.getsignal(signal.SIGALRM) is handler
        assert 90 < delay <= 100
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, outer_handler)
        if outer_delay:
            signal.setitimer(signal.ITIMER_REAL, outer_delay, outer_interval)
    assert fired == []


SPIN_AFTER_A_FINALIZER = '''
import time
start = time.monotonic()

class Late:
    def __del__(self):
        while True:  # until the job's timeout is raised here, and dropped by Python
            pass

Late()
count = 0
while time.monotonic() < start + 30:
    count += 1
'''


def test_a_timeout_dropped_by_a_finalizer_still_stops_the_job(run_meta, monkeypatch):
    """Seen in CI: a timeout raised inside the memory observer's weakref callback was dropped
    and the job's loop spun for an hour."""
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: dropped.append(unraisable.exc_type))
    report = run_meta(SPIN_AFTER_A_FINALIZER, timeout=1.0)
    assert JobTimeout in dropped
    assert report.timed_out  # without the second firing, the loop runs its 30 s and ends normally
    loop = line_of(SPIN_AFTER_A_FINALIZER, "while time.monotonic() < start + 30")
    assert report.stopped in (f"shape analysis stopped after 1 s at line {loop + 1}",
                              f"shape analysis stopped after 1 s at line {loop + 2}")
