"""The cached `initialize` reply (server/fast_start.py) is exactly what pygls computes, and a
session that started from the cache works like any other."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import FIXTURES, ROOT
from tests.lsp.conftest import SERVER


def frame(payload: dict) -> bytes:
    body = json.dumps(payload).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def read_messages(data: bytes) -> list[dict]:
    messages = []
    while data:
        header, _, rest = data.partition(b"\r\n\r\n")
        length = int(next(l for l in header.split(b"\r\n") if l.lower().startswith(b"content-length")).split(b":")[1])
        messages.append(json.loads(rest[:length]))
        data = rest[length:]
    return messages


def session(cache: str) -> list[dict]:
    uri = (FIXTURES / "missing_zero_grad.py").as_uri()
    stream = b"".join(frame(m) for m in [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"processId": None, "rootUri": ROOT.as_uri(), "capabilities": {"workspace": {"configuration": False}},
                    "initializationOptions": {"execution": {"enabled": False}}}},  # no shape worker needed
        {"jsonrpc": "2.0", "method": "initialized", "params": {}},
        {"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": uri, "languageId": "python", "version": 1, "text": (FIXTURES / "missing_zero_grad.py").read_text()}}},
    ])
    process = subprocess.Popen(SERVER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               env={**os.environ, "XDG_CACHE_HOME": cache}, cwd=ROOT)
    process.stdin.write(stream)
    process.stdin.flush()
    # Wait for the diagnostics, then shut down cleanly.
    out = b""
    while b"publishDiagnostics" not in out:
        chunk = process.stdout.read1(65536)
        assert chunk, "server closed the stream"
        out += chunk
    process.stdin.write(frame({"jsonrpc": "2.0", "id": 2, "method": "shutdown"}) + frame({"jsonrpc": "2.0", "method": "exit"}))
    process.stdin.flush()
    rest, _ = process.communicate(timeout=60)  # a ceiling: `exit` ends the process at once
    assert process.returncode == 0
    return read_messages(out + rest)


def test_cached_initialize_reply_equals_pygls_reply_and_session_works(tmp_path):
    first = session(str(tmp_path))
    assert list((tmp_path / "torch-lsp").glob("initialize-*.json")), "first start caches pygls' reply"
    second = session(str(tmp_path))
    for messages in (first, second):
        replies = [m for m in messages if m.get("id") == 1]
        assert len(replies) == 1, "exactly one reply to initialize"
        diagnostics = next(m for m in messages if m.get("method") == "textDocument/publishDiagnostics")
        assert [d["code"] for d in diagnostics["params"]["diagnostics"]] == ["TL101"]
    reply = lambda messages: next(m for m in messages if m.get("id") == 1)["result"]  # noqa: E731
    assert reply(first) == reply(second)


def test_garbage_before_initialize_does_not_crash(tmp_path):
    process = subprocess.run(SERVER, input=b"this is not LSP\r\n\r\n" + frame({"jsonrpc": "2.0", "method": "exit"}),
                             capture_output=True, env={**os.environ, "XDG_CACHE_HOME": str(tmp_path)},
                             cwd=ROOT, timeout=60)
    assert b"Traceback" not in process.stderr
