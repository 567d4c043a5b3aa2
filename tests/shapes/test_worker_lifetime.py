"""The worker never outlives the server that started it."""

import os


def test_the_worker_dies_with_the_server():
    import subprocess
    import sys
    import time

    server = subprocess.Popen([sys.executable, "-c", (
        "import asyncio\n"
        "from torch_lsp.shapes.engine import ShapeEngine\n"
        "async def main():\n"
        "    engine = ShapeEngine(); await engine.start(); print(engine.pid, flush=True); await asyncio.sleep(60)\n"
        "asyncio.run(main())\n")], stdout=subprocess.PIPE, text=True)
    worker = int(server.stdout.readline())
    server.kill()  # no shutdown, no chance to clean up
    server.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{worker}"):
        with open(f"/proc/{worker}/stat") as stat:
            if stat.read().split()[2] == "Z":
                break
        time.sleep(0.1)
    gone = not os.path.exists(f"/proc/{worker}") or open(f"/proc/{worker}/stat").read().split()[2] == "Z"
    assert gone
