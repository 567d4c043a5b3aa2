"""Helix: the languages.toml snippet is valid, starts our server, and its settings reach it.

Helix itself is not packaged for Debian bookworm, so this drives the server the way Helix does:
the snippet's `command`/`args`, and its `config` table as initializationOptions.
"""

from __future__ import annotations

import sys
import time
import tomllib

from bench.lsp_client import StdioClient
from tests.conftest import ROOT
from tests.editors.conftest import EDITORS
from torch_lsp import config
from torch_lsp.cli import build_parser

SNIPPET = tomllib.loads((EDITORS / "helix" / "languages.toml").read_text())
SERVER = SNIPPET["language-server"]["torch-lsp"]


def test_python_runs_torch_lsp_alongside_another_server():
    [python] = [lang for lang in SNIPPET["language"] if lang["name"] == "python"]
    servers = python["language-servers"]
    assert "torch-lsp" in servers and len(servers) >= 2


def test_command_is_our_serve_subcommand():
    assert SERVER["command"] == "torch-lsp"  # the console script pyproject.toml installs
    args = build_parser().parse_args(SERVER["args"])
    assert args.handler.__name__ == "_serve"


def test_config_is_valid_settings_and_reaches_the_server():
    options = SERVER["config"]
    merged = config.merge(("defaults", {}), ("helix config", options["torchLsp"]))
    assert merged.warnings == []
    client = StdioClient([sys.executable, "-m", "torch_lsp", "serve"], cwd=ROOT)
    try:
        client.initialize(ROOT, options)
        deadline = time.monotonic() + 10  # settings are merged after `initialized`, asynchronously
        while True:
            reply, _ = client.request("workspace/executeCommand", {"command": "torch-lsp.serverInfo", "arguments": []})
            settings = reply["result"]["settings"]
            if settings["debounceMs"] != config.Settings().debounce_ms or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        client.close()
    assert settings["debounceMs"] == options["torchLsp"]["debounceMs"] != config.Settings().debounce_ms
    assert settings["execution"] | options["torchLsp"]["execution"] == settings["execution"]
    assert settings["rules"]["select"] == options["torchLsp"]["rules"]["select"]
