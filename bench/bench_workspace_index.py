"""Cost of the workspace index (analysis/workspace.py) and the driver choice (analysis/drivers.py).

    PYTHONPATH=. python bench/bench_workspace_index.py [ROOT ...] [--runs 5]

For each workspace ROOT (default: each repository of ../shared/corpus, and torchvision's own
package folder as a large one; and a folder holding the generated 5,000-line module of
bench_rules.py, `--long-module`), medians of `--runs`:

- scan: index every file from disk (what the server does once, off the event loop);
- baseline: `ast.parse` of the same files read in the same run, each tree dropped before the next
  (the index's floor: one parse);
- drivers, cold: the driver of every file that defines a module class, right after the scan
  (every cross-file fact is resolved once here);
- keystroke: the first model file open as a buffer, a comment typed at the end of a line inside a
  body (the file's names stay) + the edited document's driver: what typing costs (one
  `ast.parse` of the edited file is shown next to it: the floor before the edited statements
  were parsed alone);
- new line: a statement typed on a new line in the same body (every line below moves) + the
  driver;
- new name: an edit of the open buffer that adds a class (every resolved fact is recomputed) + the
  document's driver.

Wall and CPU time of this process are both reported: on a shared machine wall time is inflated.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import os
import statistics
import tempfile
import time
from pathlib import Path

from torch_lsp.analysis.drivers import choose_driver
from torch_lsp.analysis.workspace import WorkspaceIndex

# ../shared/corpus next to the checkout (or next to the folder of worktrees).
CORPUS = next((p / "shared" / "corpus" for p in Path(__file__).resolve().parents[1:4]
               if (p / "shared" / "corpus").is_dir()), Path("../shared/corpus"))


def timed(function):
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000, result


def parse_each(files: list[str]) -> None:
    """The floor: each file read and parsed, its tree dropped before the next (as the scan
    does; a list of every tree would make the collector rescan them all, ~4x on 1,480 files)."""
    for path in files:
        ast.parse(Path(path).read_text(errors="replace"))


def open_buffer(index: WorkspaceIndex):
    """How the server indexes an open document's text (`update(..., buffer=True)`), or plain
    `update` for code from before buffers were told apart (to compare with it)."""
    if "buffer" in inspect.signature(index.update).parameters:
        return functools.partial(index.update, buffer=True)
    return index.update


def typed_in_a_body(text: str, run: int, new_line: bool = False) -> str:
    """`text` with a comment typed at the end of an indented line from the middle on (inside a
    function or class body): an edit that keeps the file's names, as most keystrokes do. With
    `new_line`, a statement on a new line above that line instead: every line below moves."""
    lines = text.splitlines(keepends=True)
    middle = len(lines) // 2
    for at in [*range(middle, len(lines)), *range(middle)]:
        line = lines[at]
        if line[:1] in (" ", "\t") and line.strip() and not line.rstrip().endswith(("\\", ",", "(", "[", "{")):
            if new_line:
                lines.insert(at, f"{line[:len(line) - len(line.lstrip())]}step_{run} = {run}\n")
            else:
                lines[at] = line.rstrip("\r\n") + f"  # edit {run}" + line[len(line.rstrip("\r\n")):]
            return "".join(lines)
    return text + f"\n# edit {run}\n"


def bench(root: Path, runs: int) -> dict:
    rows: dict[str, list] = {"scan": [], "parse": [], "cold": [], "keystroke": [], "new line": [], "new name": [],
                             "parse one": []}
    for run in range(runs):
        index = WorkspaceIndex(root)
        rows["scan"].append(timed(index.scan)[:2])
        files = list(index.files)
        rows["parse"].append(timed(lambda: parse_each(files))[:2])
        documents = [p for p in files if index.classes_in(p)]
        rows["cold"].append(timed(lambda: [choose_driver(index, d) for d in documents])[:2])
        edited = documents[0] if documents else files[0]
        text = Path(edited).read_text(errors="replace")
        buffer = open_buffer(index)
        buffer(edited, text)  # the document is open in the editor
        typed = typed_in_a_body(text, run)

        def keystroke():
            buffer(edited, typed)
            return choose_driver(index, edited)

        def new_line():
            buffer(edited, typed_in_a_body(text, run, new_line=True))
            return choose_driver(index, edited)

        def new_name():
            buffer(edited, text + f"\n\nclass _Bench{run}:\n    pass\n")
            return choose_driver(index, edited)

        rows["parse one"].append(timed(lambda: ast.parse(text))[:2])
        rows["keystroke"].append(timed(keystroke)[:2])
        buffer(edited, text)
        rows["new line"].append(timed(new_line)[:2])
        rows["new name"].append(timed(new_name)[:2])
    result = {key: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for key, v in rows.items()}
    result.update(root=root, files=len(index.files), classes=len(index.module_classes()), documents=len(documents))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("roots", nargs="*", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--long-module", type=int, default=5000, metavar="LINES",
                        help="also a workspace of one generated training module this long (0: none)")
    args = parser.parse_args()
    roots = list(args.roots)
    for root in roots:
        if not root.is_dir():
            parser.error(f"{root}: not a folder")
    if not roots:
        import torchvision

        roots = sorted(p for p in CORPUS.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            + [Path(torchvision.__file__).parent]
    if args.long_module:
        from bench_rules import generate  # bench/bench_rules.py: the static rules' 5,000-line module

        folder = Path(tempfile.mkdtemp(prefix="torch-lsp-long-module-")) / f"long_module_{args.long_module}_lines"
        folder.mkdir()
        (folder / "train.py").write_text(generate(args.long_module))
        roots.append(folder)
    print(f"load average {os.getloadavg()[0]:.1f}, medians of {args.runs} runs, wall / CPU ms\n")
    print("| workspace | files | module classes | scan | ast.parse only | ratio (CPU) | drivers, cold "
          "| keystroke + driver | new line + driver | ast.parse of the edited file | new name + driver |")
    print("| --- | ---: | ---: | --- | --- | ---: | --- | --- | --- | --- | --- |")
    for root in roots:
        if not any(root.rglob("*.py")):
            print(f"| {root.name} | 0 | | no Python files | | | | | | | |")
            continue
        r = bench(root, args.runs)
        ratio = r["scan"][1] / r["parse"][1] if r["parse"][1] else float("nan")
        cell = lambda key: f"{r[key][0]:.0f} / {r[key][1]:.0f}"  # noqa: E731
        print(f"| {root.name} | {r['files']} | {r['classes']} | {cell('scan')} | {cell('parse')} | {ratio:.2f}x | "
              f"{cell('cold')} ({r['documents']} files) | {r['keystroke'][0]:.1f} / {r['keystroke'][1]:.1f} | "
              f"{r['new line'][0]:.1f} / {r['new line'][1]:.1f} | "
              f"{r['parse one'][0]:.1f} / {r['parse one'][1]:.1f} | {cell('new name')} |")


if __name__ == "__main__":
    main()
