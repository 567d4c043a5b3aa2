"""No start-up race: nothing of the user's code runs before the client's configuration is in,
and one server has one shape worker whatever the timing.

The client here answers `workspace/configuration` only when the test says so: documents are
opened while the server still waits for it, as an editor restoring a session does."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from tests.conftest import ROOT
from tests.lsp.conftest import SERVER, handle_code_lens_refresh, open_text

pytestmark = pytest.mark.slow  # server and shape worker processes

MODEL = "import torch\nx = torch.zeros(2, 3)\ny = x.sum(0)\n"


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def slow_client(lsp_client: LanguageClient):
    lsp_client.configuration_answer = asyncio.Event()
    lsp_client.configuration = {}

    async def configuration(params: types.ConfigurationParams):
        await lsp_client.configuration_answer.wait()  # a client that takes its time to answer
        return [lsp_client.configuration for _ in params.items]

    lsp_client.protocol.fm.features[types.WORKSPACE_CONFIGURATION] = configuration  # replaces pytest-lsp's
    lsp_client.published = set()
    store = lsp_client.protocol.fm.features[types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS]

    def published(params: types.PublishDiagnosticsParams):  # every (uri, version), none missed
        lsp_client.published.add((params.uri, params.version))
        return store(params)

    lsp_client.protocol.fm.features[types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS] = published

    handle_code_lens_refresh(lsp_client)

    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=ROOT.as_uri(),
        initialization_options={"debounceMs": 0}))
    yield lsp_client
    await lsp_client.shutdown_session()


async def server_info(client: LanguageClient) -> dict:
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="torch-lsp.serverInfo", arguments=[]))


def shape_workers(server_pid: int) -> list[int]:
    """Shape worker processes started by the server (its direct children running the worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == server_pid and b"torch_lsp.shapes.worker" in cmdline:
            found.append(int(entry.name))
    return found


def open_documents(client: LanguageClient, count: int) -> list[str]:
    uris = []
    for n in range(count):
        uri = (ROOT / f"scratch_race_{n}.py").as_uri()  # never written: the editor's buffers
        open_text(client, uri, MODEL.replace("2, 3", f"{n + 2}, 3"))
        uris.append(uri)
    return uris


async def test_code_does_not_run_before_the_configuration_says_it_may(slow_client):
    slow_client.configuration = {"execution": {"enabled": False}}
    uris = open_documents(slow_client, 3)
    assert (await server_info(slow_client))["shapeJobs"] == 0  # (the server waits at most 5 s)
    slow_client.configuration_answer.set()
    info = await server_info(slow_client)
    deadline = time.monotonic() + 30
    while not info["settings"]["execution"]["enabled"] is False and time.monotonic() < deadline:
        info = await server_info(slow_client)
    assert info["settings"]["execution"]["enabled"] is False
    for uri in uris:  # a change after the answer: still nothing runs
        slow_client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=MODEL)]))
    deadline = time.monotonic() + 60
    while not {(uri, 2) for uri in uris} <= slow_client.published and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert {(uri, 2) for uri in uris} <= slow_client.published  # analysed (statically) after the answer
    info = await server_info(slow_client)
    assert info["shapeJobs"] == 0 and info["shapeWorkerPid"] is None
    assert shape_workers(info["pid"]) == []


async def test_eight_documents_before_the_configuration_get_one_worker(slow_client):
    slow_client.configuration = {"execution": {"enabled": True}}
    uris = open_documents(slow_client, 8)
    info = await server_info(slow_client)  # (the server waits at most 5 s for the answer)
    server_pid = info["pid"]
    # Nothing runs before the answer; the worker itself may have started with `initialize`
    # (shapes/early_start.py: torch imports meanwhile), but only one.
    assert len(shape_workers(server_pid)) <= 1 and info["shapeJobs"] == 0
    slow_client.configuration_answer.set()
    deadline = time.monotonic() + 180
    reported: set[str] = set()
    while reported != set(uris) and time.monotonic() < deadline:
        for uri in set(uris) - reported:
            report = await slow_client.workspace_execute_command_async(
                types.ExecuteCommandParams(command="torch-lsp.shapeReport", arguments=[uri]))
            if report:
                reported.add(uri)
        await asyncio.sleep(0.2)
    assert reported == set(uris)
    info = await server_info(slow_client)
    assert shape_workers(server_pid) == [info["shapeWorkerPid"]]
