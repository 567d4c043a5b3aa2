"""Helpers for shape tests: every shape a test asserts is checked against real CPU execution."""

from __future__ import annotations

import textwrap


def cpu_run(source: str) -> dict:
    """Execute the code for real on CPU (as a script) and return its global namespace."""
    namespace = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(source), "<cpu reference>", "exec"), namespace)
    return namespace


def held_until(flag, then: str) -> str:
    """A script that waits until the file `flag` exists, then runs `then`: its shape job runs
    for as long as the test wants (tests then read what runs without a race)."""
    return f"import os, time, torch\nwhile not os.path.exists({str(flag)!r}):\n    time.sleep(0.01)\n{then}"


def shape_of(value):
    import torch

    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)):
        return type(value)(shape_of(v) for v in value)
    raise TypeError(type(value))


def value_shapes(value) -> object:
    """Report Value -> the same nested tuple-of-shapes form as shape_of."""
    if value.kind == "tensor":
        return tuple(value.shape)
    items = [value_shapes(v) for v in value.items]
    return tuple(items) if value.kind == "tuple" else items


def variable(report, name: str, line: int | None = None):
    found = [v for v in report.variables if v.name == name and (line is None or v.line == line)]
    assert found, f"no shapes recorded for {name!r} (line {line}); have {[(v.name, v.line) for v in report.variables]}"
    return found[-1]


def assert_same_as_cpu(report, namespace: dict, *names: str) -> None:
    for name in names:
        recorded = variable(report, name).values[-1]
        assert value_shapes(recorded) == shape_of(namespace[name]), name


def line_of(source: str, needle: str) -> int:
    """0-based line of the first line containing needle."""
    for index, text in enumerate(textwrap.dedent(source).splitlines()):
        if needle in text:
            return index
    raise AssertionError(needle)
