"""pytest-lsp fixtures: a real `python -m torch_lsp serve` subprocess driven over stdio."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities
from pytest_lsp.client import default_feature

from tests.conftest import ROOT

SERVER = [sys.executable, "-m", "torch_lsp", "serve"]
NOTEBOOK_CAPABILITIES = types.NotebookDocumentClientCapabilities(
    synchronization=types.NotebookDocumentSyncClientCapabilities(execution_summary_support=True))


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient):
    """A VS Code-like client, initialized on the repository root; shut down after the test.
    Shape analysis is off: these tests need no shape worker (a process that imports torch,
    seconds of CPU per test); tests of shapes have their own clients (test_shapes_lsp.py)."""
    handle_code_lens_refresh(lsp_client)
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=ROOT.as_uri(),
        workspace_folders=[types.WorkspaceFolder(uri=ROOT.as_uri(), name="torch-lsp")],
        initialization_options={"execution": {"enabled": False}}))
    yield lsp_client
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def project_client(lsp_client: LanguageClient, tmp_path):
    """A VS Code-like client on an empty project folder (`client.root`, to write files into),
    shape analysis on with a 60 s job timeout (jobs that wait for a file the test writes)."""
    root = tmp_path / "project"
    root.mkdir()
    handle_code_lens_refresh(lsp_client)
    capabilities = client_capabilities("visual-studio-code")
    capabilities.notebook_document = NOTEBOOK_CAPABILITIES
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=capabilities, root_uri=root.as_uri(),
        initialization_options={"execution": {"timeout": 60}}))
    lsp_client.root = root
    yield lsp_client
    await lsp_client.shutdown_session()


async def command(client: LanguageClient, name: str, *arguments):
    """`workspace/executeCommand` of `name` with `arguments`: its result."""
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command=name, arguments=list(arguments)))


def handle_code_lens_refresh(client: LanguageClient) -> None:
    """VS Code's capabilities say it refreshes code lenses on request (the server asks when a
    shape report or a run changes them); pytest-lsp's client has no handler of its own."""
    client.code_lens_refreshes = 0

    @client.feature(types.WORKSPACE_CODE_LENS_REFRESH)
    def code_lens_refresh(params):
        client.code_lens_refreshes += 1


def open_text(client: LanguageClient, uri: str, text: str, version: int = 1) -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id="python", version=version, text=text)))


def replace_text(client: LanguageClient, uri: str, text: str, version: int) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))


async def diagnostics_for(client: LanguageClient, uri: str, version: int | None = None,
                          timeout: float = 60.0) -> list[types.Diagnostic]:
    """Wait until diagnostics for `uri` (and `version`, when given) are published; return them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            params = await asyncio.wait_for(client.wait_for_notification(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS),
                                            timeout=max(deadline - time.monotonic(), 0.01))
        except asyncio.TimeoutError:
            break
        if params.uri == uri and (version is None or params.version == version):
            return list(params.diagnostics)
    raise AssertionError(f"no diagnostics for {uri} version {version} within {timeout} s")


def apply_text_edits(text: str, edits: list[types.TextEdit]) -> str:
    """Apply LSP edits (UTF-16 positions; these tests use ASCII) the way an editor would."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(pos: types.Position) -> int:
        return starts[min(pos.line, len(lines))] + (pos.character if pos.line < len(lines) else 0)

    for edit in sorted(edits, key=lambda e: (e.range.start.line, e.range.start.character), reverse=True):
        text = text[: offset(edit.range.start)] + edit.new_text + text[offset(edit.range.end):]
    return text


@default_feature(types.CLIENT_REGISTER_CAPABILITY)
def register_capability(client: LanguageClient, params: types.RegistrationParams) -> None:
    """Accept dynamic registrations as editors do (the capabilities these clients declare say they
    can, e.g. the server's `**/*.py` file watcher); tests read `client.registrations`."""
    client.registrations = [*getattr(client, "registrations", []), *params.registrations]


async def wait_for(condition, what: str, timeout: float = 120):
    """Poll an async condition until it holds (a generous ceiling, never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := await condition():
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s")
