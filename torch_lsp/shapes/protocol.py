"""Framing between the engine and the worker: 4-byte big-endian length, then UTF-8 JSON.

No torch here: both sides import it.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct

_HEADER = struct.Struct(">I")


def encode_frame(message: dict) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return _HEADER.pack(len(body)) + body


def write_frame(fd: int, message: dict) -> None:
    data = encode_frame(message)
    while data:
        data = data[os.write(fd, data):]


class FrameReader:
    """Non-blocking-friendly reader over a file descriptor that select() said is readable."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()

    def read(self) -> list[dict] | None:
        """Messages completed by one read; None at end of file."""
        chunk = os.read(self.fd, 1 << 20)
        if not chunk:
            return None
        self.buffer += chunk
        messages = []
        while len(self.buffer) >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self.buffer)
            if len(self.buffer) < _HEADER.size + length:
                break
            body = bytes(self.buffer[_HEADER.size:_HEADER.size + length])
            del self.buffer[:_HEADER.size + length]
            messages.append(json.loads(body))
        return messages


async def read_frame(stream: asyncio.StreamReader) -> dict | None:
    try:
        header = await stream.readexactly(_HEADER.size)
        (length,) = _HEADER.unpack(header)
        return json.loads(await stream.readexactly(length))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
