"""Signature and first doc paragraph of the torch API under the cursor, resolved with jedi.

jedi can take seconds on torch the first time (it parses torch's sources), so lookups never run
on the event loop and never make a hover wait: `lookup()` answers from the cache or returns None
and queues the lookup on one background thread; `prefetch()` warms the cache for every torch
name a document uses, right after its shapes arrive. jedi reads source files; torch is not
imported into the server process.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

log = logging.getLogger(__name__)

_TORCH_PREFIXES = ("torch", "torchvision")
_DOTTED_CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+)\s*\(")


@dataclass(frozen=True)
class ApiDoc:
    full_name: str
    signature: str
    summary: str

    def markdown(self) -> str:
        text = f"```python\n{self.signature}\n```"
        return text + (f"\n\n{self.summary}" if self.summary else "")


class ApiDocs:
    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], ApiDoc | None] = {}
        self._queued: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torch-lsp-jedi")

    def lookup(self, source: str, path: str | None, line: int, col: int, word: str) -> ApiDoc | None:
        """Cached doc for `word` (a dotted name) at (line, col); None now, maybe later."""
        key = (_imports_key(source), word)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            if key in self._queued:
                return None
            self._queued.add(key)
        self._executor.submit(self._resolve, key, source, path, line, col)
        return None

    def prefetch(self, source: str, path: str | None) -> None:
        lines = source.splitlines()
        for index, text in enumerate(lines):
            for match in _DOTTED_CALL.finditer(text):
                name = match.group(1)
                if not name.startswith("self."):
                    self.lookup(source, path, index, match.end(1) - 1, name)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _resolve(self, key, source: str, path: str | None, line: int, col: int) -> None:
        doc = None
        try:
            doc = _infer(source, path, line, col)
        except Exception:  # noqa: BLE001 - jedi failing on odd code only means no doc
            log.debug("jedi failed for %s", key, exc_info=True)
        with self._lock:
            self._cache[key] = doc
            self._queued.discard(key)


def _imports_key(source: str) -> str:
    """What a dotted name resolves to depends only on the file's imports."""
    imports = [l.strip() for l in source.splitlines() if l.lstrip().startswith(("import ", "from "))]
    return hashlib.sha1("\n".join(imports).encode()).hexdigest()


def _infer(source: str, path: str | None, line: int, col: int) -> ApiDoc | None:
    import jedi

    for name in jedi.Script(code=source, path=path).infer(line + 1, col):
        full_name = name.full_name or ""
        if not full_name.startswith(_TORCH_PREFIXES):
            continue
        signatures = name.get_signatures()
        signature = signatures[0].to_string() if signatures else full_name
        return ApiDoc(full_name, signature, first_paragraph(name.docstring(raw=True) or name.docstring()))
    return None


def first_paragraph(docstring: str) -> str:
    """The first paragraph that is prose, not a repeated signature line like `relu(input) -> Tensor`."""
    for paragraph in re.split(r"\n\s*\n", docstring.strip()):
        text = " ".join(line.strip() for line in paragraph.splitlines())
        if text and not re.match(r"^[\w.]+\(.*\)( -> .*)?$", text):
            return text
    return ""
