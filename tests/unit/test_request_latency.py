"""RequestLatency (server/latency.py): which messages are timed, percentiles, reset, bounds."""

from __future__ import annotations

import itertools
import json

from torch_lsp.server import latency
from torch_lsp.server.latency import RequestLatency


def request(msg_id, method="textDocument/hover") -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": {}}).encode()


def test_requests_are_timed_from_read_to_answer_and_notifications_are_not(monkeypatch):
    clock = itertools.chain([10.0, 10.004, 20.0, 20.010], itertools.repeat(99.0))
    monkeypatch.setattr(latency.time, "perf_counter", lambda: next(clock))
    record = RequestLatency()
    record.received(request(1))
    # A notification whose text contains "id" and "method" (escaped inside a string) is not a request.
    record.received(json.dumps({"jsonrpc": "2.0", "method": "textDocument/didChange",
                                "params": {"text": '{"id": 3, "method": "x"}'}}).encode())
    record.answered(1)
    record.received(request("two", "textDocument/inlayHint"))
    record.answered("two")
    record.answered(99)  # a reply to nothing timed (e.g. a request too large to parse): ignored
    summary = record.summary()
    assert summary.keys() == {"textDocument/hover", "textDocument/inlayHint"}
    assert summary["textDocument/hover"] == {"count": 1, "p50Ms": 4.0, "p95Ms": 4.0, "p99Ms": 4.0, "maxMs": 4.0}
    assert summary["textDocument/inlayHint"]["maxMs"] == 10.0


def test_percentiles_are_nearest_rank_and_reset_starts_again(monkeypatch):
    record = RequestLatency()
    for ms in range(1, 101):  # answers of 1..100 ms, out of order
        clock = iter([0.0, ((ms * 37) % 100 + 1) / 1000])
        monkeypatch.setattr(latency.time, "perf_counter", lambda: next(clock))
        record.received(request(ms))
        record.answered(ms)
    hover = record.summary(reset=True)["textDocument/hover"]
    assert (hover["count"], hover["p50Ms"], hover["p95Ms"], hover["p99Ms"], hover["maxMs"]) == (100, 50, 95, 99, 100)
    assert record.summary() == {}


def test_bad_and_unbounded_input_is_not_kept():
    record = RequestLatency()
    record.received(b"not json")
    record.received(json.dumps({"id": [1], "method": "x"}).encode())  # an id that cannot be a key
    record.received(b'{"id": 1, "method": "x", "params": "' + b"a" * (1 << 17) + b'"}')  # too large to parse
    for msg_id in range(latency._PENDING + 10):  # a client that never waits for its answers
        record.received(request(msg_id))
    assert len(record._started) == latency._PENDING
    record.answered([1])
    assert record.summary() == {}
