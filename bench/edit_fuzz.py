"""Random incremental edits and requests through the protocol (hypothesis), shared by the test
suite (tests/lsp/test_edit_fuzz_lsp.py, a few examples) and the long run here (>= 10,000 edits):

    python bench/edit_fuzz.py --edits 10000

Edits are valid LSP edits (UTF-16 positions, never inside a CRLF pair) of text made of what
breaks parsers: unbalanced brackets, quotes, unicode (astral characters included), CRLF, long
lines, deletions of everything. Requests (hover, inlay hints, code actions, code lenses) go to
random positions, also out of range. Checked: every request is answered without an internal
error, the server survives, and the final diagnostics equal those a fresh server gives for the
final text (when it parses; a text that does not parse keeps the last good diagnostics).
"""

from __future__ import annotations

import argparse
import ast
import queue
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.lsp_client import StdioClient  # noqa: E402

SERVER = [sys.executable, "-m", "torch_lsp", "serve"]
OPTIONS = {"debounceMs": 0, "execution": {"enabled": False}}
_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # the only line breaks LSP knows
MAX_CHARACTER = 2**31 - 1

SNIPPETS = ["(", ")", "[", "]", "{", "}", ":", ",", "'", '"', '"""', "#", "\\", "\t", " ", "\n", "\r\n", "\r",
            "é", "😀", "𝔵", "中", "import torch\n", "import torch.nn as nn\n", "x = torch.zeros(2, 3)\n",
            "def f(x):\n", "    return x\n", "class Net(nn.Module):\n", "optimizer.step()\n",
            "for batch in loader:\n", "lambda: (", "x" * 300, "# torch-lsp: ignore[TL101]\n"]
text_pieces = st.lists(st.sampled_from(SNIPPETS) | st.text(alphabet="abc_ (){}[]:=.\n\r😀é", max_size=8),
                       max_size=6).map("".join)


def lines_of(text: str) -> list[str]:
    """LSP lines, each with its line break."""
    lines, start = [], 0
    for match in _LINE_BREAK.finditer(text):
        lines.append(text[start:match.end()])
        start = match.end()
    lines.append(text[start:])
    return lines


def _utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def position(text: str, offset: int) -> dict:
    """LSP position (UTF-16) of a code-point offset."""
    before = text[:offset]
    line = len(_LINE_BREAK.findall(before))
    last = before.rsplit("\n", 1)[-1].rsplit("\r", 1)[-1]
    return {"line": line, "character": _utf16(last)}


def boundaries(text: str) -> list[int]:
    """Offsets an edit may start or end at: not between the \\r and \\n of a CRLF."""
    return [i for i in range(len(text) + 1) if not (0 < i < len(text) and text[i - 1] == "\r" and text[i] == "\n")]


@st.composite
def edits(draw, text: str) -> tuple[int, int, str]:
    """(start, end, new text) in code points: a random change, or everything deleted."""
    if draw(st.integers(0, 19)) == 0:
        return 0, len(text), ""
    points = boundaries(text)
    start = draw(st.sampled_from(points))
    end = draw(st.sampled_from([p for p in points if p >= start][:200]))
    return start, end, draw(text_pieces)


positions = st.builds(lambda line, character: {"line": line, "character": character},
                      st.one_of(st.integers(0, 40), st.just(MAX_CHARACTER)),
                      st.one_of(st.integers(0, 400), st.just(MAX_CHARACTER)))
requests = st.sampled_from(["textDocument/hover", "textDocument/inlayHint", "textDocument/codeAction",
                            "textDocument/codeLens"])


def request_params(method: str, uri: str, at: dict, to: dict) -> dict:
    document = {"textDocument": {"uri": uri}}
    if method == "textDocument/hover":
        return {**document, "position": at}
    if method == "textDocument/codeLens":
        return document
    start, end = sorted((at, to), key=lambda p: (p["line"], p["character"]))
    params = {**document, "range": {"start": start, "end": end}}
    if method == "textDocument/codeAction":
        params["context"] = {"diagnostics": []}
    return params


