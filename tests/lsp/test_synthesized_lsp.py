"""Synthesized calls through the real protocol: the hover on a class nothing calls and on its
`forward` parameter (input, where it came from, the input contract), inlay hints with symbolic
dimensions, the "Pin the synthesized input" code action and the pragma then winning; and each
way of stating an input, with its precedence, through the CLI.

Every shape asserted is computed again by running the same model on CPU at two sizes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest
import pytest_lsp
import torch
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.conftest import ROOT
from tests.lsp.conftest import SERVER, apply_text_edits, open_text, replace_text
from tests.lsp.test_shapes_lsp import _start, hover, line_index
from tests.shapes.test_synthesize import evaluate, load

pytestmark = pytest.mark.slow  # server, shape worker, background jobs

ZOO = ROOT / "fixtures" / "projects" / "synth_zoo" / "zoo.py"
ZOO_URI = ZOO.as_uri()
STATED = ROOT / "fixtures" / "projects" / "synth_stated" / "model.py"


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient):
    yield await _start(lsp_client, {"debounceMs": 0})
    await lsp_client.shutdown_session()


async def synthesized_report(client: LanguageClient, uri: str, want: str, timeout: float = 240.0) -> dict:
    """The latest report once the background jobs have given `want` an entry (the driver's
    report comes first, without it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="torch-lsp.shapeReport", arguments=[uri]))
        entries = {e.get("class"): e for e in (report or {}).get("extras", {}).get("synthesized", [])}
        if want in entries:
            return report
        await asyncio.sleep(0.2)
    raise AssertionError(f"no synthesized call of {want} within {timeout} s")


def cpu_shapes(model: torch.nn.Module, shapes: list[tuple[int, ...]]) -> list[list[tuple[int, ...]]]:
    """Output shape of each direct child layer of `model` on CPU, per input shape."""
    out = []
    for shape in shapes:
        seen = []
        hooks = [m.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape))) for m in model.children()]
        with torch.no_grad():
            model(torch.randn(*shape))
        for h in hooks:
            h.remove()
        out.append(seen)
    return out


async def test_hover_inlay_hints_and_pinning_the_synthesized_input(client):
    text = ZOO.read_text()
    open_text(client, ZOO_URI, text)
    await synthesized_report(client, ZOO_URI, "ConvEncoder")
    module = load(ZOO)
    lines = text.splitlines()

    # Hover on the class line and on forward's parameter: the call torch-lsp made, the input,
    # where it came from, and the contract fc1 imposes (checked: another size fails on CPU).
    lenet_line = line_index(text, "class LeNet")
    on_class = await hover(client, ZOO_URI, lenet_line, 7)
    assert "Shapes from a call torch-lsp made: `LeNet()` with synthesized" in on_class
    assert "`x: [B, 3, 32, 32]`, from conv1 = Conv2d(3, 6, …)" in on_class
    forward_line = line_index(text, "def forward(self, x):")  # LeNet's is the first forward
    on_parameter = await hover(client, ZOO_URI, forward_line, lines[forward_line].index("x)"))
    assert "accepts [B, 3, 32, 32]: H = W = 32 is required by fc1" in on_parameter
    lenet = module.LeNet().eval()
    for batch in (2, 3):
        with torch.no_grad():
            assert tuple(lenet(torch.randn(batch, 3, 32, 32)).shape) == (batch, 10)
    with pytest.raises(RuntimeError), torch.no_grad():
        lenet(torch.randn(2, 3, 64, 64))

    # Inlay hints in ConvEncoder.forward: dimensions named after the free sizes, and the CPU
    # run at two sizes gives exactly what the names say.
    first = line_index(text, "h = torch.relu(self.conv(x))")
    hints = await client.text_document_inlay_hint_async(types.InlayHintParams(
        text_document=types.TextDocumentIdentifier(uri=ZOO_URI),
        range=types.Range(start=types.Position(line=first, character=0), end=types.Position(line=first + 3, character=0))))
    labels = [h.label for h in hints]
    assert labels[:3] == ["Tensor[B, 16, H, W]", "Tensor[B, 32, H/2, W/2]", "Tensor[B, 32, H*W/4]"]
    encoder = module.ConvEncoder().eval()
    for batch, side in ((2, 32), (3, 64)):
        with torch.no_grad():
            h = torch.relu(encoder.conv(torch.randn(batch, 3, side, side)))
            down = encoder.down(h)
        assert tuple(h.shape) == (batch, 16, side, side)
        assert tuple(down.shape) == (batch, 32, side // 2, side // 2)
        assert tuple(down.flatten(2).shape) == (batch, 32, side * side // 4)

    # The code action writes the pragma on the forward line; the pragma then wins.
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=ZOO_URI),
        range=types.Range(start=types.Position(line=lenet_line, character=0), end=types.Position(line=lenet_line, character=0)),
        context=types.CodeActionContext(diagnostics=[])))
    pin = next(a for a in actions if a.title.startswith("Pin the synthesized input of LeNet"))
    assert pin.title == "Pin the synthesized input of LeNet: torch-lsp: input x=[B, 3, 32, 32]"
    [change] = pin.edit.document_changes
    pinned = apply_text_edits(text, change.edits)
    assert pinned.splitlines()[forward_line].endswith("def forward(self, x):  # torch-lsp: input x=[B, 3, 32, 32]")
    replace_text(client, ZOO_URI, pinned, 2)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        on_class = await hover(client, ZOO_URI, lenet_line, 7)
        if on_class and "with stated inputs" in on_class:
            break
        await asyncio.sleep(0.2)
    assert "`x: [B, 3, 32, 32]`, from pragma" in on_class
    x_after_conv = line_index(pinned, "x = self.pool(F.relu(self.conv1(x)))")
    hints = await client.text_document_inlay_hint_async(types.InlayHintParams(
        text_document=types.TextDocumentIdentifier(uri=ZOO_URI),
        range=types.Range(start=types.Position(line=x_after_conv, character=0),
                          end=types.Position(line=x_after_conv + 1, character=0))))
    assert hints[0].label == "Tensor[B, 6, 14, 14]"
    for batch in (2, 3):
        with torch.no_grad():
            assert tuple(lenet.pool(torch.relu(lenet.conv1(torch.randn(batch, 3, 32, 32)))).shape) == (batch, 6, 14, 14)


