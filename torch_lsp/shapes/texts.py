"""Open documents' texts travel to the worker once, not with every job (stdlib only: both sides).

A job carries the unsaved text of every other open document (`JobSpec.overlay`: any of them may
be imported by the driver). With 30 documents open that was ~70 KB per job, encoded on the
server's event loop (twice: the message and the cache key) and decoded by the worker, for every
edit of every document. Now the server sends each distinct text once, in a `texts` message, and
a job names its overlay by digest (`overlay_refs`); the worker keeps the texts until the server
says to forget them (`forget_texts`, when what it holds passes `BUDGET_BYTES`). Only the server
decides what the worker holds, so the two never disagree; a new worker process starts empty.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

BUDGET_BYTES = 32 * 1024 * 1024  # texts the worker keeps for jobs to come (old versions go first)
MEMO_BYTES = 4 * 1024 * 1024  # texts whose digest is remembered (the memo keeps them alive)

_memo: OrderedDict[int, tuple[str, str]] = OrderedDict()  # id(text) -> (text, digest)
_memo_bytes = 0
_memo_lock = threading.Lock()


def digest(text: str) -> str:
    """A text's name. The other open documents' texts are the same objects job after job, so
    the last few megabytes of them are remembered by identity (held, so an id is never reused
    while remembered) instead of hashed again for every job."""
    global _memo_bytes
    with _memo_lock:
        known = _memo.get(id(text))
        if known is not None and known[0] is text:
            _memo.move_to_end(id(text))
            return known[1]
    name = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    if len(text) <= MEMO_BYTES:
        with _memo_lock:
            if id(text) not in _memo:
                _memo[id(text)] = (text, name)
                _memo_bytes += len(text)
            while _memo_bytes > MEMO_BYTES:
                _memo_bytes -= len(_memo.popitem(last=False)[1][0])
    return name


class SentTexts:
    """Server side, one per worker process: which texts that process holds."""

    def __init__(self, budget_bytes: int = BUDGET_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self._held: OrderedDict[str, int] = OrderedDict()  # digest -> size, least recently used first
        self._bytes = 0

    def messages_for(self, job: dict) -> list[dict]:
        """What to write for a job message (whose spec holds the texts in `overlay`): the texts
        the worker lacks, the job naming its overlay by digest, and what the worker may forget."""
        spec = dict(job["spec"])
        overlay = spec.pop("overlay", None) or {}
        refs, new = {}, {}
        for path, text in overlay.items():
            name = refs[path] = digest(text)
            if name in self._held:
                self._held.move_to_end(name)
            elif name not in new:
                new[name] = text
                self._held[name] = len(text)
                self._bytes += len(text)
        spec["overlay_refs"] = refs
        messages = [{"type": "texts", "texts": new}] if new else []
        messages.append({**job, "spec": spec})
        forget = []
        in_use = set(refs.values())
        while self._bytes > self.budget_bytes and self._held:
            name = next(iter(self._held))
            if name in in_use:  # this job's own texts are the newest: nothing older is left
                break
            self._bytes -= self._held.pop(name)
            forget.append(name)
        if forget:
            messages.append({"type": "forget_texts", "digests": forget})
        return messages


class HeldTexts:
    """Worker side: the texts the server sent, by digest."""

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}

    def accept(self, message: dict) -> bool:
        """Take a `texts` or `forget_texts` message; False for any other kind."""
        kind = message.get("type")
        if kind == "texts":
            self._texts.update(message.get("texts") or {})
        elif kind == "forget_texts":
            for name in message.get("digests") or ():
                self._texts.pop(name, None)
        else:
            return False
        return True

    def resolve(self, spec: dict) -> dict:
        """The job's spec with its overlay's texts in place of their digests."""
        refs = spec.get("overlay_refs")
        if refs is None:
            return spec
        spec = {key: value for key, value in spec.items() if key != "overlay_refs"}
        try:
            spec["overlay"] = {path: self._texts[name] for path, name in refs.items()}
        except KeyError as missing:
            raise ValueError(f"the text {missing} of an open document never arrived") from None
        return spec
