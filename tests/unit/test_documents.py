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
from torch_lsp.server.documents import DocumentStore

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
