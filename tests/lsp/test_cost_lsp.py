"""FLOPs, memory and the model summary through the real protocol: hover on a module call and on
the training loop, code lenses above the module class and the loop, `torch-lsp.summary` with a
depth, `torch-lsp.memory` with a batch search, and the lenses' refresh."""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from tests.conftest import FIXTURES, ROOT
from tests.lsp.conftest import SERVER, handle_code_lens_refresh, open_text, replace_text
from tests.lsp.test_shapes_lsp import hover, line_index, shape_report

pytestmark = pytest.mark.slow

SEED = FIXTURES / "cifar10_seed.py"
SEED_URI = SEED.as_uri()


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def cost_client(lsp_client: LanguageClient):
    capabilities = client_capabilities("visual-studio-code")
    capabilities.workspace.code_lens = types.CodeLensWorkspaceClientCapabilities(refresh_support=True)
    handle_code_lens_refresh(lsp_client)
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=capabilities, root_uri=ROOT.as_uri(),
        initialization_options={"debounceMs": 0, "shapes": {"gpuMemoryGb": 16}}))
    yield lsp_client
    await lsp_client.shutdown_session()


async def execute(client: LanguageClient, command: str, *arguments):
    return await client.workspace_execute_command_async(types.ExecuteCommandParams(command=command,
                                                                                   arguments=list(arguments)))


async def lenses(client: LanguageClient, uri: str, *wanted: str, timeout: float = 60.0) -> list[types.CodeLens]:
    """The code lenses once there is one whose title starts with each of `wanted`."""
    deadline = time.monotonic() + timeout
    found: list = []
    while time.monotonic() < deadline:
        found = await client.text_document_code_lens_async(
            types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri=uri))) or []
        titles = [lens.command.title for lens in found]
        if all(any(title.startswith(w) for title in titles) for w in wanted):
            return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no lenses {wanted} for {uri}: {[lens.command.title for lens in found]}")


async def test_flops_and_memory_hover_and_lenses(cost_client):
    text = SEED.read_text()
    open_text(cost_client, SEED_URI, text)
    report = await shape_report(cost_client, SEED_URI)
    assert set(report["extras"]) >= {"modules", "flops", "memory", "cuda_like"}

    line = line_index(text, "x = self.pool(F.relu(self.conv1(x)))")
    on_conv1 = await hover(cost_client, SEED_URI, line, text.splitlines()[line].index("conv1(x)") + 2)
    assert "conv1: 22.6 MFLOP fwd / 22.6 bwd at B = 32" in on_conv1  # 2 x 6 x 75 x 32 x 28 x 28
    loop = line_index(text, "for i, data in enumerate(trainloader, 0):")
    on_loop = await hover(cost_client, SEED_URI, loop, 8)
    assert "step peak ≈ " in on_loop and "at batch 32 (weights " in on_loop and "SGD momentum" in on_loop

    found = await lenses(cost_client, SEED_URI, "62,006 params", "step peak")
    titles = {lens.range.start.line: lens.command.title for lens in found}
    assert titles[line_index(text, "class Net(nn.Module):")] == "62,006 params · [32, 3, 32, 32] → [32, 10]"
    assert titles[loop].startswith("step peak ≈ ") and titles[loop] == on_loop.split("**")[1]
    assert cost_client.code_lens_refreshes >= 1
    summary_lens = next(lens for lens in found if lens.command.title.startswith("62,006"))
    result = await execute(cost_client, summary_lens.command.command, *summary_lens.command.arguments)
    assert "Total params: 62,006" in result["markdown"]
    shown = cost_client.shown_documents[-1].uri  # opened beside the code
    assert shown.endswith(".md") and "Total params: 62,006" in open(shown.removeprefix("file://")).read()


def cpu_parameters(source: str) -> int:
    """The seed's Net (as `source` defines it) built for real on CPU: its parameter count."""
    namespace: dict = {}
    exec(compile(source.split("\ntransform = ")[0], "seed", "exec"), namespace)
    return sum(p.numel() for p in namespace["Net"]().parameters())


