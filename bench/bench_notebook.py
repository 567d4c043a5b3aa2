"""What a notebook costs over the same code as one `.py` file: after an edit in one cell, the
static analysis of the whole notebook (program built, analysed, findings mapped to cells)
against `analyze_source` of the same code as a file, in the same run.

Usage: PYTHONPATH=. python bench/bench_notebook.py [--cells 60] [--runs 7] [--lsp]
Prints markdown tables for docs/benchmarks.md (## Notebooks).

The notebook is bench_rules.py's generated training module cut into cells (imports, then one
cell per model / training block, a markdown cell between them, a magic or a shell escape in
some cells). Each run edits one cell in the middle, so the texts are unseen (the parse cache
misses) and the other cells' neutralised texts are cached, as after a keystroke. `--lsp` also
measures, through a real server, the time from the change notification to the last
diagnostics of the notebook's cells against the same for the `.py` file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_rules import API_BLOCK, HEADER, LOOP_BLOCK  # noqa: E402

from torch_lsp.analysis.check import analyze_source  # noqa: E402
from torch_lsp.analysis.notebook import NotebookProgram  # noqa: E402


def notebook_cells(count: int) -> list[tuple[str, str]]:
    cells = [("code", "%load_ext autoreload\n" + HEADER.strip())]
    for i in range(count - 1):
        block = (API_BLOCK, LOOP_BLOCK)[i % 2].format(i=i).strip("\n")
        if i % 5 == 0:
            block = '!echo "block %d"\n' % i + block
        cells += [("markdown", f"## Block {i}"), ("code", block)]
    return cells


def as_file(code: list[str]) -> str:
    """The code cells as one file, magics written as the comments a .py would have."""
    lines = []
    for cell in code:
        lines += ["#" + line[1:] if line[:1] in "%!" else line for line in cell.split("\n")]
        lines.append("")
    return "\n".join(lines) + "\n"


def analyse_notebook(code: list[str]) -> int:
    program = NotebookProgram(code)
    findings = analyze_source(program.source, "bench.ipynb").findings
    return sum(1 for finding in findings if program.locate_span(finding.span) is not None)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def in_process(cells: list[tuple[str, str]], runs: int) -> None:
    code = [source for kind, source in cells if kind == "code"]
    middle = len(code) // 2
    samples: dict[str, list[float]] = {}

    def measure(label: str, work) -> int:
        wall, cpu = time.perf_counter(), time.process_time()
        result = work()
        samples.setdefault(f"{label} wall", []).append(time.perf_counter() - wall)
        samples.setdefault(f"{label} cpu", []).append(time.process_time() - cpu)
        return result

    analyse_notebook(code)  # neutralised cells cached, as in an editor session
    for run in range(runs):
        edited = list(code)
        edited[middle] += f"\nedited_{run} = {run}"  # an edit in one cell: unseen texts
        found_notebook = measure("notebook", lambda: analyse_notebook(edited))
        text = as_file(edited)
        found_file = measure("file", lambda: len(analyze_source(text, "bench.py").findings))
        assert found_notebook == found_file, (found_notebook, found_file)
    lines = as_file(code).count("\n")
    print(f"{len(cells)} cells ({len(code)} code cells, {lines:,} lines); Python {sys.version.split()[0]}; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}; medians of {runs} runs; "
          f"{found_file} findings, the same in both.\n")
    print("| after an edit in one cell | wall ms | CPU ms |")
    print("|---|---:|---:|")
    for label, what in (("file", "the same code as one `.py` file: `analyze_source`"),
                        ("notebook", "the notebook: program built, analysed, findings mapped to cells")):
        print(f"| {what} | {median_ms(samples[label + ' wall']):.1f} | {median_ms(samples[label + ' cpu']):.1f} |")
    ratio = median_ms(samples["notebook cpu"]) / median_ms(samples["file cpu"])
    print(f"\nNotebook / file (CPU): {ratio:.2f}\n")


def through_the_server(cells: list[tuple[str, str]], runs: int) -> None:
    from lsp_client import StdioClient

    root = Path(__file__).resolve().parent.parent
    folder = Path("/tmp/torch-lsp-bench-notebook")
    folder.mkdir(exist_ok=True)
    client = StdioClient([sys.executable, "-m", "torch_lsp", "serve"], cwd=root,
                         env={**os.environ, "PYTHONPATH": str(root)})
    client.request("initialize", {"processId": None, "rootUri": folder.as_uri(), "capabilities": {
        "notebookDocument": {"synchronization": {}},
        "textDocument": {"publishDiagnostics": {"versionSupport": True}}},
        "initializationOptions": {"execution": {"enabled": False}, "debounceMs": 0}})
    client.notify("initialized", {})
    code = [source for kind, source in cells if kind == "code"]
    notebook_uri = (folder / "bench.ipynb").as_uri()
    cell_uris = [f"vscode-notebook-cell:{folder}/bench.ipynb#cell{i}" for i in range(len(cells))]
    code_uris = [uri for uri, (kind, _) in zip(cell_uris, cells) if kind == "code"]
    file_uri = (folder / "bench.py").as_uri()

    def wait(uris: dict[str, int]) -> float:
        """Seconds until every URI has diagnostics for its version (from the notification)."""
        pending, last = dict(uris), 0.0
        while pending:
            at, message = client.notifications.get(timeout=120)
            params = message.get("params", {})
            if message.get("method") == "textDocument/publishDiagnostics" and pending.get(params["uri"]) == params["version"]:
                del pending[params["uri"]]
                last = at
        return last

    client.notify("notebookDocument/didOpen", {
        "notebookDocument": {"uri": notebook_uri, "notebookType": "jupyter-notebook", "version": 1,
                             "cells": [{"kind": 2 if kind == "code" else 1, "document": uri}
                                       for uri, (kind, _) in zip(cell_uris, cells)]},
        "cellTextDocuments": [{"uri": uri, "languageId": "python" if kind == "code" else "markdown", "version": 1,
                               "text": text} for uri, (kind, text) in zip(cell_uris, cells)]})
    wait({uri: 1 for uri in code_uris})
    client.notify("textDocument/didOpen", {"textDocument": {"uri": file_uri, "languageId": "python", "version": 1,
                                                            "text": as_file(code)}})
    wait({file_uri: 1})
    middle = code_uris[len(code_uris) // 2]
    notebook_ms, file_ms = [], []
    for run in range(runs):
        version = run + 2
        edited = list(code)
        edited[len(code) // 2] += f"\nedited_{run} = {run}"
        sent = time.perf_counter()
        client.notify("notebookDocument/didChange", {
            "notebookDocument": {"uri": notebook_uri, "version": version},
            "change": {"cells": {"textContent": [{"document": {"uri": middle, "version": version},
                                                  "changes": [{"text": edited[len(code) // 2]}]}]}}})
        versions = {uri: (version if uri == middle else 1) for uri in code_uris}
        notebook_ms.append(wait(versions) - sent)
        sent = time.perf_counter()
        client.notify("textDocument/didChange", {"textDocument": {"uri": file_uri, "version": version},
                                                 "contentChanges": [{"text": as_file(edited)}]})
        file_ms.append(wait({file_uri: version}) - sent)
    client.request("shutdown", None)
    client.notify("exit", None)
    print("| through the server (debounce 0), change sent -> last diagnostics | wall ms |")
    print("|---|---:|")
    print(f"| the `.py` file (one publish) | {median_ms(file_ms):.1f} |")
    print(f"| the notebook ({len(code_uris)} publishes, one per code cell) | {median_ms(notebook_ms):.1f} |")
    print(f"\nNotebook / file (wall): {median_ms(notebook_ms) / median_ms(file_ms):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=60, help="code cells")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--lsp", action="store_true", help="also measure through a real server")
    args = parser.parse_args()
    cells = notebook_cells(args.cells)
    in_process(cells, args.runs)
    if args.lsp:
        through_the_server(cells, args.runs)


if __name__ == "__main__":
    main()
