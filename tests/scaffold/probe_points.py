"""Probes *inside* a program (the harness's `with_probe` appends at the end), and a checked
`run_batch` for the programs of one test module."""

from __future__ import annotations

from harness import Program, run_batch, with_probe


def insert_line(source: str, needle: str, code: str, *, before: bool = False, occurrence: int = 0,
                deeper: bool = False) -> str:
    """`code` on its own line after (or before) the line holding `needle`, at that line's
    indentation (one level deeper with `deeper`, e.g. for the first line of a loop body)."""
    lines = source.splitlines(keepends=True)
    matches = [i for i, line in enumerate(lines) if needle in line]
    if len(matches) <= occurrence:
        raise ValueError(f"{needle!r} occurs on fewer than {occurrence + 1} lines")
    index = matches[occurrence]
    line = lines[index]
    indent = line[: len(line) - len(line.lstrip())] + ("    " if deeper else "")
    lines.insert(index if before else index + 1, f"{indent}{code}\n")
    return "".join(lines)


def with_probe_function(source: str) -> str:
    """`source` with the harness's `probe(name, value)` defined first, so that probes inside
    loops can call it."""
    return with_probe("", "").lstrip("\n") + source


def run_programs(programs: dict[str, str], workdir, *, env: dict[str, str] | None = None, timeout: float = 240):
    """`harness.run_batch` over {label: source} (torch imported once for all of them); fails
    with the program and its traceback when one of them fails."""
    run = run_batch([Program(label, with_probe_function(source), dict(env or {})) for label, source in programs.items()],
                    workdir, timeout=timeout).assert_ok()
    for label in programs:
        errors = run.probes(f"{label}.error")
        assert not errors, f"{label} failed:\n{errors[0]}\n{programs[label]}"
    return run
