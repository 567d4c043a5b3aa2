"""Shapes in notebooks through the real protocol: the notebook runs as one program, so a model
defined in one cell and called in a later one shows its shapes in its own cell; hover, inlay
hints and shape errors land on each cell and equal those of the same code as one `.py` file.
Every shape asserted is also computed by running the same code on CPU."""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from tests.conftest import ROOT
from tests.lsp.conftest import NOTEBOOK_CAPABILITIES, SERVER, handle_code_lens_refresh, open_text
from tests.lsp.notebook_client import NotebookSession, record_diagnostics
from tests.notebooks import DATA, IMPORTS, MODEL, SETUP, TRAINING, TRAINING_WITH_MAGICS, as_python_file
from tests.shapes.helpers import cpu_run, shape_of

pytestmark = pytest.mark.slow  # server, shape worker and jedi helper processes


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient):
    record_diagnostics(lsp_client)
    handle_code_lens_refresh(lsp_client)
    capabilities = client_capabilities("visual-studio-code")
    capabilities.notebook_document = NOTEBOOK_CAPABILITIES
    await lsp_client.initialize_session(types.InitializeParams(
        capabilities=capabilities, root_uri=ROOT.as_uri(), initialization_options={"debounceMs": 0}))
    yield lsp_client
    await lsp_client.shutdown_session()


