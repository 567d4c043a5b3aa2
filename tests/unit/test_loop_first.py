"""Analysis threads step aside while the event loop has messages to handle
(server/loop_first.py, its counts kept by server/stdio.py).

Every wait here is an event with a generous ceiling; "has not started" is checked for a moment
against a gate whose own ceiling is a minute, so a slow machine cannot make these pass or fail
by timing."""

from __future__ import annotations

import asyncio
import threading

import pytest

from torch_lsp import yield_points
from torch_lsp.analysis.check import analyze_source
from torch_lsp.server import stdio
from torch_lsp.server.loop_first import LoopFirst, LoopFirstExecutor, install

A_MOMENT = 0.3
NEVER = 60.0  # the gate's ceiling in these tests: far longer than any check below


@pytest.fixture
def executor():
    gate = LoopFirst(max_wait_s=NEVER)
    pool = LoopFirstExecutor(gate, max_workers=1)
    yield pool
    gate.all_handled()  # let anything still waiting go
    pool.shutdown(wait=True)


def test_work_waits_while_the_loop_has_messages_and_starts_once_they_are_handled(executor):
    gate, started = executor.gate, threading.Event()
    gate.handed()
    executor.submit(started.set)
    assert not started.wait(A_MOMENT)
    gate.taken()  # the loop took the message: it is being handled
    assert not started.wait(A_MOMENT)
    gate.all_handled()  # the loop asks for the next one
    assert started.wait(30)


def test_a_message_handed_while_the_loop_handled_others_keeps_the_work_waiting(executor):
    gate, started = executor.gate, threading.Event()
    gate.handed()
    gate.taken()
    gate.handed()  # arrives while the first is handled
    executor.submit(started.set)
    gate.all_handled()
    assert not started.wait(A_MOMENT)
    gate.taken()
    gate.all_handled()
    assert started.wait(30)


def test_work_with_nothing_waiting_starts_at_once(executor):
    assert executor.submit(lambda: 42).result(timeout=30) == 42


def test_the_wait_has_a_ceiling():
    gate = LoopFirst(max_wait_s=0.05)
    gate.handed()  # and never handled
    done = threading.Event()
    threading.Thread(target=lambda: (gate.step_aside(), done.set()), daemon=True).start()
    assert done.wait(30)


def test_the_loops_own_thread_never_waits_for_itself():
    gate = LoopFirst(max_wait_s=NEVER)
    gate.all_handled()  # called by the loop: its thread is known from here on
    gate.handed()

    def fail(timeout=None):
        raise AssertionError("the loop's thread waited for the loop")
    gate._idle.wait = fail
    gate.step_aside()


async def test_a_yield_point_inside_running_work_steps_aside():
    gate = LoopFirst(max_wait_s=NEVER)
    install(asyncio.get_running_loop(), gate)
    try:
        passed = threading.Event()
        gate.handed()
        threading.Thread(target=lambda: (yield_points.yield_point(), passed.set()), daemon=True).start()
        assert not passed.wait(A_MOMENT)
        gate.taken()
        gate.all_handled()
        assert passed.wait(30)
    finally:
        yield_points.install(None)
        gate.all_handled()


async def test_the_servers_analyses_step_aside_while_the_stdio_loop_has_a_message():
    """The wiring: messages handed by the reading thread and taken by pygls' loop through
    `_Messages`; an analysis sent to the loop's default executor waits until the loop asks for
    its next message."""
    loop = asyncio.get_running_loop()
    gate = LoopFirst(max_wait_s=NEVER)
    install(loop, gate)
    try:
        messages = stdio._Messages(gate)
        header = b"Content-Length: 2\r\n\r\n"
        threading.Thread(target=messages.hand, args=(loop, (header, b"{}"))).start()
        assert await messages.readline() == b"Content-Length: 2\r\n"  # the loop took the message
        finished = threading.Event()
        analysis = loop.run_in_executor(None, lambda: (analyze_source("import torch\n"), finished.set()))
        assert not finished.wait(A_MOMENT)  # (the loop has nothing else to do meanwhile)
        await messages.readline()
        assert await messages.readexactly(2) == b"{}"
        next_message = asyncio.ensure_future(messages.readline())  # handled: the loop asks again
        await asyncio.wait_for(analysis, 30)
        messages.hand(loop, None)
        assert await asyncio.wait_for(next_message, 30) == b""
    finally:
        yield_points.install(None)
        gate.all_handled()
