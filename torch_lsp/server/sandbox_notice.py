"""Say once, in the editor's log, when shape jobs cannot be fully isolated on this system.

The check is the one `torch-lsp serve --check-sandbox` prints: a sandboxed fork tries every way
out and the effects are checked from outside. It runs in a separate process (the server never
forks itself: it has threads) off the event loop, only when execution is enabled.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
from typing import TYPE_CHECKING

from lsprotocol import types

from torch_lsp.own_python import module_command

if TYPE_CHECKING:
    from torch_lsp.server.app import TorchLanguageServer

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 60


def run_check() -> dict | None:
    command = module_command("torch_lsp.shapes.sandbox.check", "--json")
    # Tests leave layers out the way the worker does (shapes/worker.py), to see the warning.
    for layer in filter(None, os.environ.get("TORCH_LSP_SANDBOX_SKIP", "").split(",")):
        command += ["--skip", layer]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
        return json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        log.warning("sandbox check failed: %r", error)
        return None


def summary(report: dict | None) -> str | None:
    """The warning for the log, or None when every attempt was contained and nothing is missing."""
    if report is None:
        return ("torch-lsp: could not check how shape jobs are isolated on this system; run "
                "`torch-lsp serve --check-sandbox` (docs/shapes.md#security)")
    escaped = [a["name"] for a in report.get("attempts", []) if not a.get("contained")]
    missing = report.get("missing", [])
    if not escaped and not missing:
        return None
    parts = []
    if escaped:
        parts.append("not contained here: " + ", ".join(escaped))
    if missing:
        parts.append("unavailable: " + "; ".join(missing))
    return ("torch-lsp: shape jobs run your code with reduced isolation on this system ("
            + "; ".join(parts) + "). Details: `torch-lsp serve --check-sandbox`, docs/shapes.md#security")


async def report_once(ls: "TorchLanguageServer") -> None:
    if ls.sandbox_reported or not ls.settings.execution.enabled:
        return
    ls.sandbox_reported = True
    message = summary(await asyncio.to_thread(run_check))
    if message:
        log.warning(message)
        ls.window_log_message(types.LogMessageParams(type=types.MessageType.Warning, message=message))
