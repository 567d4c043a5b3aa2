"""Shapes through the real protocol: hover, inlay hints, shape diagnostics, refresh, settings.

Every shape asserted here is also computed by running the same code on CPU in the test.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from tests.conftest import FIXTURES, ROOT
from tests.lsp.conftest import SERVER, diagnostics_for, handle_code_lens_refresh, open_text, replace_text
from torch_lsp.server.documents import INCREMENTAL_FROM_LINES

pytestmark = pytest.mark.slow  # server, shape worker and jedi helper processes

SEED = FIXTURES / "cifar10_seed.py"
SEED_URI = SEED.as_uri()


def _capabilities() -> types.ClientCapabilities:
    capabilities = client_capabilities("visual-studio-code")
    capabilities.workspace.inlay_hint = types.InlayHintWorkspaceClientCapabilities(refresh_support=True)
    return capabilities


async def _start(lsp_client: LanguageClient, options: dict | None = None) -> LanguageClient:
    lsp_client.inlay_refreshes = 0

    @lsp_client.feature(types.WORKSPACE_INLAY_HINT_REFRESH)
    def on_refresh(params):
        lsp_client.inlay_refreshes += 1
        return None

    handle_code_lens_refresh(lsp_client)

    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=_capabilities(), root_uri=ROOT.as_uri(), initialization_options=options))
    return lsp_client


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def shapes_client(lsp_client: LanguageClient):
    yield await _start(lsp_client, {"debounceMs": 0})
    await lsp_client.shutdown_session()


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def no_execution_client(lsp_client: LanguageClient):
    yield await _start(lsp_client, {"debounceMs": 0, "execution": {"enabled": False}})
    await lsp_client.shutdown_session()


async def shape_report(client: LanguageClient, uri: str, timeout: float = 90.0, newer_than: str | None = None) -> dict:
    """Poll the server's latest report for `uri` (the worker may still be importing torch)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="torch-lsp.shapeReport", arguments=[uri]))
        if report and report["plan_hash"] != newer_than:
            return report
        await asyncio.sleep(0.1)
    raise AssertionError(f"no shape report for {uri} within {timeout} s")


async def published_shape_errors(client: LanguageClient, uri: str, timeout: float = 30.0) -> list[types.Diagnostic]:
    """TL2xx diagnostics as last published (static ones for the same version come first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [d for d in client.diagnostics.get(uri, []) if str(d.code).startswith("TL2")]
        if found:
            return found
        await asyncio.sleep(0.05)
    return []


async def hover(client: LanguageClient, uri: str, line: int, character: int) -> str | None:
    result = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character)))
    return result.contents.value if result else None


def seed_reference_shapes() -> dict[str, tuple]:
    """The seed's Net run for real on CPU at the fixture's batch size (32) and at another: shape
    after each layer, the batch dimension as `B` (the loader's `batch_size=32` is a literal)
    where it follows the batch, which the two runs show."""
    import torch
    import torch.nn.functional as F

    source = SEED.read_text()
    namespace: dict = {}
    exec(compile(source.split("\ntransform = ")[0], str(SEED), "exec"), namespace)
    net = namespace["Net"]()
    runs = []
    for batch in (32, 5):
        x = torch.randn(batch, 3, 32, 32)
        conv1 = net.conv1(x)
        after_first = net.pool(F.relu(conv1))
        runs.append({"conv1": tuple(conv1.shape), "after_first": tuple(after_first.shape), "out": tuple(net(x).shape)})
    first, second = runs
    return {key: tuple("B" if (a, b) == (32, 5) else a for a, b in zip(first[key], second[key])) for key in first}


async def named_report(client: LanguageClient, uri: str, timeout: float = 120.0,
                       newer_than: str | None = None, line: int | None = None) -> dict:
    """The report after the background run with larger batches named the batch dimension
    (of a newer plan than `newer_than`, when given; on `line` when given: a new
    version's driver report carries the last names to unedited lines before its own naming
    run, batch_dims.LastNames, so only an edited line says that run is done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="torch-lsp.shapeReport", arguments=[uri]))
        if report and report["plan_hash"] != newer_than and any(
                value.get("dims") for v in report["variables"] if line is None or v["line"] == line
                for value in v["values"]):
            return report
        await asyncio.sleep(0.1)
    raise AssertionError(f"no batch dimension named in {uri} within {timeout} s")


def line_index(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines()) if needle in line)