async def shape_report(client: LanguageClient, uri: str, accept=lambda report: True, timeout: float = 90.0) -> dict:
    """Poll the latest report of a notebook or file (the worker may still be importing torch)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="torch-lsp.shapeReport", arguments=[uri]))
        if report and accept(report):
            return report
        await asyncio.sleep(0.1)
    raise AssertionError(f"no shape report for {uri} within {timeout} s")


async def hover(client: LanguageClient, uri: str, line: int, character: int) -> str | None:
    result = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=uri), position=types.Position(line=line, character=character)))
    return result.contents.value if result else None


async def inlay_hints(client: LanguageClient, uri: str, lines: int) -> list[tuple[int, int, str]]:
    hints = await client.text_document_inlay_hint_async(types.InlayHintParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(start=types.Position(line=0, character=0), end=types.Position(line=lines, character=0))))
    return sorted((h.position.line, h.position.character, h.label) for h in hints or [])


def reference_shapes() -> dict[str, tuple[int, ...]]:
    """The same code run for real on CPU."""
    import torch

    namespace = cpu_run(as_python_file(TRAINING)[0])
    hidden = torch.relu(namespace["model"].fc1(namespace["features"][:8]))
    batch, _ = next(iter(namespace["loader"]))
    in_loop = torch.relu(namespace["model"].fc1(batch))
    return {"h": tuple(hidden.shape), "h in the loop": tuple(in_loop.shape), "out": shape_of(namespace["out"]),
            "features": shape_of(namespace["features"])}


def dims(shape) -> str:
    return ", ".join(str(d) for d in shape)


async def test_a_model_defined_in_one_cell_and_called_in_another_shows_shapes_in_its_cell(client, tmp_path):
    session = NotebookSession(client, tmp_path / "training.ipynb", TRAINING_WITH_MAGICS)
    session.open()
    await shape_report(client, session.uri)
    expected = reference_shapes()
    model = session.cells[2]
    line = model.text.split("\n").index("        h = torch.relu(self.fc1(x))")
    assert f"Tensor[{dims(expected['h'])}] float32" in await hover(client, model.uri, line, 8)
    setup = session.cells[5]
    out_line = setup.text.split("\n").index("out = model(features[:8])")
    assert f"Tensor[{dims(expected['out'])}] float32" in await hover(client, setup.uri, out_line, 0)
    # forward runs twice: on 8 samples (cell 5) and on a batch of the loader (the loop cell),
    # whose first dimension is the loader's batch (32), named once a second run has shown it.
    hints = await until(lambda: inlay_hints(client, model.uri, 20), batch_named)
    in_loop = expected["h in the loop"]
    assert in_loop[0] == 32
    label = f"Tensor[{dims(expected['h'])}] | Tensor[B, {dims(in_loop[1:])}]"
    assert (line, len("        h = torch.relu(self.fc1(x))"), label) in hints
    # The data cell starts with a shell escape: the lines after it keep their shapes.
    data = session.cells[4]
    assert (2, len("features = torch.randn(256, 20)"), f"Tensor[{dims(expected['features'])}]") in \
        await inlay_hints(client, data.uri, 10)
    # A markdown cell and an unknown cell: nothing, and no error.
    assert await hover(client, session.cells[0].uri, 0, 0) is None
    assert await inlay_hints(client, "vscode-notebook-cell:/nowhere.ipynb#x", 3) == []


async def test_inlay_hints_per_cell_equal_those_of_the_same_python_file(client, tmp_path):
    session = NotebookSession(client, tmp_path / "training.ipynb", TRAINING)
    session.open()
    source, origin = as_python_file(TRAINING)
    file_uri = (tmp_path / "training.py").as_uri()
    open_text(client, file_uri, source)

    async def file_hints():
        return {(*origin[line], character, label) for line, character, label in
                await inlay_hints(client, file_uri, len(source.split("\n")))}

    async def cell_hints():
        return {(index, line, character, label) for index, cell in enumerate(session.cells) if cell.kind == "code"
                for line, character, label in await inlay_hints(client, cell.uri, len(cell.text.split("\n")))}

    # Shapes come in two steps for both: the run, then its loader's batch dimension by name
    # (a second run with larger batches). Compared once both show the second. The cells are read
    # one request each: the second step's report may come between two of them (seen under load:
    # the model's cell from the first run, the loop's from the second), so twice alike.
    in_file = await until(file_hints, batch_named)
    in_cells = await until(cell_hints, batch_named, settled=True)
    assert in_cells == in_file and len(in_cells) >= 5


def batch_named(hints) -> bool:
    return any("Tensor[B, 20]" in label for *_, label in hints)


async def until(read, done, timeout: float = 90.0, settled: bool = False):
    """`read()` once `done` holds for it (the worker may still be importing torch); `settled`:
    and the read before gave the same."""
    deadline = time.monotonic() + timeout
    previous = None
    while True:
        value = await read()
        if (done(value) and (not settled or value == previous)) or time.monotonic() > deadline:
            return value
        previous = value
        await asyncio.sleep(0.1)


BROKEN_MODEL = MODEL.replace("nn.Linear(hidden, classes)", "nn.Linear(32, classes)")


async def test_a_shape_error_lands_in_the_cell_that_raises_and_goes_when_the_cell_is_fixed(client, tmp_path):
    cells = [("code", IMPORTS), ("code", BROKEN_MODEL), ("code", DATA), ("code", SETUP)]
    session = NotebookSession(client, tmp_path / "broken.ipynb", cells)
    session.open()
    await shape_report(client, session.uri, accept=lambda report: report["errors"])
    by_cell = await session.diagnostics()
    [error] = [d for d in by_cell[1] if str(d.code).startswith("TL2")]
    assert error.code == "TL201" and "expects 32 input features but got 64" in error.message
    assert BROKEN_MODEL.split("\n")[error.range.start.line].strip() == "return self.fc2(h)"
    # The same code as one .py file: the same error at the same place.
    source, origin = as_python_file(cells)
    file_uri = (tmp_path / "broken.py").as_uri()
    open_text(client, file_uri, source)
    await shape_report(client, file_uri, accept=lambda report: report["errors"])
    deadline = time.monotonic() + 30
    while not [d for d in client.diagnostics.get(file_uri, []) if d.code == "TL201"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    [in_file] = [d for d in client.diagnostics[file_uri] if d.code == "TL201"]
    assert origin[in_file.range.start.line] == (1, error.range.start.line) and in_file.message == error.message
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"):
        cpu_run(source)  # CPU agrees: this code is broken, there
    session.edit(1, MODEL)
    await shape_report(client, session.uri, accept=lambda report: not report["errors"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        latest = {p.uri: p for p in client.published[session.mark:]}
        if session.cells[1].uri in latest and latest[session.cells[1].uri].version == 2 and \
                not any(str(d.code).startswith("TL2") for d in latest[session.cells[1].uri].diagnostics):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("TL201 still shown after the cell was fixed")



@pytest.mark.parametrize("rewritten", [True, False], ids=["jupyterlab-lsp overrides", "raw IPython syntax"])
async def test_a_notebook_sent_as_one_text_document_gets_its_shapes(client, tmp_path, rewritten):
    from tests.lsp.test_notebooks_lsp import jupyterlab_virtual_document

    cells = TRAINING_WITH_MAGICS[:-1]
    text = jupyterlab_virtual_document(cells)[0] if rewritten else \
        "\n\n\n".join(source for kind, source in cells if kind == "code")
    uri = (tmp_path / ".virtual_documents" / "training.ipynb").as_uri()
    open_text(client, uri, text)
    report = await shape_report(client, uri)
    assert report["errors"] == [] and report["stopped"] is None
    lines = text.split("\n")
    line = lines.index("        h = torch.relu(self.fc1(x))")
    assert f"Tensor[{dims(reference_shapes()['h'])}] float32" in await hover(client, uri, line, 8)


async def test_the_model_summary_of_a_notebook_places_layers_in_their_cells(client, tmp_path):
    session = NotebookSession(client, tmp_path / "training.ipynb", TRAINING_WITH_MAGICS)
    session.open()
    await shape_report(client, session.uri)
    summary = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="torch-lsp.summary", arguments=[session.cells[5].uri]))
    rows = {(row["line"], row["class"], row["name"]) for row in summary["rows"]}
    assert ("cell 3:8", "Linear", "fc1") in rows and ("cell 6:4", "MLP", "") in rows
    assert "| MLP() · cell 6:4 |" in summary["markdown"]


async def test_the_memory_command_measures_a_notebooks_training_step(client, tmp_path):
    """`torch-lsp.memory` on a notebook (or one of its cells): the program's training step, the
    loop placed in its cell; the same figures as `torch-lsp memory` on the same notebook."""
    import json
    import subprocess
    import sys

    from tests.notebooks import write_notebook

    session = NotebookSession(client, tmp_path / "training.ipynb", TRAINING_WITH_MAGICS)
    session.open()
    await shape_report(client, session.uri)
    result = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="torch-lsp.memory", arguments=[session.cells[6].uri, {"gpuMemoryGb": 1}]))
    step = result["memory"]
    assert step["training"] and step["batch"] == 32 and step["line"]["place"] == "cell 7:3"
    assert result["search"]["largest_batch"] > 0 and "step peak ≈ " in result["markdown"]
    path = write_notebook(tmp_path / "same.ipynb", TRAINING_WITH_MAGICS)
    cli = subprocess.run([sys.executable, "-m", "torch_lsp", "memory", "--format", "json", "--gpu-memory", "1",
                          str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["memory"]["breakdown"] == step["breakdown"]
