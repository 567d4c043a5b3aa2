"""Put probe lines *inside* a program (the harness's `with_probe` appends at the end)."""

from __future__ import annotations


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
