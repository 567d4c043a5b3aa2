"""Every request answered as the LSP spec says, the process ends with its input, memory stays
bounded. A raw stdio client (bench/lsp_client.py) so that we can send what a correct client
never would: bad params, requests before `initialize` and after `shutdown`."""

from __future__ import annotations

import json
import sys
import time

import pytest

from bench.bench_lifecycle import load
from bench.lsp_client import StdioClient
from tests.conftest import ROOT

SERVER = [sys.executable, "-m", "torch_lsp", "serve"]
NO_EXECUTION = {"execution": {"enabled": False}}
URI = (ROOT / "scratch_protocol.py").as_uri()  # never written: documents live in the editor


@pytest.fixture
def server():
    client = StdioClient(SERVER)
    yield client
    if client.process.poll() is None:
        client.process.kill()
        client.process.wait()


def hover(client: StdioClient, params: dict) -> dict:
    return client.request("textDocument/hover", params, timeout=60)[0]


def server_info(client: StdioClient) -> dict:
    message, _ = client.request("workspace/executeCommand", {"command": "torch-lsp.serverInfo", "arguments": []})
    return message["result"]


def server_rss_mb(client: StdioClient) -> float:
    return server_info(client)["rssMb"]


def ended(client: StdioClient, timeout: float = 30) -> int | None:
    """The exit status once the process ended (generous ceiling: never a timing assertion)."""
    try:
        return client.process.wait(timeout=timeout)
    except Exception:  # noqa: BLE001
        return None


def test_requests_before_initialize_get_server_not_initialized(server):
    answer = hover(server, {"textDocument": {"uri": URI}, "position": {"line": 0, "character": 0}})
    assert answer["error"]["code"] == -32002
    server.initialize(ROOT, NO_EXECUTION)  # and the server still starts normally afterwards
    assert server_rss_mb(server) > 0


@pytest.mark.parametrize("params, complaint", [
    ({"textDocument": {"uri": URI}}, "required field missing @ $.params.position"),
    ({"textDocument": {"uri": URI}, "position": {"line": -1, "character": 0}}, "$.params.position"),
    ({"textDocument": {"uri": URI}, "position": {"line": "one", "character": 0}}, "$.params.position"),
    ({"position": {"line": 0, "character": 0}}, "$.params.textDocument"),
])
def test_invalid_params_get_invalid_params(server, params, complaint):
    server.initialize(ROOT, NO_EXECUTION)
    answer = hover(server, params)
    assert answer["error"]["code"] == -32602
    assert complaint in answer["error"]["message"]
    # The server carries on: a valid request right after is answered normally.
    server.open(ROOT / "scratch_protocol.py", "x = 1\n")
    assert "result" in hover(server, {"textDocument": {"uri": URI}, "position": {"line": 0, "character": 0}})


def send_raw(client: StdioClient, body: bytes) -> None:
    client.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    client.process.stdin.flush()


def test_messages_no_client_should_send_are_survived_and_requests_among_them_answered(server):
    server.initialize(ROOT, NO_EXECUTION)
    for body in (b"{not json", b"[1, 2, 3]", b'"a string"',
                 json.dumps({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {"x": 1}}).encode(),
                 json.dumps({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": None}).encode()):
        send_raw(server, body)  # nothing to answer: a notification, or no id to answer to
    answers = {}
    for method, params, code in ((5, {}, -32600), ("textDocument/hover", None, -32602), ("no/such", {}, -32601)):
        answer, _ = server.request(method, params)
        answers[repr(method)] = answer["error"]["code"], code
    assert all(got == expected for got, expected in answers.values()), answers
    server.open(ROOT / "scratch_protocol.py", "x = 1\n")  # and it carries on
    assert "result" in hover(server, {"textDocument": {"uri": URI}, "position": {"line": 0, "character": 0}})


def test_out_of_range_positions_get_an_empty_answer(server):
    server.initialize(ROOT, NO_EXECUTION)
    server.open(ROOT / "scratch_protocol.py", "x = 1\n")
    for line, character in ((0, 10_000), (10_000, 0), (2**31 - 1, 2**31 - 1)):
        answer = hover(server, {"textDocument": {"uri": URI}, "position": {"line": line, "character": character}})
        assert answer.get("result") is None and "error" not in answer, answer


def test_requests_after_shutdown_get_invalid_request_and_exit_is_0(server):
    server.initialize(ROOT, NO_EXECUTION)
    assert server.request("shutdown", None)[0]["result"] is None
    answer = hover(server, {"textDocument": {"uri": URI}, "position": {"line": 0, "character": 0}})
    assert answer["error"]["code"] == -32600
    server.notify("exit", None)
    assert ended(server) == 0


def test_exit_without_shutdown_is_status_1(server):
    server.initialize(ROOT, NO_EXECUTION)
    server.notify("exit", None)
    assert ended(server) == 1


def test_the_process_ends_when_its_input_closes_even_under_load(server):
    """Documents being analysed and requests in flight when the client goes away."""
    server.initialize(ROOT)
    load(server)
    server.process.stdin.close()
    assert ended(server) is not None  # bench/bench_lifecycle.py measures how soon: < 1 s


def test_twenty_thousand_edits_do_not_grow_the_server(server):
    """pygls 2.1 kept a Future for every didChange (~2 KB each); see server/protocol.py."""
    server.initialize(ROOT, NO_EXECUTION)
    server.open(ROOT / "scratch_protocol.py", "x = 1\n")

    def edit(version: int) -> None:
        server.notify("textDocument/didChange", {
            "textDocument": {"uri": URI, "version": version},
            "contentChanges": [{"range": {"start": {"line": 0, "character": 4}, "end": {"line": 0, "character": 5}},
                                "text": str(version % 10)}]})

    for version in range(2, 1002):  # warm up: first-use allocations are not growth
        edit(version)
    before = server_rss_mb(server)
    for version in range(1002, 21002):
        edit(version)
    info = server_info(server)  # answered after every edit before it has been handled
    assert info["rssMb"] - before < 10, (before, info["rssMb"])
    # The cause itself: pygls kept one future per notification (20,000 here); only requests in
    # flight remain (this serverInfo, at most).
    assert info["pendingFutures"] <= 1, info["pendingFutures"]


def test_huge_messages_do_not_stay_resident(server):
    """The server trims its heap a second after a huge message or a close (glibc keeps memory
    freed by other threads otherwise): RSS comes back, waited for with a generous ceiling."""
    server.initialize(ROOT, NO_EXECUTION)
    server.open(ROOT / "scratch_protocol.py", "x = 1\n")
    baseline = server_rss_mb(server)
    for round_ in range(3):
        uri = ROOT / f"scratch_huge_{round_}.py"
        text = "".join(f"x{i} = [{i}, 'é']\n" for i in range(800_000))  # ~14 M characters
        server.open(uri, text)
        assert server_rss_mb(server) > baseline + 15  # the open has been handled: it is resident
        server.notify("textDocument/didClose", {"textDocument": {"uri": uri.as_uri()}})
        rss = rss_below(server, baseline + 15)
        assert rss < baseline + 15, (round_, baseline, rss)


def rss_below(server: StdioClient, bound: float, timeout: float = 60) -> float:
    """The server's RSS as soon as it is below `bound`; the last value after `timeout`."""
    deadline = time.monotonic() + timeout
    rss = server_rss_mb(server)
    while rss >= bound and time.monotonic() < deadline:
        time.sleep(0.2)
        rss = server_rss_mb(server)
    return rss