def test_each_input_source_and_its_precedence_through_the_cli():
    result = subprocess.run([sys.executable, "-m", "torch_lsp", "shapes", "--format", "json", str(STATED)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    entries = {e["class"]: e["inputs"][0] for e in report["extras"]["synthesized"]}
    assert (entries["PragmaNet"]["dims"], entries["PragmaNet"]["source"]) == (["N", 3, 40, 40], "pragma")
    assert (entries["TypedNet"]["dims"], entries["TypedNet"]["source"]) == (["batch", "seq", 12], "jaxtyping")
    assert (entries["BothNet"]["dims"], entries["BothNet"]["source"]) == ([4, 5, 6], "pragma")  # pragma > jaxtyping
    assert (entries["LightningStyle"]["dims"], entries["LightningStyle"]["source"]) == ([5, 7], "example_input_array")
    assert (entries["Configured"]["dims"], entries["Configured"]["source"]) == (["B", 2, 9], "pyproject.toml")
    module = load(STATED)
    lines = STATED.read_text().splitlines()
    full = {e["class"]: e for e in report["extras"]["synthesized"]}
    for name in ("PragmaNet", "TypedNet", "Configured"):
        entry, model = full[name], getattr(module, name)()
        start = line_index(STATED.read_text(), f"class {name}")
        returned = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("return"))
        # (the CLI's JSON counts lines from 1)
        value = next(v for v in report["variables"] if v["line"] == returned + 1)["values"][-1]
        for sizes in [entry["sizes"]] + [{**entry["sizes"], s: v} for s, v in entry["free"].items()]:
            shape = [sizes[d] if isinstance(d, str) else d for d in entry["inputs"][0]["dims"]]
            with torch.no_grad():
                out = model(torch.randn(*shape))
            assert tuple(out.shape) == evaluate(value["dims"], value["shape"], sizes), (name, sizes)


UNGUESSABLE = ROOT / "fixtures" / "projects" / "synth_misc" / "unguessable.py"


async def test_a_failed_synthesized_call_is_a_note_in_the_hover_never_a_diagnostic(client):
    """Correct code whose inputs synthesis cannot guess: once the background jobs are done, the
    class hover says why it has no shapes, and no TL2xx (shape error or early stop) is shown."""
    text, uri = UNGUESSABLE.read_text(), UNGUESSABLE.as_uri()
    open_text(client, uri, text)
    lines = [line_index(text, "class PerTarget"), line_index(text, "class Lookup")]
    deadline = time.monotonic() + 240
    report: dict = {}
    while time.monotonic() < deadline:
        report = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="torch-lsp.shapeReport", arguments=[uri])) or {}
        if {n.get("line") for n in report.get("notes", [])} >= set(lines):
            break
        await asyncio.sleep(0.2)
    assert report["errors"] == [] and report["stopped"] is None, report
    on_class = await hover(client, uri, lines[0], len("class Per"))
    assert on_class and "no input found for PerTarget.forward" in on_class
    deadline = time.monotonic() + 30
    while uri not in client.diagnostics and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert uri in client.diagnostics
    assert not [d for d in client.diagnostics[uri] if str(d.code).startswith("TL2")]
