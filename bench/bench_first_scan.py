"""Opening a large workspace: does the rest of the server wait for its first scan?

    PYTHONPATH=. python bench/bench_first_scan.py [--copies 3] [--runs 3] [--documents 8]

The shape session indexes the workspace once at start (classes, constructions and calls across
files: analysis/workspace.py), off the event loop, for seconds on a large project. Shape jobs
need that index; everything else (static diagnostics, code actions, commands) does not. Here a
real `torch-lsp serve` starts on a workspace holding `--copies` copies of torchvision's Python
sources (a large project) and `--documents` copies of the seed fixture, which the client opens
at once, as an editor restoring its tabs does. Then, while the scan is still running:

- a code action on the first document, the `torch-lsp.runs` command, and one more document
  opened (time until its static diagnostics are published); then one document is closed and a
  hover asked at once;

each timed from this client; and the time from `initialize` until all the opened seed copies
show shapes (each runs its own model: its job need not wait for the scan, shapes/session.py),
and until a model file opened with them shows shapes (`fixtures/projects/model_train`'s
`model.py`, which only `train.py` runs: its driver is chosen from the files that may import
its classes, searched as text, and confirmed by the whole index when the scan ends). The same-run baseline: the same requests on a workspace of the seed copies and that
project alone (a scan of a few files). Medians of `--runs` fresh servers each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from lsp_client import StdioClient  # noqa: E402

SEED = ROOT / "fixtures" / "cifar10_seed.py"
MODEL_TRAIN = ROOT / "fixtures" / "projects" / "model_train"


def torchvision_sources() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("torchvision")  # located, not imported (no torch in this client)
    return Path(spec.origin).parent


def make_workspace(folder: Path, copies: int, documents: int) -> list[Path]:
    """The seed copies to open (the last one opened later) and, first, the model file."""
    folder.mkdir()
    shutil.copytree(MODEL_TRAIN, folder / "model_train")
    if copies:
        sources = torchvision_sources()
        for copy in range(copies):
            shutil.copytree(sources, folder / f"vision{copy}", ignore=shutil.ignore_patterns("*.so", "*.pyc",
                                                                                            "__pycache__", "*.pyd"))
    paths = [folder / "model_train" / "model.py"]
    for number in range(documents + 1):
        path = folder / f"seed{number}.py"
        path.write_text(SEED.read_text() + f"\n# copy {number}\n")  # texts differ: each is analysed
        paths.append(path)
    return paths


def published(client: StdioClient, uris: list[str], seen: dict[str, float], timeout: float = 300) -> None:
    """Wait until each of `uris` has had diagnostics published; `seen`: uri -> first time."""
    deadline = time.perf_counter() + timeout
    while not all(uri in seen for uri in uris):
        at, message = client.notifications.get(timeout=max(deadline - time.perf_counter(), 0.001))
        if message.get("method") == "textDocument/publishDiagnostics":
            seen.setdefault(message["params"]["uri"], at)


def shapes_shown(client: StdioClient, paths: list[Path], timeout: float = 300) -> float:
    """When every one of `paths` shows shapes of its opened text (`torch-lsp.shapesShown`)."""
    deadline = time.perf_counter() + timeout
    pending = list(paths)
    while pending and time.perf_counter() < deadline:
        pending = [path for path in pending if (client.request("workspace/executeCommand", {
            "command": "torch-lsp.shapesShown", "arguments": [path.as_uri()]})[0].get("result") or {}
        ).get("reportVersion") != 1]
        time.sleep(0.05)  # polling the server's state: a benchmark, not a test
    if pending:
        raise RuntimeError(f"{len(pending)} documents never showed shapes")
    return time.perf_counter()


def one_run(folder: Path, documents: list[Path]) -> dict[str, float]:
    env = {**os.environ, "XDG_CACHE_HOME": str(folder.parent / "cache")}
    client = StdioClient([sys.executable, "-m", "torch_lsp", "serve"], cwd=folder, env=env)
    try:
        client.initialize(folder)
        started = time.perf_counter()
        model, *opened, extra = documents
        opened.insert(0, model)
        for path in opened:  # the editor restores its tabs
            client.open(path)
        seen: dict[str, float] = {}
        published(client, [path.as_uri() for path in opened], seen)  # their diagnostics are shown
        # Then at once, as a user who starts working: a code action, a command, one more document.
        here = {"start": {"line": 10, "character": 0}, "end": {"line": 10, "character": 0}}
        answered: dict[str, float] = {}
        asked = [("code action (ms)", "textDocument/codeAction", {
                      "textDocument": {"uri": opened[0].as_uri()}, "range": here, "context": {"diagnostics": []}}),
                 ("torch-lsp.runs (ms)", "workspace/executeCommand", {"command": "torch-lsp.runs", "arguments": []})]
        sent = time.perf_counter()
        waiting = []
        for name, method, params in asked:  # sent from this thread, answers awaited in others
            box = client.ask(method, params)
            waiting.append(threading.Thread(target=lambda name=name, box=box: (
                box.get(timeout=300), answered.__setitem__(name, (time.perf_counter() - sent) * 1000))))
            waiting[-1].start()
        client.open(extra)
        published(client, [extra.as_uri()], seen)
        answered["one more document: static diagnostics (ms)"] = (seen[extra.as_uri()] - sent) * 1000
        for thread in waiting:
            thread.join(300)
        # Closing a tab while the scan runs: the disk's text counts again for the index.
        closed, kept = opened[-1], opened[1:-1]
        sent = time.perf_counter()
        client.notify("textDocument/didClose", {"textDocument": {"uri": closed.as_uri()}})
        client.request("textDocument/hover", {"textDocument": {"uri": opened[1].as_uri()},
                                              "position": {"line": 10, "character": 4}})
        answered["a hover right after a tab is closed (ms)"] = (time.perf_counter() - sent) * 1000
        # What the scan does delay: the shapes of a document whose driver may be another file.
        answered["shapes of the opened seed copies (ms)"] = (shapes_shown(client, kept) - started) * 1000
        answered["shapes of model.py, run by train.py (ms)"] = (shapes_shown(client, [model]) - started) * 1000
        return answered
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--documents", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="torch-lsp-first-scan-") as temporary:
        large = make_workspace(Path(temporary) / "large", args.copies, args.documents)
        small = make_workspace(Path(temporary) / "small", 0, args.documents)
        files = sum(1 for _ in (Path(temporary) / "large").rglob("*.py"))
        results: dict[str, list[dict[str, float]]] = {"large": [], "small": []}
        for _ in range(args.runs):  # interleaved: both see the same load
            results["small"].append(one_run(Path(temporary) / "small", small))
            results["large"].append(one_run(Path(temporary) / "large", large))
    print(f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; "
          f"{args.documents} seed copies and a model file opened at once; medians of {args.runs} runs.\n")
    print(f"| what | {args.documents + 1} seed copies and model_train (baseline) | with {args.copies} copies of torchvision "
          f"({files} Python files) | ratio |")
    print("|---|---:|---:|---:|")
    for name in results["small"][0]:
        small_ms = statistics.median(run[name] for run in results["small"])
        large_ms = statistics.median(run[name] for run in results["large"])
        print(f"| {name} | {small_ms:.0f} | {large_ms:.0f} | {large_ms / small_ms:.1f} x |")


if __name__ == "__main__":
    main()
