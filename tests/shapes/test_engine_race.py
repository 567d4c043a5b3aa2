"""One engine, one worker: concurrent starts (documents opened at once) share one process."""

import asyncio

import pytest

from torch_lsp.shapes.engine import ShapeEngine

pytestmark = pytest.mark.slow  # a real worker process


async def test_concurrent_starts_spawn_one_worker(monkeypatch):
    spawned = []
    real = asyncio.create_subprocess_exec

    async def counting(*args, **kwargs):
        process = await real(*args, **kwargs)
        spawned.append(process.pid)
        return process

    monkeypatch.setattr(asyncio, "create_subprocess_exec", counting)
    engine = ShapeEngine()
    try:
        await asyncio.gather(*(engine.start() for _ in range(8)))
        assert len(spawned) == 1 and engine.pid == spawned[0]
    finally:
        await engine.close()