async def test_seed_hover_inlay_and_refresh(shapes_client):
    text = SEED.read_text()
    open_text(shapes_client, SEED_URI, text)
    report = await named_report(shapes_client, SEED_URI)
    assert report["errors"] == [] and report["stopped"] is None
    expected = seed_reference_shapes()
    dims = lambda shape: ", ".join(str(d) for d in shape)  # noqa: E731

    line = line_index(text, "x = self.pool(F.relu(self.conv1(x)))")
    source_line = text.splitlines()[line]
    # Hover on the assigned name: the value after the line.
    assigned = await hover(shapes_client, SEED_URI, line, source_line.index("x ="))
    assert f"Tensor[{dims(expected['after_first'])}] float32" in assigned
    # Hover on the inner call: that call's own output, and the layer as constructed.
    inner = await hover(shapes_client, SEED_URI, line, source_line.index("conv1(x)") + 2)
    assert f"Tensor[{dims(expected['conv1'])}] float32" in inner
    assert "conv1: Conv2d(3, 6, kernel_size=(5, 5)" in inner

    # Inlay hints: only the requested range, at the end of each tensor assignment.
    first, last = line_index(text, "def forward"), line_index(text, "return x")
    hints = await shapes_client.text_document_inlay_hint_async(types.InlayHintParams(
        text_document=types.TextDocumentIdentifier(uri=SEED_URI),
        range=types.Range(start=types.Position(line=first + 1, character=0), end=types.Position(line=last, character=0))))
    assert [h.position.line for h in hints] == list(range(first + 1, last))
    assert hints[0].label == f"Tensor[{dims(expected['after_first'])}]"
    assert hints[0].position.character == len(source_line)
    assert hints[-1].label == f"Tensor[{dims(expected['out'])}]"
    assert shapes_client.inlay_refreshes >= 1

    # The torch API under the cursor: signature and first doc paragraph (jedi, off the event loop).
    relu_at = source_line.index("F.relu") + 3
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        api = await hover(shapes_client, SEED_URI, line, relu_at)
        if api and "relu(input" in api:
            break
        await asyncio.sleep(0.5)
    assert "relu(input" in api and "rectified linear unit" in api

    info = await shapes_client.workspace_execute_command_async(types.ExecuteCommandParams(command="torch-lsp.serverInfo"))
    assert info["torchImported"] is False


async def test_shape_error_published_at_the_failing_line_and_cleared_when_fixed(shapes_client):
    uri = (ROOT / "scratch_script_level.py").as_uri()
    broken = "import torch\nimport torch.nn as nn\na = torch.rand(10, 1023)\nfc = nn.Linear(1024, 512)\nx = fc(a)\n"
    open_text(shapes_client, uri, broken)
    report = await shape_report(shapes_client, uri)
    [error] = await published_shape_errors(shapes_client, uri)
    assert error.severity == types.DiagnosticSeverity.Error
    assert (error.range.start.line, error.range.start.character, error.range.end.character) == (4, 4, 9)
    assert error.message == report["errors"][0]["message"]
    import torch
    try:  # the same code on CPU fails too
        torch.nn.Linear(1024, 512)(torch.rand(10, 1023))
        raise AssertionError("CPU run should fail")
    except RuntimeError:
        pass

    fixed = broken.replace("1023", "1024")
    replace_text(shapes_client, uri, fixed, version=2)
    report = await shape_report(shapes_client, uri, newer_than=report["plan_hash"])
    assert report["errors"] == []
    x = [v for v in report["variables"] if v["name"] == "x"][0]
    assert tuple(x["values"][0]["shape"]) == tuple(torch.nn.Linear(1024, 512)(torch.rand(10, 1024)).shape)
    hover_text = await hover(shapes_client, uri, 4, 0)
    assert "Tensor[10, 512] float32" in hover_text


async def test_a_large_document_edited_gets_the_shapes_of_its_new_version(shapes_client):
    """From INCREMENTAL_FROM_LINES lines on, an edit is analysed incrementally and the shape job
    plans the new version from that analysis's parse (ShapeSession.prepare): the shapes shown
    are the edited text's, on lines the edit moved, as the same model gives on CPU."""
    head, _, rest = SEED.read_text().partition("\nclass Net(")
    helpers = "".join(f"\n\ndef helper_{i}(x):\n    y = x * {i}\n    return y + 1\n" for i in range(260))
    text = head + helpers + "\n\nclass Net(" + rest
    assert text.count("\n") >= INCREMENTAL_FROM_LINES
    uri = (ROOT / "scratch_long_seed.py").as_uri()
    open_text(shapes_client, uri, text)
    first = await named_report(shapes_client, uri)
    edited = text.replace("    y = x * 7\n", "    y = x * 7\n    z = y - 1\n")  # above Net: its lines move
    replace_text(shapes_client, uri, edited, version=2)
    report = await named_report(shapes_client, uri, newer_than=first["plan_hash"])
    assert report["errors"] == [] and report["stopped"] is None
    expected = seed_reference_shapes()
    line = line_index(edited, "x = self.pool(F.relu(self.conv1(x)))")
    assert line == line_index(text, "x = self.pool(F.relu(self.conv1(x)))") + 1
    shown = await hover(shapes_client, uri, line, edited.splitlines()[line].index("x ="))
    assert f"Tensor[{', '.join(str(d) for d in expected['after_first'])}] float32" in shown


