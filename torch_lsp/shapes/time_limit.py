"""A job's time limit: raise JobTimeout in the job's own thread when its time is up.

One timer signal is not enough. Python drops an exception raised inside a finalizer or a weakref
callback (it prints "Exception ignored in ..." and carries on), and a job runs such callbacks
all the time: the memory observer hears of every freed storage through one, and so does torch's
own bookkeeping. A timeout that lands there is lost, and `while True: x = x + 1` spins on. Seen
in CI: the in-process test of a timed-out job spun for an hour. So once the time is up the
timer keeps firing every REPEAT_S until the job's code is left.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import contextmanager
from typing import Iterator

REPEAT_S = 0.05
# torch-lsp's own recording code (the job's bookkeeping, the recorder, the observers and their
# weakref callbacks): a JobTimeout raised there would cut an update short, or be dropped. The
# next firing comes REPEAT_S later, in the user's code or torch's.
_SHAPES_PACKAGE = os.path.dirname(os.path.abspath(__file__))


class JobTimeout(BaseException):
    """Not an Exception: the user's `except Exception` must not swallow it."""


class TimeLimit:
    """The running limit of one job, for `cancel()` before its clean-up."""

    def __init__(self, which: int) -> None:
        self._which = which
        self.cancelled = False

    def cancel(self) -> None:
        """The job's code is left: what follows (its clean-up) is never interrupted."""
        self.cancelled = True
        signal.setitimer(self._which, 0)


@contextmanager
def time_limit(seconds: float, cpu: bool = False) -> Iterator[TimeLimit]:
    """JobTimeout after `seconds` of wall time (of CPU time: `cpu`), then again every REPEAT_S
    until `cancel()` or the end of the block. The timer this replaces (pytest-timeout's, when a
    test runs a job in process) is put back afterwards with the time it had left."""
    which, signum = (signal.ITIMER_PROF, signal.SIGPROF) if cpu else (signal.ITIMER_REAL, signal.SIGALRM)
    clock = time.process_time if cpu else time.monotonic
    limit = TimeLimit(which)

    def stop(_signum, frame) -> None:
        if limit.cancelled or isinstance(sys.exc_info()[1], JobTimeout):
            return  # a timeout already on its way out: its `finally` blocks and `__exit__`s run
        if frame is not None and os.path.dirname(frame.f_code.co_filename) == _SHAPES_PACKAGE:
            return
        raise JobTimeout()

    previous_handler = signal.signal(signum, stop)
    started = clock()
    previous_delay, previous_interval = signal.setitimer(which, max(seconds, 0.01), REPEAT_S)
    try:
        yield limit
    finally:
        limit.cancel()
        signal.signal(signum, previous_handler)
        if previous_delay:
            left = max(previous_delay - (clock() - started), 0.001)
            signal.setitimer(which, left, previous_interval)

