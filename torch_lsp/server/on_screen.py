"""Which documents the editor shows now, as far as its requests tell.

An editor asks inlay hints and code lenses for the documents it shows (for the visible range,
again after each edit and on scroll), and hover and code actions where the user points: LSP
has no message that says which documents are on screen, but these requests do. A document asked
any of them within ON_SCREEN_S counts as shown; its shape jobs go ahead of those of documents
that are not (shapes/worker.py). That matters only when jobs queue, e.g. when a module imported
by many open files is edited and they all re-run, or many files change at once: the shapes the
user looks at come first, the others' when their turn comes. Without such requests (an editor
that asks none of them) every document keeps the order in which its jobs were queued.
"""

from __future__ import annotations

import time
from typing import Callable

# Longer than the gap between an editor's requests for a document it shows while the user works
# in it (each edit, each scroll asks inlay hints again) and than a pause to read; a document
# shown but left alone has no jobs to hurry anyway.
ON_SCREEN_S = 10.0


class OnScreen:
    def __init__(self, clock: Callable[[], float] = time.monotonic, keep_s: float = ON_SCREEN_S) -> None:
        self._clock = clock
        self._keep_s = keep_s
        self._asked: dict[str, float] = {}  # uri -> when the editor last asked something for what it shows

    def asked(self, uri: str) -> None:
        """The editor asked for something it shows of `uri` (inlay hints, code lenses, hover,
        code actions)."""
        self._asked[uri] = self._clock()
        if len(self._asked) > 256:  # documents asked long ago: forget them
            now = self._clock()
            self._asked = {key: at for key, at in self._asked.items() if now - at <= self._keep_s}

    def shows(self, uri: str) -> bool:
        at = self._asked.get(uri)
        return at is not None and self._clock() - at <= self._keep_s

    def closed(self, uri: str) -> None:
        self._asked.pop(uri, None)
