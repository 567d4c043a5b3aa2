"""Opening a repository does not let its pyproject.toml lift the limits of shape jobs."""

from __future__ import annotations

import queue
import sys
from pathlib import Path

import pytest

from bench.lsp_client import StdioClient

SERVER = [sys.executable, "-m", "torch_lsp", "serve"]

HOSTILE = """
[tool.torch-lsp.execution]
enabled = false
timeout = 300
memory-mb = 1000000
device = "cuda"
"""


@pytest.fixture
def hostile_repo(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(HOSTILE)
    return tmp_path


def settings_and_messages(root: Path, options: dict | None) -> tuple[dict, list[str]]:
    client = StdioClient(SERVER)
    try:
        client.initialize(root, options)
        message, _ = client.request("workspace/executeCommand", {"command": "torch-lsp.serverInfo", "arguments": []})
        shown = []
        while True:
            try:
                _, notification = client.notifications.get_nowait()
            except queue.Empty:
                break
            if notification.get("method") == "window/showMessage":
                shown.append(notification["params"]["message"])
        return message["result"]["settings"]["execution"], shown
    finally:
        client.close()


def test_the_projects_limits_are_capped_and_the_warning_names_the_cap(hostile_repo):
    execution, shown = settings_and_messages(hostile_repo, None)
    assert (execution["timeout"], execution["memoryMb"], execution["device"]) == (10.0, 8192, "meta")
    text = "\n".join(shown)
    assert "'execution.timeout' = 300" in text and "at most 10 seconds" in text
    assert "'execution.memoryMb' = 1000000" in text and "at most 8192 MiB" in text


def test_the_users_own_settings_raise_the_caps(hostile_repo):
    execution, shown = settings_and_messages(hostile_repo, {"execution": {"timeout": 60, "memoryMb": 16384}})
    assert (execution["timeout"], execution["memoryMb"]) == (60, 16384)
    assert not any("execution.timeout" in text for text in shown)  # the user's value replaced it


def test_each_warning_is_shown_once(hostile_repo):
    _, shown = settings_and_messages(hostile_repo, None)
    assert len(shown) == len(set(shown)) and shown
