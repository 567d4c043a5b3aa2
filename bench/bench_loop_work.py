"""What the server's event loop does per shape job and per shape report, in isolation.

Usage: PYTHONPATH=. python bench/bench_loop_work.py [--documents 30] [--repeat 300]

- per job: the engine's cache key and the frames written to the worker (engine.run/_write), for
  the seed with no other open document (the same-run baseline) and with N-1 others open, whose
  texts each job carries (shapes/texts.py sends each once, then names them by digest);
- per message: telling a keystroke's didChange notification from a request and handing it to its
  handler (stubbed), pygls' own dispatch (the same-run baseline) and the server's
  (server/protocol.py);
- per report: the API docs prefetch (server/api_docs.py, now in a thread) on the seed and on a
  5,000-line file made of copies of it.

Medians of --repeat calls, in milliseconds; for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from torch_lsp.analysis.plan import build_plan  # noqa: E402
from torch_lsp.server.api_docs import ApiDocs  # noqa: E402
from torch_lsp.shapes.protocol import encode_frame  # noqa: E402
from torch_lsp.shapes.spec import JobSpec  # noqa: E402
try:
    from torch_lsp.shapes.texts import SentTexts  # noqa: E402
except ImportError:  # before 2026-12-01 (main at 323c2a8 and earlier): every job carried the texts
    SentTexts = None

SEED = ROOT / "fixtures" / "cifar10_seed.py"


def median_ms(call, repeat: int) -> float:
    call()  # the first call of a kind (texts sent, digests remembered) is not the steady state
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def job_on_the_loop(documents: int, repeat: int) -> float:
    text = SEED.read_text()
    overlay = {f"/w/model_{i}.py": text + f"edit_marker = {i}\n" for i in range(1, documents)}
    spec = JobSpec(key="/w/model_0.py", main=build_plan(text, "/w/model_0.py"), record=["/w/model_0.py"],
                   overlay=overlay)
    sent = SentTexts() if SentTexts is not None else None

    def one_job() -> None:
        spec.cache_key()
        message = {"type": "job", "id": 1, "key": spec.key, "spec": spec.to_dict()}
        b"".join(encode_frame(each) for each in (sent.messages_for(message) if sent else [message]))

    return median_ms(one_job, repeat)


def prefetch(text: str, repeat: int) -> float:
    docs = ApiDocs()
    docs.lookup = lambda *args: None  # the lookups themselves go to jedi's helper process
    return median_ms(lambda: docs.prefetch(text, "/w/model.py"), repeat)


def dispatch(own: bool, repeat: int) -> float:
    from lsprotocol import types
    from pygls.protocol import json_rpc

    from torch_lsp.server.app import create_server

    protocol = create_server().protocol
    protocol.initialize_received = True
    protocol._handle_notification = lambda *args: None
    protocol._handle_request = lambda *args: None
    change = types.DidChangeTextDocumentNotification(params=types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri="file:///w/model.py", version=2),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text="x = 1\n")]))
    handle = protocol.handle_message if own else lambda message: json_rpc.JsonRPCProtocol.handle_message(protocol, message)
    return median_ms(lambda: handle(change), repeat)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--documents", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    alone = job_on_the_loop(1, args.repeat)
    many = job_on_the_loop(args.documents, args.repeat)
    seed = SEED.read_text()
    big = seed * (5000 // seed.count("\n") + 1)
    print("| what | median | ratio to the baseline |")
    print("|---|---:|---:|")
    print(f"| per job: cache key + frames, the seed alone (baseline) | {alone:.3f} ms | 1.00 |")
    print(f"| per job: the same with {args.documents - 1} other documents open | {many:.3f} ms | {many / alone:.2f} |")
    pygls_dispatch, own_dispatch = dispatch(False, args.repeat * 10), dispatch(True, args.repeat * 10)
    print(f"| per message: a didChange notification dispatched by pygls (baseline) | {pygls_dispatch:.4f} ms | 1.00 |")
    print(f"| per message: the same by the server's protocol | {own_dispatch:.4f} ms | {own_dispatch / pygls_dispatch:.2f} |")
    print(f"| per report: API docs prefetch, the seed ({seed.count(chr(10))} lines) | {prefetch(seed, args.repeat):.3f} ms | |")
    print(f"| per report: API docs prefetch, {big.count(chr(10))} lines | {prefetch(big, max(args.repeat // 30, 5)):.3f} ms | |")


if __name__ == "__main__":
    main()