@dataclass
class Session:
    """One server under test and one reference server for fresh-eyes diagnostics."""

    client: StdioClient
    reference: StdioClient
    root: Path
    documents: int = 0
    edits: int = 0
    requests: int = 0
    compared: int = 0
    published: dict = field(default_factory=dict)  # (client id, uri) -> {version: diagnostics}

    @classmethod
    def start(cls, root: Path) -> "Session":
        client, reference = StdioClient(SERVER), StdioClient(SERVER)
        client.initialize(root, OPTIONS)
        reference.initialize(root, OPTIONS)
        return cls(client, reference, root)

    def close(self) -> None:
        for client in (self.client, self.reference):
            client.close()

    def ask(self, method: str, params: dict) -> None:
        answer, _ = self.client.request(method, params, timeout=120)
        error = answer.get("error")
        assert error is None, f"{method} {params} -> {error}"
        self.requests += 1

    def diagnostics(self, client: StdioClient, uri: str, version: int, timeout: float = 120) -> list:
        key = (id(client), uri)
        deadline = time.monotonic() + timeout
        while version not in self.published.get(key, {}):
            try:
                _, message = client.notifications.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no diagnostics for {uri} version {version} within {timeout} s") from None
            if message.get("method") == "textDocument/publishDiagnostics":
                params = message["params"]
                self.published.setdefault((id(client), params["uri"]), {})[params.get("version")] = params["diagnostics"]
        return self.published[key][version]

    def replay(self, text: str, steps: list) -> str:
        """Open a document, apply the steps (("edit", start, end, new) | ("ask", method, at, to)),
        check the answers; return the final text."""
        self.documents += 1
        uri = (self.root / f"fuzz_{self.documents}.py").as_uri()  # never written: an editor buffer
        self.client.notify("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python",
                                                                      "version": 1, "text": text}})
        version = 1
        for step in steps:
            if step[0] == "edit":
                _, start, end, new = step
                change = {"range": {"start": position(text, start), "end": position(text, end)}, "text": new}
                text = text[:start] + new + text[end:]
                version += 1
                self.client.notify("textDocument/didChange", {"textDocument": {"uri": uri, "version": version},
                                                              "contentChanges": [change]})
                self.edits += 1
            else:
                _, method, at, to = step
                self.ask(method, request_params(method, uri, at, to))
        self.ask("workspace/executeCommand", {"command": "torch-lsp.serverInfo", "arguments": []})
        assert self.client.process.poll() is None, "the server died"
        if _parses(text):
            final = self.diagnostics(self.client, uri, version)
            fresh_uri = (self.root / f"fresh_{self.documents}.py").as_uri()
            self.reference.notify("textDocument/didOpen", {"textDocument": {
                "uri": fresh_uri, "languageId": "python", "version": 1, "text": text}})
            fresh = self.diagnostics(self.reference, fresh_uri, 1)
            assert _comparable(final) == _comparable(fresh), (text, final, fresh)
            self.reference.notify("textDocument/didClose", {"textDocument": {"uri": fresh_uri}})
            self.compared += 1
        self.client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
        return text


def _parses(text: str) -> bool:
    try:
        ast.parse(text)
        return "\0" not in text
    except (SyntaxError, ValueError):
        return False


def _comparable(diagnostics: list) -> list:
    return sorted((d["range"]["start"]["line"], d["range"]["start"]["character"], d["range"]["end"]["line"],
                   d["range"]["end"]["character"], str(d.get("code")), d["message"]) for d in diagnostics)


@st.composite
def scenario(draw, max_steps: int = 25) -> tuple[str, list]:
    """An initial text and steps; each edit is drawn against the text as it is by then."""
    initial = draw(text_pieces)
    text, steps = initial, []
    for _ in range(draw(st.integers(1, max_steps))):
        if draw(st.booleans()):
            start, end, new = draw(edits(text))
            text = text[:start] + new + text[end:]
            steps.append(("edit", start, end, new))
        else:
            steps.append(("ask", draw(requests), draw(positions), draw(positions)))
    return initial, steps


def main() -> None:
    from hypothesis import HealthCheck, given, settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=10_000)
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    session = Session.start(root)
    started = time.perf_counter()
    rss_before = _rss(session)

    @settings(max_examples=20, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(scenario(max_steps=60))
    def run(case):  # each call: 20 new random documents (no derandomize, no database)
        session.replay(*case)

    try:
        while session.edits < args.edits:
            run()
        seconds = time.perf_counter() - started
        print(f"{session.edits} edits and {session.requests} requests in {session.documents} documents, "
              f"{seconds:.0f} s: every request answered, server alive; final diagnostics compared with a "
              f"fresh server in {session.compared} documents (the others ended unparseable); "
              f"server RSS {rss_before:.0f} -> {_rss(session):.0f} MiB")
    finally:
        session.close()


def _rss(session: Session) -> float:
    answer, _ = session.client.request("workspace/executeCommand", {"command": "torch-lsp.serverInfo", "arguments": []})
    return answer["result"]["rssMb"]


if __name__ == "__main__":
    main()
