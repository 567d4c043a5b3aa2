"""The server's stdio loop: pygls' message loop, fed by a thread that reads ahead.

pygls reads the next message only when its loop asks for it, in the thread pool its threaded
handlers share. With a backlog (documents being analysed, requests queued) the end of the input,
or an `exit`, was seen only after everything before it had been handled: one server stayed up
20 minutes after its client closed stdin. Here a thread of its own reads every message as it
arrives and hands it to the loop, so the end of the input and `exit` are seen at once: the
process ends (server.finish) within a second, whatever the loop is busy with. At most
MAX_AHEAD messages wait for the loop (a burst of 20,000 edits is not all held in memory).
The messages handed and taken are counted for server/loop_first.py: analysis threads wait while
the loop has messages to handle.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import TYPE_CHECKING, BinaryIO

from pygls.io_ import StdoutWriter, run_async

from torch_lsp.server import loop_first

if TYPE_CHECKING:
    from torch_lsp.server.app import TorchLanguageServer

log = logging.getLogger(__name__)
MAX_AHEAD = 256
LARGE_MESSAGE = 1 << 20  # after one this big has been handled, the heap is trimmed


def serve(server: "TorchLanguageServer", stdin: BinaryIO, stdout: BinaryIO) -> None:
    server.protocol.set_writer(StdoutWriter(stdout))
    server._stop_event = threading.Event()

    async def loop() -> None:
        gate = loop_first.LoopFirst()
        loop_first.install(asyncio.get_running_loop(), gate)
        messages = _Messages(gate)
        threading.Thread(target=_read_ahead, args=(stdin, asyncio.get_running_loop(), messages, server),
                         name="lsp-stdin", daemon=True).start()
        await run_async(stop_event=server._stop_event, reader=messages, protocol=server.protocol,
                        logger=log, error_handler=server.report_server_error)
        server.finish()  # the input ended (or pygls stopped): never wait on asyncio's teardown

    try:
        asyncio.run(loop())
    except BrokenPipeError:
        log.error("connection to the client lost")
    server.finish()


class _Messages:
    """What pygls' loop reads from (`readline`, `readexactly`): whole messages handed over by
    the reading thread, each released as soon as the loop has taken its body."""

    def __init__(self, gate: "loop_first.LoopFirst | None" = None) -> None:
        self.gate = gate or loop_first.LoopFirst()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.slots = threading.Semaphore(MAX_AHEAD)  # the reading thread waits when all are used
        self._headers, self._body, self._ended = b"", b"", False

    def hand(self, loop: asyncio.AbstractEventLoop, item: tuple[bytes, bytes] | None) -> None:
        """From the reading thread: a message (None: the end of the input) for the loop."""
        if item is not None:
            self.gate.handed()
        loop.call_soon_threadsafe(self.queue.put_nowait, item)

    async def _next(self) -> None:
        self.gate.all_handled()  # every message taken before has been handled
        item = await self.queue.get()
        self.slots.release()
        if item is None:
            self._ended = True
        else:
            self.gate.taken()
            self._headers, self._body = item

    async def readline(self) -> bytes:
        while not self._headers:
            if self._ended:
                return b""
            await self._next()
        end = self._headers.find(b"\n") + 1 or len(self._headers)
        line, self._headers = self._headers[:end], self._headers[end:]
        return line

    async def readexactly(self, size: int) -> bytes:
        body, self._body = self._body, b""  # framing is the reading thread's: the body is whole
        return body[:size] if len(body) > size else body


def _read_ahead(stream: BinaryIO, loop: asyncio.AbstractEventLoop, messages: _Messages,
                server: "TorchLanguageServer") -> None:
    """Read whole messages as they come and hand them to the loop; on `exit` or at the end of
    the input, make sure the process ends soon even if the loop is busy."""
    shutdown_asked = False  # a `shutdown` came before `exit`: the exit status is 0 (the spec)
    while True:
        messages.slots.acquire()
        message = _read_message(stream)
        if message is None:
            break
        headers, body, method = message
        server.latency.received(body)  # from here on, the wait for the loop is the server's
        messages.hand(loop, (headers, body))
        if len(body) >= LARGE_MESSAGE:
            loop.call_soon_threadsafe(server.release_memory_soon)
        shutdown_asked = shutdown_asked or method == "shutdown"
        if method == "exit":
            _finish_soon(server, 0 if shutdown_asked else 1)
    messages.hand(loop, None)
    _finish_soon(server, 0 if shutdown_asked else None)


def _read_message(stream: BinaryIO) -> tuple[bytes, bytes, str | None] | None:
    """One framed message (headers as read, body) and its method if it is `exit` or
    `shutdown`; None at the end of the input."""
    headers, length = [], 0
    while True:
        line = stream.readline()
        if not line:
            return None
        headers.append(line)
        if not line.strip():
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = int(value)
    body = stream.read(length) if length else b""
    if len(body) < length:
        return None
    lifecycle = (b'"exit"' in body or b'"shutdown"' in body) and _method(body) in ("exit", "shutdown")
    return b"".join(headers), body, _method(body) if lifecycle else None


def _method(body: bytes):
    try:
        message = json.loads(body)
    except ValueError:
        return None
    return message.get("method") if isinstance(message, dict) else None


def _finish_soon(server: "TorchLanguageServer", status: int | None) -> None:
    """The loop normally finishes first; this is the fallback when it cannot."""
    from torch_lsp.server.app import FINISH_WITHIN_S

    timer = threading.Timer(FINISH_WITHIN_S / 2, server.finish, args=(status,))
    timer.daemon = True
    timer.start()
