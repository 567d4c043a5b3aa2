"""The server's background threads run below the event loop's thread (server/background.py)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from torch_lsp.server import background

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="per-thread priorities are Linux's")


def nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_executor_threads_run_lower_and_the_caller_does_not():
    before = nice_of_this_thread()
    with background.executor() as pool:
        lowered = pool.submit(nice_of_this_thread).result(timeout=60)
    assert lowered == min(before + background.LOWER_BY, 19)
    assert nice_of_this_thread() == before


def test_a_thread_already_at_the_lowest_priority_stays_there():
    def lowest_then_lower():
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        background.lower_this_thread()
        found.append(nice_of_this_thread())

    found = []
    thread = threading.Thread(target=lowest_then_lower)
    thread.start()
    thread.join(timeout=60)
    assert found == [19]
