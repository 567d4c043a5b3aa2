"""The server says once, in the editor's log, when shape jobs cannot be fully isolated."""

from __future__ import annotations

import os
import queue
import sys
import time

import pytest

from bench.lsp_client import StdioClient
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox is Linux only")
SERVER = [sys.executable, "-m", "torch_lsp", "serve"]


def warnings_logged(env: dict, options: dict | None = None, wait_s: float = 60) -> list[str]:
    """window/logMessage warnings about the sandbox, until serverInfo has answered and the
    check (which runs once, after `initialized`) has had `wait_s` to report."""
    client = StdioClient(SERVER, env=env)
    found = []
    try:
        client.initialize(ROOT, options)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                _, message = client.notifications.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if message.get("method") == "window/logMessage" and "isolation" in message["params"]["message"]:
                found.append(message["params"]["message"])
                deadline = min(deadline, time.monotonic() + 5)  # a second one would come soon after
    finally:
        client.close()
    return found


@pytest.mark.slow  # the shape worker starts (execution is on) besides the check
def test_a_missing_layer_is_logged_once():
    found = warnings_logged({**os.environ, "TORCH_LSP_SANDBOX_SKIP": "files"})
    assert len(found) == 1, found
    assert "not contained here: os.open" in found[0] and "--check-sandbox" in found[0]


def test_no_check_when_nothing_runs():
    """Once the settings are known the server has decided (sandbox_notice.report_once runs right
    after): with execution off it never started the check, so nothing can be logged later."""
    client = StdioClient(SERVER, env=dict(os.environ))
    try:
        client.initialize(ROOT, {"execution": {"enabled": False}})
        deadline = time.monotonic() + 60
        while not (info := server_info(client))["settingsKnown"]:
            if time.monotonic() > deadline:
                raise AssertionError("the settings were never known")
            time.sleep(0.05)  # polling the server's state until a deadline: waiting for the event
        assert info["sandboxChecked"] is False
    finally:
        client.close()


def server_info(client: StdioClient) -> dict:
    reply, _ = client.request("workspace/executeCommand", {"command": "torch-lsp.serverInfo", "arguments": []})
    return reply["result"]


def test_the_warning_says_what_got_out_and_what_is_missing():
    from torch_lsp.server.sandbox_notice import summary

    contained = {"attempts": [{"name": "os.open", "contained": True}], "missing": []}
    assert summary(contained) is None
    text = summary({"attempts": [{"name": "TCP connect", "contained": False}], "missing": ["Landlock ABI 0: x"]})
    assert "not contained here: TCP connect" in text and "unavailable: Landlock ABI 0: x" in text
    assert "could not check" in summary(None)
