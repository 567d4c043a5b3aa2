"""The event loop's thread answers requests; the server's other work yields it the CPU.

Static analyses, shape job specs and blocking waits run in threads (the loop's default
executor), API docs in a jedi helper process. On two busy cores (the shape worker's jobs, the
editor, the analyses of 30 documents being typed into) the loop's thread waited for a core
behind them. With that work LOWER_BY nice steps below it, hover answered in 8.4–11.4 ms at p95
inside the server while 30 documents were typed into, against 13.2–18.9 ms at one priority
(bench/bench_typing.py, docs/benchmarks.md). The reading thread (server/stdio.py) keeps the
loop's priority: it is on every request's path. The shape worker is not lowered: a training
run beside the editor must not starve the user's shapes.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

LOWER_BY = 10  # nice steps below the loop's thread


def lower_this_thread() -> None:
    """Run the calling thread LOWER_BY nice steps lower (Linux: nice is per thread there; on
    other systems the id would name a process, so nothing is done)."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, min(os.getpriority(os.PRIO_PROCESS, thread) + LOWER_BY, 19))
    except OSError:  # not allowed here (a container's seccomp policy): the default priority
        pass


def lower_this_process() -> None:
    """For helper processes of the server (they have one thread)."""
    try:
        os.nice(LOWER_BY)
    except (AttributeError, OSError):  # Windows has no nice
        pass


def executor() -> ThreadPoolExecutor:
    """The loop's default executor (asyncio's size), its threads lowered."""
    return ThreadPoolExecutor(max_workers=min(32, (os.cpu_count() or 1) + 4), thread_name_prefix="torch-lsp-background",
                              initializer=lower_this_thread)