async def test_costs_stay_while_typing_and_are_measured_once_it_pauses(cost_client):
    """An edit within a second of the one before is typing: that version's job leaves the cost
    observers out (scheduling.costs_now). The lens keeps the last measured costs, never
    blinking out, until the document has been quiet a second; then its version is measured."""
    uri = (ROOT / "typing_costs_virtual.py").as_uri()
    text = SEED.read_text()
    open_text(cost_client, uri, text)
    await lenses(cost_client, uri, f"{cpu_parameters(text):,} params")
    info = await execute(cost_client, "torch-lsp.serverInfo")
    without_costs, started = info["shapeJobsWithoutCosts"], info["shapeJobsStarted"]
    assert started >= 1  # the opened version's job (bench_typing.py counts jobs a second with it)
    wider = text.replace("nn.Conv2d(3, 6, 5)", "nn.Conv2d(3, 8, 5)").replace("nn.Conv2d(6, 16, 5)", "nn.Conv2d(8, 16, 5)")
    expected = f"{cpu_parameters(wider):,} params"
    assert expected != f"{cpu_parameters(text):,} params"
    replace_text(cost_client, uri, text + "# typed\n", version=2)
    replace_text(cost_client, uri, wider, version=3)  # at once: typing
    class_line = line_index(text, "class Net(nn.Module):")
    titles = []
    deadline = time.monotonic() + 120
    while not (titles and titles[-1].startswith(expected)):
        assert time.monotonic() < deadline, f"the lens never showed {expected}: {titles[-5:]}"
        found = await cost_client.text_document_code_lens_async(
            types.CodeLensParams(text_document=types.TextDocumentIdentifier(uri=uri))) or []
        titles.append(next((lens.command.title for lens in found if lens.range.start.line == class_line), None))
        await asyncio.sleep(0.05)
    assert None not in titles and all(" params · " in title for title in titles)
    info = await execute(cost_client, "torch-lsp.serverInfo")
    assert info["shapeJobsWithoutCosts"] > without_costs and info["shapeJobsStarted"] >= started + 2  # typed, measured
    report = await shape_report(cost_client, uri)
    assert {"modules", "flops", "memory"} <= set(report["extras"])  # the measured version's


async def test_summary_command_depth(cost_client):
    source = ("import torch, torchvision\nmodel = torchvision.models.resnet18()\n"
              "out = model(torch.randn(2, 3, 64, 64))\n")
    uri = (ROOT / "resnet_summary_virtual.py").as_uri()
    open_text(cost_client, uri, source)
    await shape_report(cost_client, uri)
    deep = await execute(cost_client, "torch-lsp.summary", uri)
    shallow = await execute(cost_client, "torch-lsp.summary", uri, {"depth": 1})
    assert "layer1.0.conv1" in [row["name"] for row in deep["rows"]]
    assert [row["name"] for row in shallow["rows"]][:6] == ["", "conv1", "bn1", "relu", "maxpool", "layer1"]
    assert "Total params: 11,689,512" in shallow["markdown"]


async def test_memory_command_finds_the_largest_batch(cost_client):
    open_text(cost_client, SEED_URI, SEED.read_text())
    await shape_report(cost_client, SEED_URI)
    result = await execute(cost_client, "torch-lsp.memory", SEED_URI, {"gpuMemoryGb": 1})
    assert result["capacityGib"] == 1
    search = result["search"]
    assert search["largest_batch"] > 1000 and search["points"][0][0] == 32
    assert "Largest batch that fits in 1 GiB" in result["markdown"] and "| └─ conv1: Conv2d |" in result["markdown"]
    default = await execute(cost_client, "torch-lsp.memory", SEED_URI)  # shapes.gpuMemoryGb = 16
    assert default["capacityGib"] == 16 and default["search"]["largest_batch"] > search["largest_batch"]
    missing = await execute(cost_client, "torch-lsp.memory", (ROOT / "nope.py").as_uri())
    assert missing["memory"] is None and "Open the file first" in missing["markdown"]
