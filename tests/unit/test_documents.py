"""A closed document leaves nothing behind in the document store (server/documents.py).

The end-to-end check is tests/lsp/test_protocol_lsp.py::test_huge_messages_do_not_stay_resident
(RSS after a huge file is closed); it failed about half the time, depending on whether the close
came while the analysis was in flight. Here that moment is held open on purpose, and the cyclic
garbage collector is off, as it is in practice on an idle server: what a closed document leaves
must be freed by reference counting alone.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from types import SimpleNamespace

from torch_lsp.config import Settings
from torch_lsp.server import documents
from torch_lsp.server.documents import DocumentStore, debounce_delay_ms

URI = "file:///project/model.py"


class _Server:
    """What the store uses of the language server: the workspace's text and the settings."""

    def __init__(self, source: str) -> None:
        document = SimpleNamespace(source=source, path="/project/model.py")
        self.workspace = SimpleNamespace(get_text_document=lambda uri: document)
        self.settings = Settings()

    def publish(self, uri: str) -> None:
        pass


async def test_closing_a_document_while_its_analysis_runs_frees_its_state():
    store = DocumentStore(_Server("x = 1\n" * 2000))
    started, finish = threading.Event(), threading.Event()
    analyse = store._analyse

    def held_analysis(state, source):
        started.set()
        finish.wait(30)
        return analyse(state, source)

    store._analyse = held_analysis
    collecting = gc.isenabled()
    gc.disable()
    try:
        store.opened(URI, 1)
        state = store.get(URI)
        task = state.pending
        kept = weakref.ref(state)
        assert await asyncio.get_running_loop().run_in_executor(None, started.wait, 30)
        store.closed(URI)  # the task is cancelled while it awaits the analysis thread
        del state
        finish.set()
        await asyncio.wait([task], timeout=30)
        assert task.cancelled()
        del task
        for _ in range(100):  # the thread lets go of the state when the analysis returns
            if kept() is None:
                break
            await asyncio.sleep(0.05)
        assert kept() is None, gc.get_referrers(kept())
    finally:
        finish.set()
        if collecting:
            gc.enable()


async def test_a_closed_state_holds_nothing_sized_like_the_document():
    """Whoever still holds a closed document's state (an analysis thread until it returns)
    holds no lines, moves, trees or findings of it."""
    store = DocumentStore(_Server("x = 1\n" * 10))
    store.opened(URI, 1)
    await store.ensure_analysis(URI)
    state = store.get(URI)
    state.edited(2, ("x = 2",) * 10)
    assert state.lines and state.moves and state.analysis is not None
    store.closed(URI)
    assert URI not in store
    assert (state.lines, state.moves, state.analysis, state.last_good, state.analyzer, state.pending,
            state.findings) == ((), [], None, None, None, None, {})


def test_the_debounce_waits_for_a_pause_but_never_past_two_debounces():
    assert debounce_delay_ms(250, 0.0) == 250  # the first edit: the debounce
    assert debounce_delay_ms(250, 0.2) == 250  # still room for a whole one
    assert debounce_delay_ms(250, 0.4) == 100  # the wait ends 500 ms after the first edit
    assert debounce_delay_ms(250, 0.6) == 0  # past it: analyse now
    assert debounce_delay_ms(0, 5.0) == 0


async def test_edits_faster_than_the_debounce_still_get_analysed(monkeypatch):
    """Edits 100 ms apart with a 250 ms debounce: a trailing debounce alone would wait until
    they stop; the analysis starts 500 ms after the first one, and the wait starts again then."""
    store = DocumentStore(_Server("x = 1\n"))
    clock = [100.0]
    monkeypatch.setattr(documents, "time", SimpleNamespace(monotonic=lambda: clock[0]))  # this module's clock only
    asked: list[float] = []  # when each scheduled analysis would start, on the fake clock

    async def record(state, uri, delay_ms):
        asked.append(clock[0] + delay_ms / 1000)

    monkeypatch.setattr(store, "ensure_analysis", lambda uri: asyncio.sleep(0))
    store.opened(URI, 1)  # analysed at once (no debounce), which ends that wait
    await store.states[URI].pending
    real_analyse_later = store._analyse_later
    monkeypatch.setattr(store, "_analyse_later", record)
    for version in range(2, 7):  # an edit every 100 ms, for half a second
        clock[0] += 0.1
        store.changed(URI, version)
        await asyncio.sleep(0)
    first_edit = 100.1
    assert [round(at - first_edit, 3) for at in asked] == [round(min(t / 10 + 0.25, 0.5), 3) for t in range(5)]

    # The analysis started (the wait is over): the next edit waits one debounce again.
    await real_analyse_later(store.states[URI], URI, 0)
    asked.clear()
    clock[0] += 0.1
    store.changed(URI, 7)
    await asyncio.sleep(0)
    assert asked == [clock[0] + 0.25]


async def test_an_edit_during_an_analysis_lets_it_finish_and_analyses_after_it():
    """Cancelling the running analysis's task does not stop its thread: the next analysis would
    run beside it (on a large document, on the same incremental analyzer). The edit's analysis
    waits for it instead, and only the current version's result is kept."""
    store = DocumentStore(_Server("x = 1\n"))
    store.server.settings = Settings(debounce_ms=0)
    finish = threading.Event()
    guard, running, most, versions = threading.Lock(), [0], [0], []
    analyse = store._analyse

    def held_analysis(state, source):
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
            versions.append(state.version)
        finish.wait(30)
        try:
            return analyse(state, source)
        finally:
            with guard:
                running[0] -= 1

    store._analyse = held_analysis
    try:
        store.opened(URI, 1)
        first = store.get(URI).pending
        while not versions:  # the first analysis is running in its thread
            await asyncio.sleep(0.01)
        store.changed(URI, 2)
        second = store.get(URI).pending
        for _ in range(20):  # the edit's task reaches the analysis lock (no sleep: debounce 0)
            await asyncio.sleep(0)
        assert not first.cancelled() and versions == [1]
        finish.set()
        await asyncio.wait_for(asyncio.gather(first, second), 30)
        assert most[0] == 1 and versions == [1, 2]
        assert store.get(URI).analysis_version == 2
    finally:
        finish.set()


async def test_hurry_analyses_an_edit_still_waiting_out_its_debounce_now(monkeypatch):
    """The shape worker is about to start the document's queued job (server/shapes.py): an edit
    waiting out its debounce is analysed at once, so that the job of its text replaces it.
    Nothing happens when no edit waits."""
    store = DocumentStore(_Server("x = 1\n"))
    monkeypatch.setattr(store, "ensure_analysis", lambda uri: asyncio.sleep(0))
    store.opened(URI, 1)
    await store.states[URI].pending
    assert not store.hurry(URI)
    assert store.states[URI].pending.done()  # nothing waited: nothing scheduled

    store.changed(URI, 2)
    waiting = store.states[URI].pending
    delays: list[int] = []
    real_analyse_later = store._analyse_later

    async def record(state, uri, delay_ms):
        delays.append(delay_ms)
        await real_analyse_later(state, uri, delay_ms)

    monkeypatch.setattr(store, "_analyse_later", record)
    assert store.hurry(URI)
    hurried = store.states[URI].pending
    await asyncio.wait_for(hurried, 5)
    assert waiting.cancelled() and delays == [0]
    assert store.states[URI].waiting_since is None  # analysing started: the next edit waits a debounce
    assert not store.hurry("file:///project/not_open.py")  # a key of no open document
