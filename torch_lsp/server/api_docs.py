"""Signature and first doc paragraph of the torch API under the cursor, resolved with jedi.

jedi can take seconds on torch the first time (it parses torch's sources) and keeps ~70 MB of
parse trees, so lookups run in one small helper process (spawned on first use; torch is never
imported, jedi reads source files) and never make a hover wait: `lookup()` answers from the
cache or returns None and queues the lookup; `prefetch()` warms the cache for every torch name
a document uses, right after its shapes arrive.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import pickle
import queue
import re
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass

from torch_lsp.own_python import module_command

log = logging.getLogger(__name__)

_TORCH_PREFIXES = ("torch", "torchvision")
_DOTTED_CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+)[ \t]*\(")
_IMPORT_LINE = re.compile(r"^[ \t]*(?:import|from)[ \t].*$", re.MULTILINE)


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
        self._requests: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._helper: subprocess.Popen | None = None

    def lookup(self, source: str, path: str | None, line: int, col: int, word: str) -> ApiDoc | None:
        """Cached doc for `word` (a dotted name) at (line, col); None now, maybe later."""
        key = (_imports_key(source), word)
        with self._lock:
            if key in self._cache:
                return self._cache[key]
            if key in self._queued:
                return None
            self._queued.add(key)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="torch-lsp-api-docs", daemon=True)
                self._thread.start()
        self._requests.put((key, {"source": source, "path": path, "line": line, "col": col}))
        return None

    def prefetch(self, source: str, path: str | None) -> None:
        """After every shape report, in a thread: one regex pass over the whole source (not one
        per line), each name looked up once (not once per call)."""
        seen = set()
        for match in _DOTTED_CALL.finditer(source):
            name = match.group(1)
            if name not in seen and not name.startswith("self."):
                seen.add(name)
                end = match.end(1)
                line_start = source.rfind("\n", 0, end) + 1
                self.lookup(source, path, source.count("\n", 0, end), end - 1 - line_start, name)

    def shutdown(self) -> None:
        self._requests.put(None)
        helper = self._helper
        if helper is not None and helper.poll() is None:
            helper.kill()

    def _serve(self) -> None:
        while (item := self._requests.get()) is not None:
            key, request = item
            doc = self._ask(request)
            with self._lock:
                self._cache[key] = doc
                self._queued.discard(key)

    def _ask(self, request: dict) -> ApiDoc | None:
        try:
            if self._helper is None or self._helper.poll() is not None:
                self._helper = subprocess.Popen(
                    module_command("torch_lsp.server.api_docs"), stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._helper.stdin.write(json.dumps(request) + "\n")
            self._helper.stdin.flush()
            reply = json.loads(self._helper.stdout.readline() or "null")
        except (OSError, ValueError):  # the helper died: no doc this time, a new helper next time
            log.debug("api docs helper failed", exc_info=True)
            return None
        return ApiDoc(**reply) if reply else None


@functools.lru_cache(maxsize=8)
def _imports_key(source: str) -> str:
    """What a dotted name resolves to depends only on the file's imports."""
    imports = [line.strip() for line in _IMPORT_LINE.findall(source)]
    return hashlib.sha1("\n".join(imports).encode()).hexdigest()


def _infer(source: str, path: str | None, line: int, col: int) -> ApiDoc | None:
    import jedi

    try:
        return _infer_once(source, path, line, col)
    except (EOFError, pickle.UnpicklingError):
        # A truncated entry in jedi's shared parse cache (a process killed while writing it)
        # fails every lookup that reaches that module: parse afresh, in a cache of our own.
        jedi.settings.cache_directory = tempfile.mkdtemp(prefix="torch-lsp-jedi-")
        return _infer_once(source, path, line, col)


def _infer_once(source: str, path: str | None, line: int, col: int) -> ApiDoc | None:
    import jedi

    for name in jedi.Script(code=source, path=path).infer(line + 1, col):
        full_name = name.full_name or ""
        if not full_name.startswith(_TORCH_PREFIXES):
            continue
        signatures = name.get_signatures()
        signature = signatures[0].to_string() if signatures else full_name
        return ApiDoc(full_name, signature, first_paragraph(name.docstring(raw=True) or name.docstring()))
    return None


def serve_lookups() -> None:
    """The helper process: one JSON request per stdin line, one JSON reply per stdout line."""
    for line in sys.stdin:
        try:
            request = json.loads(line)
            doc = _infer(request["source"], request["path"], request["line"], request["col"])
        except Exception:  # noqa: BLE001 - jedi failing on odd code only means no doc
            doc = None
        sys.stdout.write(json.dumps(asdict(doc) if doc else None) + "\n")
        sys.stdout.flush()


def first_paragraph(docstring: str) -> str:
    """The first paragraph that is prose, not a repeated signature line like `relu(input) -> Tensor`."""
    for paragraph in re.split(r"\n\s*\n", docstring.strip()):
        text = " ".join(line.strip() for line in paragraph.splitlines())
        if text and not re.match(r"^[\w.]+\(.*\)( -> .*)?$", text):
            return text
    return ""


if __name__ == "__main__":
    serve_lookups()
