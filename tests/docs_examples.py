"""Run the console examples of README.md and docs/*.md and compare their output, so docs cannot
drift from the product.

    python -m tests.docs_examples              # check every example; exit 1 with a diff
    python -m tests.docs_examples --update     # rewrite the outputs that changed, in place
    python -m tests.docs_examples --update --all   # ...and those that match only loosely
    python -m tests.docs_examples --list       # what would run, what is skipped and why
    python -m tests.docs_examples docs/commands.md -k metrics   # some of them

An example is a ```console block with `$ torch-lsp ...` lines; the lines after a command, up to
the next `$` line, are its expected output (stdout and stderr together, as a terminal shows
them). Each block runs in a fresh temporary workspace that holds a copy of fixtures/ and
pyproject.toml and a run store made of the recorded runs (tests/training/recorded), so
commands such as `torch-lsp runs` have something to show and nothing is written into the
checkout. `torch-lsp` is this checkout's.

What may differ between the docs and a run:

- a line `...` stands for any number of output lines (an excerpt);
- run ids, "3 min ago" ages and the temporary workspace's path (shown as /home/you/project)
  are compared loosely everywhere;
- `<!-- docs-example: vary REGEX -->` directly above a block: an expected line matching REGEX
  matches any output line that also matches it (timings, rates, losses of a real training);
- `<!-- docs-example: skip REASON -->` directly above a block: not run (needs a GPU, an
  editor, the network...). The reason is listed by --list.

`--update` rewrites only the blocks that fail: each stretch between `...` lines is replaced by
the output it now corresponds to (lines that match a `vary` pattern keep their old text), then
the block is checked again; a block that still does not match is reported for a manual edit.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RECORDED_RUNS = ROOT / "tests" / "training" / "recorded" / "runs"
DISPLAY_WORKSPACE = "/home/you/project"
ELLIPSIS = "..."
COMMAND_TIMEOUT_S = 600
_DIRECTIVE = re.compile(r"^<!--\s*docs-example:\s*(?P<kind>skip|vary)\b\s*(?P<value>.*?)\s*-->\s*$")
# Compared loosely everywhere (both sides are rewritten before comparing).
_LOOSE = [
    (re.compile(r"\b\d{8}-\d{6}-[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*-[0-9a-f]{4}\b"), "<run-id>"),
    (re.compile(r"\b(?:just now|\d+ (?:min|h|d) ago)\b"), "<age>"),
]


@dataclass
class Command:
    text: str  # without the "$ "
    line: int  # 0-based line of the `$` line in the file
    expected: list[str]


@dataclass
class Example:
    path: Path
    start: int  # 0-based line of the ```console fence
    end: int  # 0-based line of the closing fence
    commands: list[Command]
    skip: str | None = None
    vary: list[re.Pattern] = field(default_factory=list)
    ordinal: int = 0  # the how-manieth example of its file (line numbers move when one is updated)

    @property
    def name(self) -> str:
        first = self.commands[0].text.split("#")[0].strip() if self.commands else ""
        return f"{self.path.relative_to(ROOT)}:{self.start + 1}: {first}"


# -- reading the docs ----------------------------------------------------------------------------

def collect(paths: list[Path] | None = None) -> list[Example]:
    examples = []
    for path in paths or DOCS:
        examples.extend(_examples_in(path))
    return examples


def _examples_in(path: Path) -> list[Example]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found, index = [], 0
    while index < len(lines):
        if lines[index].strip() != "```console":
            index += 1
            continue
        end = next((j for j in range(index + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
        commands = _commands(lines, index + 1, end)
        if any(c.text.startswith("torch-lsp") or " torch-lsp " in f" {c.text}" for c in commands):
            example = Example(path, index, end, commands, ordinal=len(found))
            _read_directives(lines, index, example)
            found.append(example)
        index = end + 1
    return found


def _commands(lines: list[str], first: int, end: int) -> list[Command]:
    commands: list[Command] = []
    for number in range(first, end):
        text = lines[number]
        if text.startswith("$ "):
            commands.append(Command(text[2:], number, []))
        elif commands:
            commands[-1].expected.append(text)
    for command in commands:
        while command.expected and not command.expected[-1].strip():
            command.expected.pop()
    return commands


def _read_directives(lines: list[str], fence: int, example: Example) -> None:
    above = fence - 1
    while above >= 0 and (match := _DIRECTIVE.match(lines[above].strip())):
        if match["kind"] == "skip":
            example.skip = match["value"] or "skipped"
        else:
            example.vary.append(re.compile(match["value"]))
        above -= 1


# -- running -------------------------------------------------------------------------------------

class Workspace:
    """A temporary project: fixtures/, pyproject.toml, the recorded run store, and a
    `torch-lsp` on PATH that runs this checkout."""

    def __enter__(self) -> "Workspace":
        self.path = Path(tempfile.mkdtemp(prefix="torch-lsp-docs-"))
        shutil.copytree(ROOT / "fixtures", self.path / "fixtures")
        shutil.copy(ROOT / "pyproject.toml", self.path / "pyproject.toml")
        runs = self.path / ".torch-lsp" / "runs"
        for run in sorted(RECORDED_RUNS.iterdir()):
            shutil.copytree(run, runs / run.name)
        bin_dir = self.path / ".bin"
        bin_dir.mkdir()
        shim = bin_dir / "torch-lsp"
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m torch_lsp "$@"\n')
        shim.chmod(0o755)
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                    "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
                    "PYTHONUNBUFFERED": "1", "COLUMNS": "100", "TZ": "UTC"}
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def run(self, command: str) -> list[str]:
        """The command's output as a terminal leaves it: stdout and stderr in the order written,
        a line rewritten with \\r (a progress bar) shown as its last state."""
        done = subprocess.run(["bash", "-c", command], cwd=self.path, env=self.env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT_S)
        text = done.stdout.decode("utf-8", errors="replace")
        text = text.replace(str(self.path.resolve()), DISPLAY_WORKSPACE).replace(str(self.path), DISPLAY_WORKSPACE)
        lines = [_terminal_line(line) for line in text.split("\n")]
        while lines and not lines[-1].strip():
            lines.pop()
        return lines


def _terminal_line(line: str) -> str:
    visible = [part for part in line.split("\r") if part.strip()]
    return (visible[-1] if visible else "").rstrip()


def run_example(example: Example) -> list[list[str]]:
    """The actual output of each command of the block, run in order in one workspace."""
    with Workspace() as workspace:
        return [workspace.run(command.text) for command in example.commands]


# -- comparing -----------------------------------------------------------------------------------

def _loose(line: str) -> str:
    for pattern, replacement in _LOOSE:
        line = pattern.sub(replacement, line)
    return line.rstrip()


def lines_match(expected: str, actual: str, vary: list[re.Pattern]) -> bool:
    if _loose(expected) == _loose(actual):
        return True
    return any(p.search(expected) and p.search(actual) for p in vary)


def output_matches(expected: list[str], actual: list[str], vary: list[re.Pattern]) -> bool:
    """Expected lines, where `...` stands for any number of lines, against the actual ones."""
    @_cache
    def match(i: int, j: int) -> bool:
        if i == len(expected):
            return j == len(actual)
        if expected[i].strip() == ELLIPSIS:
            return match(i + 1, j) or (j < len(actual) and match(i, j + 1))
        return j < len(actual) and lines_match(expected[i], actual[j], vary) and match(i + 1, j + 1)

    return match(0, 0)


def _cache(function):
    import functools

    return functools.lru_cache(maxsize=None)(function)


def diff(example: Example, actual: list[list[str]]) -> str:
    parts = []
    for command, output in zip(example.commands, actual):
        if not output_matches(command.expected, output, example.vary):
            parts.append(f"$ {command.text}\n" + "\n".join(difflib.unified_diff(
                command.expected, output, "documented", "actual", lineterm="", n=2)))
    return "\n".join(parts)


# -- updating ------------------------------------------------------------------------------------

def updated_output(expected: list[str], actual: list[str], vary: list[re.Pattern]) -> list[str]:
    """The documented excerpt rewritten to the actual output, keeping its `...` structure."""
    chunks = _chunks(expected)
    if not chunks:
        return list(actual)
    result: list[str] = []
    position = 0
    for index, (elided_before, lines) in enumerate(chunks):
        last = index == len(chunks) - 1
        elided_after = last and expected[-1].strip() == ELLIPSIS
        start = position if not elided_before else _best(lines[0], actual, position, len(actual))
        if last and not elided_after:
            end = len(actual) - 1
        elif len(lines) == 1:
            end = start
        else:
            end = _best(lines[-1], actual, start, min(len(actual), start + 2 * len(lines) + 10))
        if elided_before:
            result.append(ELLIPSIS)
        result.extend(_keep_varying(lines, actual[start:end + 1], vary))
        position = end + 1
    if expected and expected[-1].strip() == ELLIPSIS:
        result.append(ELLIPSIS)
    return result


def _chunks(expected: list[str]) -> list[tuple[bool, list[str]]]:
    chunks, current, elided = [], [], False
    for line in expected:
        if line.strip() == ELLIPSIS:
            if current:
                chunks.append((elided, current))
            current, elided = [], True
        else:
            current.append(line)
    if current:
        chunks.append((elided, current))
    return chunks


def _best(line: str, actual: list[str], first: int, stop: int) -> int:
    """Index in actual[first:stop] of the line most like `line` (the earliest on a tie)."""
    best, best_score = first, -1.0
    for index in range(first, max(first, stop)):
        score = _likeness(_loose(line), _loose(actual[index]))
        if score > best_score:
            best, best_score = index, score
    return best


def _likeness(old: str, new: str) -> float:
    """How much of the old line the new one still holds (outputs change by gaining text: an
    annotation after the code, a column), the plain similarity breaking ties."""
    if not old.strip():
        return 1.0 if not new.strip() else 0.0
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    kept = sum(block.size for block in matcher.get_matching_blocks()) / len(old)
    return kept + 0.01 * matcher.ratio()


def _keep_varying(old: list[str], new: list[str], vary: list[re.Pattern]) -> list[str]:
    """New lines, except that a line matching a `vary` pattern keeps the old text of the same
    kind: docs do not change each time a timing does."""
    kept = []
    unused = list(old)
    for line in new:
        pattern = next((p for p in vary if p.search(line)), None)
        twin = next((o for o in unused if pattern and pattern.search(o)), None) if pattern else None
        if twin is not None:
            unused.remove(twin)
            kept.append(twin)
        else:
            kept.append(line)
    return kept


def update_file(path: Path, results: list[tuple[Example, list[list[str]]]], rewrite_all: bool = False) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    # Bottom-up, so the line numbers of the blocks above stay valid.
    for example, actual in sorted(results, key=lambda item: item[0].start, reverse=True):
        block = []
        for command, output in zip(example.commands, actual):
            block.append(f"$ {command.text}")
            if output_matches(command.expected, output, example.vary) and not rewrite_all:
                block.extend(command.expected)
            else:
                block.extend(updated_output(command.expected, output, example.vary))
        first_command = example.commands[0].line
        lines[first_command:example.end] = block
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# -- command line --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.docs_examples", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="Markdown files (default: README.md and docs/*.md)")
    parser.add_argument("-k", dest="keyword", help="only examples whose name contains this text")
    parser.add_argument("--update", action="store_true", help="rewrite the outputs that changed")
    parser.add_argument("--all", action="store_true",
                        help="with --update: rewrite every example, also those that match loosely "
                             "(new run ids); lines matching a `vary` pattern still keep their text")
    parser.add_argument("--list", action="store_true", help="list the examples and exit")
    args = parser.parse_args(argv)
    examples = [e for e in collect([p.resolve() for p in args.paths] or None)
                if not args.keyword or args.keyword in e.name]
    if args.list:
        for example in examples:
            print(f"{example.name}" + (f"  [skip: {example.skip}]" if example.skip else ""))
        return 0
    failed: list[tuple[Example, list[list[str]]]] = []
    for example in examples:
        if example.skip:
            continue
        actual = run_example(example)
        ok = all(output_matches(c.expected, out, example.vary) for c, out in zip(example.commands, actual))
        print(f"{'ok  ' if ok else 'FAIL'} {example.name}", flush=True)
        if not ok or (args.update and args.all):
            failed.append((example, actual))
    if args.update and failed:
        for path in sorted({example.path for example, _ in failed}):
            update_file(path, [item for item in failed if item[0].path == path], rewrite_all=args.all)
        still = _recheck(failed)
        for example in still:
            print(f"still differs after --update, edit by hand: {example.name}")
        print(f"updated {len(failed) - len(still)} example(s)")
        return 1 if still else 0
    for example, actual in failed:
        print(f"\n{example.name}\n{diff(example, actual)}")
    if failed:
        print(f"\n{len(failed)} example(s) differ; if the new output is intended: python -m tests.docs_examples --update")
    return 1 if failed else 0


def _recheck(updated: list[tuple[Example, list[list[str]]]]) -> list[Example]:
    """Examples whose updated text still does not match the output it was updated from."""
    still = []
    for old, actual in updated:
        [example] = [e for e in _examples_in(old.path) if e.ordinal == old.ordinal] or [None]
        if example is None or not all(output_matches(c.expected, out, example.vary)
                                      for c, out in zip(example.commands, actual)):
            still.append(old)
    return still


if __name__ == "__main__":
    raise SystemExit(main())
