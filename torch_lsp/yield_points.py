"""Yield points: places in long work where a more urgent thread may go first.

The server runs its analyses in threads beside its event loop (server/loop_first.py), and the
interpreter lock lets one thread run at a time. Work made of steps (the static rules, a shape
job's spec) calls `yield_point()` between them; the server installs what that does (wait while
the loop has messages to handle). Everywhere else (the CLI, tests, the shape worker) nothing is
installed and a yield point costs one global lookup: the analyses stay free of the protocol.
"""

from __future__ import annotations

from typing import Callable

_hook: Callable[[], None] | None = None


def install(hook: Callable[[], None] | None) -> None:
    """`hook` runs at every yield point from now on (None: nothing does)."""
    global _hook
    _hook = hook


def yield_point() -> None:
    hook = _hook
    if hook is not None:
        hook()
