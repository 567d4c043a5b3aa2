"""Answer `initialize` before the heavy imports, from capabilities cached by an earlier start.

Importing pygls and lsprotocol costs ~0.5 s of CPU here (lsprotocol builds thousands of attrs
classes), so a pygls server cannot answer `initialize` sooner than that. The capabilities we
answer with depend only on our code and on the client's capabilities, so we cache the exact
JSON pygls computed last time, keyed by both. On a cache hit this module replies at once, then
imports pygls and hands it the same `initialize` message (so its state is set up exactly as
usual) and drops pygls' own, identical reply. On a miss, pygls answers as usual and the reply
is cached for the next start. Nothing else changes: the rest of the stream goes to pygls.

The shape worker is started here too (shapes/early_start.py), right after the reply: its torch
import overlaps the server's own start-up instead of following it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from pathlib import Path
from typing import BinaryIO

import torch_lsp


def serve_stdio(stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
    stdin = stdin or sys.stdin.buffer
    stdout = stdout or sys.stdout.buffer
    raw, message = _read_message(stdin)
    key = _cache_key(message) if _is_initialize(message) else None
    cached = _load(key) if key else None
    answered = None
    if cached is not None:
        _write(stdout, {"jsonrpc": "2.0", "id": message["id"], "result": cached})
        answered = message["id"]
    if key is not None:  # torch imports in the shape worker while this server starts
        from torch_lsp.shapes import early_start

        early_start.start_for_initialize(message.get("params"))

    from torch_lsp.server.app import create_server  # the slow part, now off the critical path

    server = create_server()
    writer = _InitializeReplyFilter(stdout, message.get("id") if key else None, answered, key)
    server.start_io(_Replay(raw, stdin), writer)


def _is_initialize(message: dict | None) -> bool:
    return isinstance(message, dict) and message.get("method") == "initialize" and "id" in message


def _read_message(stream: BinaryIO) -> tuple[bytes, dict | None]:
    """Read one framed message; return its exact bytes (to replay) and its JSON, if valid."""
    raw, length = b"", None
    while True:
        line = stream.readline()
        raw += line
        if not line or not line.strip():
            break
        name, _, value = line.decode("ascii", "replace").partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value)
    if not raw or length is None:
        return raw, None
    body = stream.read(length)
    raw += body
    try:
        return raw, json.loads(body)
    except ValueError:
        return raw, None


def _write(stream: BinaryIO, payload: dict) -> None:
    body = json.dumps(payload).encode("utf-8")
    stream.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    stream.flush()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "torch-lsp"


def _cache_key(message: dict) -> str:
    """Our version and code (file names, sizes, mtimes) and the client's capabilities."""
    digest = hashlib.sha256(torch_lsp.__version__.encode())
    package = Path(torch_lsp.__file__).parent
    for folder, _, files in sorted(os.walk(package)):
        for name in sorted(files):
            if name.endswith(".py"):
                stat = os.stat(os.path.join(folder, name))
                digest.update(f"{folder}/{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    params = message.get("params") or {}
    digest.update(json.dumps(params.get("capabilities"), sort_keys=True).encode())
    return digest.hexdigest()[:32]


def _load(key: str) -> dict | None:
    try:
        return json.loads((_cache_dir() / f"initialize-{key}.json").read_text())
    except (OSError, ValueError):
        return None


def _store(key: str, result: dict) -> None:
    try:
        folder = _cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f".initialize-{key}.{os.getpid()}"
        temporary.write_text(json.dumps(result))
        temporary.replace(folder / f"initialize-{key}.json")
    except OSError:
        pass  # a read-only home only costs start-up time


class _Replay(io.RawIOBase):
    """stdin with the already-read first message put back in front of it."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self._head = io.BytesIO(head)
        self._rest = rest

    def readline(self, size: int = -1) -> bytes:
        line = self._head.readline(size)
        return line if line else self._rest.readline(size)

    def read(self, size: int = -1) -> bytes:
        data = self._head.read(size)
        if size is None or size < 0:
            return data + self._rest.read()
        if len(data) < size:
            data += self._rest.read(size - len(data))
        return data


class _InitializeReplyFilter:
    """stdout that caches pygls' reply to `initialize`, and drops it if we answered already."""

    def __init__(self, stdout: BinaryIO, initialize_id, answered_id, key: str | None):
        self._stdout = stdout
        self._initialize_id = initialize_id
        self._answered_id = answered_id
        self._key = key

    def write(self, data: bytes) -> None:
        if self._initialize_id is not None:
            _, _, body = data.partition(b"\r\n\r\n")
            try:
                reply = json.loads(body)
            except ValueError:
                reply = None
            if isinstance(reply, dict) and reply.get("id") == self._initialize_id and "method" not in reply:
                self._initialize_id = None
                if "result" in reply and self._key:
                    _store(self._key, reply["result"])
                if self._answered_id is not None:
                    return
        self._stdout.write(data)
        self._stdout.flush()

    def flush(self) -> None:
        self._stdout.flush()

    def close(self) -> None:
        self._stdout.close()
