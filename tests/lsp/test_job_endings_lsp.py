"""A job that dies or runs out of memory tells the user where: an information diagnostic (TL299)
at the last line reached, in words that say what happened. A document stuck in a loop does not
hold up the shapes of the others (jobs run side by side)."""

from __future__ import annotations

import time

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from tests.conftest import ROOT
from tests.lsp.conftest import SERVER, diagnostics_for, handle_code_lens_refresh, open_text, wait_for

pytestmark = pytest.mark.slow  # server and shape worker processes


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient):
    handle_code_lens_refresh(lsp_client)
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=ROOT.as_uri(),
        initialization_options={"debounceMs": 0, "execution": {"device": "auto", "memoryMb": 256}}))
    yield lsp_client
    await lsp_client.shutdown_session()


async def tl299(client: LanguageClient, uri: str, timeout: float = 120) -> types.Diagnostic:
    """The TL299 diagnostic of `uri`, once the shape job has reported (static ones come first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [d for d in await diagnostics_for(client, uri, timeout=max(deadline - time.monotonic(), 0.1))
                 if d.code == "TL299"]
        if found:
            return found[0]
    raise AssertionError(f"no TL299 for {uri}")


@pytest.mark.parametrize("name, ending, message, lines", [
    ("exits", "os._exit(3)", "shape analysis ended: the process exited with status 3 at line 4", {3}),
    ("crashes", "import ctypes; ctypes.string_at(0)", "the process was killed by signal 11 at line 4", {3}),
    ("is killed", "import signal; os.kill(os.getpid(), signal.SIGKILL)", "was killed by signal 9 at line 4", {3}),
    ("raises MemoryError", "raise MemoryError", "out of memory (the limit is execution.memoryMb = 256 MiB)", {3}),
    # Killed by the worker's memory watch (device auto, no GPU here: no address-space limit),
    # on the allocation or in the loop after it.
    ("hogs", "block = bytearray(700 << 20)\nwhile True:\n    pass",
     "over the limit execution.memoryMb = 256 MiB", {3, 4, 5}),
])
async def test_a_job_that_ends_badly_gets_an_information_diagnostic_at_its_line(client, name, ending, message, lines):
    uri = (ROOT / f"scratch_ending_{name.replace(' ', '_')}.py").as_uri()  # never written: the editor's buffer
    open_text(client, uri, f"import os\nimport torch\nx = torch.ones(4)\n{ending}\n")
    diagnostic = await tl299(client, uri)
    assert message in diagnostic.message
    assert diagnostic.severity == types.DiagnosticSeverity.Information
    assert diagnostic.range.start.line in lines


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def patient_client(lsp_client: LanguageClient):
    """Jobs may run for two minutes: a looping document is still looping when the others are done."""
    handle_code_lens_refresh(lsp_client)
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=ROOT.as_uri(),
        initialization_options={"debounceMs": 0, "execution": {"timeout": 120}}))
    yield lsp_client
    await lsp_client.shutdown_session()


async def server_info(client: LanguageClient) -> dict:
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="torch-lsp.serverInfo", arguments=[]))


async def test_a_looping_document_does_not_delay_another(patient_client):
    import torch

    looping = (ROOT / "scratch_looping.py").as_uri()  # never written: the editor's buffers
    other = (ROOT / "scratch_waiting.py").as_uri()
    open_text(patient_client, looping, "import torch\nx = torch.ones(2)\nwhile True:\n    x = x + 1\n")
    await wait_for(lambda: _running(patient_client, looping), "the looping job running")
    open_text(patient_client, other, "import torch\ny = torch.zeros(5, 7).sum(0)\n")

    async def other_report():
        return await patient_client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="torch-lsp.shapeReport", arguments=[other]))

    report = await wait_for(other_report, "the other document's shapes")
    [y] = [v for v in report["variables"] if v["name"] == "y"]
    assert tuple(y["values"][0]["shape"]) == tuple(torch.zeros(5, 7).sum(0).shape)
    # Answered while the looping job still runs (its timeout is 120 s): it did not wait for it.
    assert await _running(patient_client, looping)


async def _running(client: LanguageClient, uri: str) -> bool:
    return uri in (await server_info(client))["runningShapeJobs"]
