"""Where in the user's file the failing expression is (``co_positions``, Python 3.11+)."""

from __future__ import annotations

import linecache
import types

from torch_lsp.analysis.facts import Span


def user_span(exc: BaseException, filename: str, source: str | None = None) -> Span | None:
    """Span of the expression being evaluated in the innermost frame of ``filename``.

    Uses ``co_positions()`` (Python 3.11+); columns are converted from UTF-8 byte offsets to
    code points using ``source`` (or linecache). Lines and columns are 0-based.
    """
    innermost = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            innermost = tb
        tb = tb.tb_next
    if innermost is None:
        return None
    line = innermost.tb_lineno
    positions = _positions(innermost.tb_frame.f_code, innermost.tb_lasti)
    if positions is None or None in positions:
        return Span.of(line - 1, 0, line - 1, len(_source_line(filename, line, source)))
    start_line, end_line, start_byte, end_byte = positions
    return Span.of(
        start_line - 1,
        _code_points(_source_line(filename, start_line, source), start_byte),
        end_line - 1,
        _code_points(_source_line(filename, end_line, source), end_byte),
    )


def _positions(code: types.CodeType, lasti: int):
    if lasti < 0 or not hasattr(code, "co_positions"):
        return None
    for index, positions in enumerate(code.co_positions()):
        if index == lasti // 2:
            return positions
    return None


def _source_line(filename: str, lineno: int, source: str | None) -> str:
    if source is not None:
        lines = source.splitlines()
        return lines[lineno - 1] if 0 < lineno <= len(lines) else ""
    return linecache.getline(filename, lineno).rstrip("\n")


def _code_points(line: str, byte_offset: int) -> int:
    return len(line.encode("utf-8")[:byte_offset].decode("utf-8", errors="ignore"))
