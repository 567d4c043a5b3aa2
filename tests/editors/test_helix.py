"""Helix: the languages.toml snippet is valid, starts our server, and its settings reach it.

Helix itself is not packaged for Debian bookworm, so this drives the server the way Helix does:
the snippet's `command`/`args`, and its `config` table as initializationOptions.
"""

from __future__ import annotations

import asyncio
import sys

import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.conftest import ROOT
from tests.editors.conftest import EDITORS, SERVER_COMMAND
from torch_lsp import config
from torch_lsp.cli import build_parser

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - requires-python is >= 3.10; pyproject.toml pulls in tomli there
    import tomli as tomllib

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


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER_COMMAND))
async def helix_like(lsp_client: LanguageClient):
    """A client that, like Helix, sends `config` as initializationOptions and answers
    workspace/configuration from the same table."""
    lsp_client.set_configuration(SERVER["config"])
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=types.ClientCapabilities(workspace=types.WorkspaceClientCapabilities(configuration=True)),
        root_uri=ROOT.as_uri(), initialization_options=SERVER["config"]))
    yield lsp_client
    await lsp_client.shutdown_session()


async def test_config_is_valid_settings_and_reaches_the_server(helix_like):
    wanted = SERVER["config"]["torchLsp"]
    assert config.merge(("defaults", {}), ("helix config", wanted)).warnings == []
    assert wanted["debounceMs"] != config.Settings().debounce_ms  # so the check below can fail
    for _ in range(200):  # settings are merged after `initialized`, asynchronously
        info = await helix_like.workspace_execute_command_async(
            types.ExecuteCommandParams(command="torch-lsp.serverInfo", arguments=[]))
        if info["settings"]["debounceMs"] == wanted["debounceMs"]:
            break
        await asyncio.sleep(0.05)
    settings = info["settings"]
    assert settings["debounceMs"] == wanted["debounceMs"]
    assert settings["execution"] | wanted["execution"] == settings["execution"]
    assert settings["inlayHints"] == wanted["inlayHints"]
    assert settings["rules"]["select"] == wanted["rules"]["select"]
    assert helix_like.messages == []  # no warning about a bad or unknown key