async def test_execution_disabled_runs_nothing_but_static_rules_work(no_execution_client):
    missing = FIXTURES / "missing_zero_grad.py"
    open_text(no_execution_client, missing.as_uri(), missing.read_text())
    diagnostics = await diagnostics_for(no_execution_client, missing.as_uri(), version=1)
    assert any(d.code == "TL101" for d in diagnostics)
    # After the diagnostics, the analysis and its listeners (which would start shapes) have run.
    report = await no_execution_client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="torch-lsp.shapeReport", arguments=[missing.as_uri()]))
    assert report is None
    hints = await no_execution_client.text_document_inlay_hint_async(types.InlayHintParams(
        text_document=types.TextDocumentIdentifier(uri=missing.as_uri()),
        range=types.Range(start=types.Position(line=0, character=0), end=types.Position(line=100, character=0))))
    assert list(hints) == []
    info = await no_execution_client.workspace_execute_command_async(types.ExecuteCommandParams(command="torch-lsp.serverInfo"))
    assert info["torchImported"] is False
    assert info["shapeSession"] is False and _child_commands(info["pid"]) == []  # no shape worker was started


def _child_commands(pid: int) -> list[str]:
    import os

    commands = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as handle:
            for child in handle.read().split():
                with open(f"/proc/{child}/cmdline", "rb") as cmdline:
                    commands.append(cmdline.read().replace(b"\0", b" ").decode())
    return [c for c in commands if "torch_lsp.shapes.worker" in c]


async def test_model_summary_command(shapes_client):
    lenet = FIXTURES / "shapes" / "lenet_ok.py"
    open_text(shapes_client, lenet.as_uri(), lenet.read_text())
    await shape_report(shapes_client, lenet.as_uri())
    summary = await shapes_client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="torch-lsp.summary", arguments=[lenet.as_uri()]))
    import runpy

    net = runpy.run_path(str(lenet))["net"]  # the same model on CPU
    [whole] = [row for row in summary["rows"] if row["depth"] == 0]
    assert whole["class"] == "Net" and summary["totals"]["params"] == sum(p.numel() for p in net.parameters())
    assert f"Total params: {summary['totals']['params']:,}" in summary["markdown"]
    unknown = await shapes_client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="torch-lsp.summary", arguments=["file:///nowhere.py"]))
    assert unknown["rows"] == [] and "Open the file first" in unknown["markdown"]


NOTED = '''import sys

import torch
from torch import nn


class Mystery(nn.Module):
    def __init__(self, size):
        super().__init__()
        self.fc = nn.Linear(size, 2)

    def forward(self, batch, mask, lookup):
        return self.fc(batch[lookup.pop("x")])  # a dict synthesis cannot build (pop)


x = torch.zeros(4, 3)
sys.exit(3)
'''


async def test_notes_in_hover_and_early_stops_as_information(shapes_client, tmp_path):
    """The report's notes reach the hover of their line, and a run that stops early (here
    `sys.exit(3)`) is a TL299 information diagnostic on that line."""
    path = tmp_path / "noted.py"
    path.write_text(NOTED)
    uri = path.as_uri()
    open_text(shapes_client, uri, NOTED)
    class_line = line_index(NOTED, "class Mystery")
    deadline = time.monotonic() + 120
    while True:  # the driver's report comes first; the synthesized call's note after it
        report = await shape_report(shapes_client, uri)
        notes = [n for n in report["notes"] if n["line"] == class_line]
        if notes or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert notes
    text = await hover(shapes_client, uri, class_line, len("class Myst"))
    report = await shape_report(shapes_client, uri)  # the report the hover was made from, or newer
    notes += [n for n in report["notes"] if n["line"] == class_line]
    assert text is not None and any(f"_Note: {n['message']}_" in text for n in notes)
    exit_line = line_index(NOTED, "sys.exit(3)")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stops = [d for d in shapes_client.diagnostics.get(uri, []) if d.code == "TL299"]
        if stops:
            break
        await asyncio.sleep(0.05)
    [stop] = stops
    assert stop.range.start.line == exit_line and stop.severity == types.DiagnosticSeverity.Information
    assert "sys.exit(3)" in stop.message
