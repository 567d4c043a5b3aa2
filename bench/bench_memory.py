"""The server's memory under edits and huge messages (RSS through `torch-lsp.serverInfo`).

    python bench/bench_memory.py [--checkout PATH]

- 20,000 incremental `didChange` notifications after 1,000 of warm-up: RSS growth;
- documents of ~10-50 MB opened and closed: RSS after each close.

`--checkout` runs the same against another checkout of torch-lsp (e.g. one without the fixes of
server/protocol.py and app.py) with its own code, for a baseline measured the same way.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.lsp_client import StdioClient  # noqa: E402

TRIM_DELAY_S = 1.5


def rss(client: StdioClient) -> float:
    answer, _ = client.request("workspace/executeCommand", {"command": "torch-lsp.serverInfo", "arguments": []})
    return answer["result"]["rssMb"]


def measure(checkout: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    client = StdioClient([sys.executable, "-m", "torch_lsp", "serve"], cwd=checkout, env=env)
    client.initialize(checkout, {"execution": {"enabled": False}})
    uri = (checkout / "bench_memory_doc.py").as_uri()
    client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1,
                                                            "text": "x = 1\n"}})

    def edits(first: int, count: int) -> None:
        for version in range(first, first + count):
            client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version}, "contentChanges": [
                {"range": {"start": {"line": 0, "character": 4}, "end": {"line": 0, "character": 5}},
                 "text": str(version % 10)}]})

    edits(2, 1000)
    before = rss(client)
    edits(1002, 20_000)
    after = rss(client)
    print(f"{checkout}: 20,000 didChange: server RSS {before:.1f} -> {after:.1f} MiB "
          f"({(after - before) * 1024 * 1024 / 20_000:.0f} bytes per edit)")
    start = rss(client)
    closed = []
    for n, lines in enumerate((800_000, 800_000, 300_000, 1_200_000, 2_000_000)):
        big = (checkout / f"bench_memory_big_{n}.py").as_uri()
        text = "".join(f"x{i} = [{i}, 'é']\n" for i in range(lines))
        client.notify("textDocument/didOpen", {"textDocument": {"uri": big, "languageId": "python", "version": 1,
                                                                "text": text}})
        opened = rss(client)
        client.notify("textDocument/didClose", {"textDocument": {"uri": big}})
        time.sleep(TRIM_DELAY_S)  # the server trims its heap a second after a close
        closed.append((len(text) / 1e6, opened, rss(client)))
    print(f"{checkout}: documents opened and closed, from {start:.1f} MiB: " + ", ".join(
        f"{chars:.0f} M chars open {opened:.0f} / closed {after:.0f} MiB" for chars, opened, after in closed))
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=ROOT)
    measure(parser.parse_args().checkout.resolve())


if __name__ == "__main__":
    main()
