"""Jupyter notebooks through the real protocol: `notebookDocument/*` sync, diagnostics on each
cell's URI and lines (the same as for the same code in one `.py` file), re-analysis on every
kind of change, code actions that edit cells, and a notebook sent as one text document."""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from tests.conftest import ROOT
from tests.lsp.conftest import NOTEBOOK_CAPABILITIES, SERVER, handle_code_lens_refresh, open_text
from tests.lsp.notebook_client import NotebookSession, file_diagnostics, record_diagnostics
from tests.notebooks import (DATA, IMPORTS, LOOP, MODEL, SETUP, TRAINING, TRAINING_WITH_MAGICS, WITHOUT_LOOP,
                             as_python_file, run_cells)

STATIC_ONLY = {"torchLsp": {"execution": {"enabled": False}, "debounceMs": 50}}


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient):
    """A VS Code-like client that syncs notebooks; shape execution off (static features only)."""
    record_diagnostics(lsp_client)
    handle_code_lens_refresh(lsp_client)
    capabilities = client_capabilities("visual-studio-code")
    capabilities.notebook_document = NOTEBOOK_CAPABILITIES
    lsp_client.initialize_result = await lsp_client.initialize_session(types.InitializeParams(
        capabilities=capabilities, root_uri=ROOT.as_uri(), initialization_options=STATIC_ONLY,
        workspace_folders=[types.WorkspaceFolder(uri=ROOT.as_uri(), name="torch-lsp")]))
    yield lsp_client
    await lsp_client.shutdown_session()


def _range(rng: types.Range) -> tuple[int, int, int, int]:
    return rng.start.line, rng.start.character, rng.end.line, rng.end.character


def cell_results(session: NotebookSession, by_cell: dict[int, list[types.Diagnostic]]) -> set:
    """Diagnostics as (cell, range, code, message, severity, related places by cell)."""
    cell_of = {c.uri: i for i, c in enumerate(session.cells)}
    return {(cell, *_range(d.range), d.code, d.message, d.severity,
             tuple(sorted((cell_of[r.location.uri], *_range(r.location.range), r.message)
                          for r in d.related_information or [])))
            for cell, found in by_cell.items() for d in found}


async def python_file_results(client, session: NotebookSession, tmp_path) -> set:
    """The same code as one `.py` file, through the same server, in the cells' coordinates."""
    source, origin = as_python_file(session.as_cells())
    uri = (tmp_path / f"as_file_{session.version}.py").as_uri()
    open_text(client, uri, source)

    def place(rng: types.Range) -> tuple[int, int, int, int, int]:
        (cell, line), (_, end_line) = origin[rng.start.line], origin[rng.end.line]
        return cell, line, rng.start.character, end_line, rng.end.character

    return {(*place(d.range), d.code, d.message, d.severity,
             tuple(sorted((*place(r.location.range), r.message) for r in d.related_information or [])))
            for d in await file_diagnostics(client, uri, version=1)}


async def test_the_server_declares_notebook_sync_for_python_cells_of_jupyter_notebooks(client):
    sync = client.initialize_result.capabilities.notebook_document_sync
    [selector] = sync.notebook_selector
    assert selector.notebook == "jupyter-notebook" and [c.language for c in selector.cells] == ["python"]
    assert sync.save is True


async def test_diagnostics_land_on_each_cell_and_equal_those_of_the_same_python_file(client, tmp_path):
    session = NotebookSession(client, tmp_path / "training.ipynb", TRAINING)
    session.open()
    by_cell = await session.diagnostics()
    assert [d.code for d in by_cell[4]] == ["TL111"] and _range(by_cell[4][0].range)[0] == 3
    assert [d.code for d in by_cell[6]] == ["TL101"] and _range(by_cell[6][0].range)[0] == 4
    assert cell_results(session, by_cell) == await python_file_results(client, session, tmp_path)
    assert all(c.uri not in client.published[-1].uri for c in session.cells if c.kind == "markdown")


async def test_magics_and_shell_escapes_do_not_move_a_diagnostic(client, tmp_path):
    plain = NotebookSession(client, tmp_path / "plain.ipynb", TRAINING)
    magic = NotebookSession(client, tmp_path / "magic.ipynb", TRAINING_WITH_MAGICS)

    def flagged_text(session, by_cell):
        return {(cell, d.code, session.cells[cell].text.split("\n")[d.range.start.line][d.range.start.character:])
                for cell, found in by_cell.items() for d in found}

    plain.open()
    magic.open()
    assert flagged_text(magic, await magic.diagnostics()) == flagged_text(plain, await plain.diagnostics())


async def test_an_edit_in_one_cell_reanalyses_the_notebook(client, tmp_path):
    session = NotebookSession(client, tmp_path / "training.ipynb", TRAINING)
    session.open()
    [tl101] = (await session.diagnostics())[6]
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=session.cells[6].uri), range=tl101.range,
        context=types.CodeActionContext(diagnostics=[tl101])))
    fix = next(a for a in actions if a.kind == types.CodeActionKind.QuickFix and a.is_preferred)
    [change] = fix.edit.document_changes
    assert change.text_document.uri == session.cells[6].uri and change.text_document.version == 1
    session.apply(fix.edit)
    assert "optimizer.zero_grad()" in session.cells[6].text
    by_cell = await session.diagnostics()
    assert by_cell[6] == [] and [d.code for d in by_cell[4]] == ["TL111"]
    assert client.published[-1].version is not None


async def test_cells_added_removed_and_moved_are_analysed_as_the_new_program(client, tmp_path):
    session = NotebookSession(client, tmp_path / "training.ipynb", TRAINING)
    session.open()
    await session.diagnostics()
    # A new cell before the data cell, with its own finding (an unsafe torch.load).
    session.insert(4, "code", 'state = torch.load("weights.pt", weights_only=False)')
    by_cell = await session.diagnostics()
    assert [d.code for d in by_cell[4]] == ["TL301"] and [d.code for d in by_cell[7]] == ["TL101"]
    assert cell_results(session, by_cell) == await python_file_results(client, session, tmp_path)
    # The loop cell moved up, before the cell that creates the optimizer: one program, new order.
    session.move(7, 2)
    by_cell = await session.diagnostics()
    assert cell_results(session, by_cell) == await python_file_results(client, session, tmp_path)
    # The loop cell removed: its diagnostics are cleared.
    loop = session.remove(2)
    by_cell = await session.diagnostics()
    cleared = [p for p in client.published[session.mark:] if p.uri == loop.uri]
    assert cleared and not cleared[-1].diagnostics
    assert all(d.code != "TL101" for found in by_cell.values() for d in found)
    assert cell_results(session, by_cell) == await python_file_results(client, session, tmp_path)


async def test_a_cell_being_typed_keeps_its_diagnostics_and_the_others_are_analysed(client, tmp_path):
    session = NotebookSession(client, tmp_path / "training.ipynb", TRAINING)
    session.open()
    await session.diagnostics()
    session.edit(4, DATA + "\nloader = DataLoader(")  # half-typed: this cell does not parse
    session.edit(6, LOOP.replace("        loss = ", "        optimizer.zero_grad()\n        loss = "))
    await session.diagnostics(but=(4,))
    fresh = [p for p in client.published[session.mark:]]
    assert {p.uri for p in fresh} == {c.uri for c in session.code_cells()} - {session.cells[4].uri}
    assert not [p.diagnostics for p in fresh if p.uri == session.cells[6].uri][-1]


async def test_close_clears_every_cell(client, tmp_path):
    session = NotebookSession(client, tmp_path / "training.ipynb", TRAINING)
    session.open()
    await session.diagnostics()
    mark = len(client.published)
    session.close()
    code_uris = {c.uri for c in session.code_cells()}
    for _ in range(500):
        cleared = {p.uri for p in client.published[mark:] if not p.diagnostics}
        if code_uris <= cleared:
            break
        await __import__("asyncio").sleep(0.02)
    assert code_uris <= cleared


async def test_a_quick_fix_in_one_cell_edits_the_cell_it_must_change(client, tmp_path):
    """TL108 is reported where the loss is computed (cell 4); its fix removes the softmax in
    the model's forward (cell 2), and its related information points there too."""
    model = ("class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
             "        self.fc = nn.Linear(20, 3)\n\n    def forward(self, x):\n"
             "        return torch.softmax(self.fc(x), dim=1)")
    train = ("model = Net()\ncriterion = nn.CrossEntropyLoss()\noptimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
             "for x, y in loader:\n    optimizer.zero_grad()\n    loss = criterion(model(x), y)\n"
             "    loss.backward()\n    optimizer.step()")
    session = NotebookSession(client, tmp_path / "softmax.ipynb",
                              [("code", IMPORTS), ("code", model), ("code", DATA), ("code", train)])
    session.open()
    by_cell = await session.diagnostics()
    [tl108] = [d for d in by_cell[3] if d.code == "TL108"]
    assert [r.location.uri for r in tl108.related_information] == [session.cells[1].uri]
    assert cell_results(session, by_cell) == await python_file_results(client, session, tmp_path)
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=session.cells[3].uri), range=tl108.range,
        context=types.CodeActionContext(diagnostics=[tl108])))
    fix = next(a for a in actions if a.title == "Remove the activation before the loss")
    assert [c.text_document.uri for c in fix.edit.document_changes] == [session.cells[1].uri]
    session.apply(fix.edit)
    assert session.cells[1].text.endswith("return self.fc(x)")
    assert all(d.code != "TL108" for d in (await session.diagnostics())[3])


async def _scaffold(client, session: NotebookSession, cell: int, line: int, col: int, offer: str) -> types.WorkspaceEdit:
    at = types.Position(line=line, character=col)
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=session.cells[cell].uri), range=types.Range(start=at, end=at),
        context=types.CodeActionContext(diagnostics=[], only=[types.CodeActionKind.Source])))
    [action] = [a for a in actions if a.data and a.data["offer"] == offer]
    resolved = await client.code_action_resolve_async(action)
    assert resolved.edit is not None
    return resolved.edit


@pytest.mark.slow  # runs the notebook in a real kernel: ten epochs of training
async def test_a_training_loop_is_written_into_the_cell_where_it_is_asked_for_and_the_notebook_runs(client, tmp_path):
    session = NotebookSession(client, tmp_path / "train_me.ipynb", WITHOUT_LOOP)
    session.open()
    await session.diagnostics()
    edit = await _scaffold(client, session, 4, 0, 1, "loop.train")  # on `model` in `model = MLP()`
    assert [c.text_document.uri for c in edit.document_changes] == [session.cells[4].uri]
    session.apply(edit)
    assert session.cells[4].text.startswith(WITHOUT_LOOP[4][1])
    assert "for epoch in range(num_epochs):" in session.cells[4].text
    assert session.cells[5].text == "print(out.shape)"  # the cell after it is untouched
    await session.diagnostics()
    # Imports go into the first code cell, the seeding function right after them.
    edit = await _scaffold(client, session, 4, 0, 1, "reproducibility.seed")
    session.apply(edit)
    first = session.cells[1].text
    assert "import random" in first and first.index("import random") < first.index("def seed_everything")
    by_cell = await session.diagnostics()
    assert all(d.severity != types.DiagnosticSeverity.Error for found in by_cell.values() for d in found)
    executed = run_cells(session.as_cells())  # a real kernel, top to bottom: raises on any error
    outputs = "".join(o.get("text", "") for o in executed.cells[4].outputs)
    assert "epoch 10/10: train loss" in outputs


async def test_actions_on_a_markdown_cell_or_unknown_cell_are_empty(client, tmp_path):
    session = NotebookSession(client, tmp_path / "training.ipynb", TRAINING)
    session.open()
    await session.diagnostics()
    here = types.Range(start=types.Position(line=0, character=0), end=types.Position(line=0, character=0))
    for uri in (session.cells[0].uri, "vscode-notebook-cell:/nowhere.ipynb#nothing"):
        actions = await client.text_document_code_action_async(types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), range=here, context=types.CodeActionContext(diagnostics=[])))
        assert not actions
    hover = await client.text_document_hover_async(types.HoverParams(
        text_document=types.TextDocumentIdentifier(uri=session.cells[0].uri), position=here.start))
    assert hover is None


def jupyterlab_virtual_document(cells) -> tuple[str, list[int]]:
    """What jupyterlab-lsp sends for a notebook: code cells joined by two blank lines, IPython
    syntax rewritten by its code overrides; and the first line of each code cell in it."""
    import re

    def override(line: str) -> str:
        line = re.sub(r"^(\s*)%(\S+)(.*)$", lambda m: f'{m[1]}get_ipython().run_line_magic("{m[2]}", "{m[3]}")', line)
        line = re.sub(r"^(\s*)!(.*)$", lambda m: f'{m[1]}get_ipython().getoutput("{m[2]}")', line.replace('"', '\\"')
                      if line.lstrip().startswith("!") else line)
        return re.sub(r"^(\s*)([\w.]+)\?$", lambda m: f"{m[1]}get_ipython().run_line_magic('pinfo',  '{m[2]}')", line)

    parts, starts, line = [], [], 0
    for kind, source in cells:
        if kind != "code":
            continue
        starts.append(line)
        parts.append("\n".join(override(text) for text in source.split("\n")))
        line += len(source.split("\n")) + 2
    return "\n\n\n".join(parts), starts


@pytest.mark.parametrize("rewritten", [True, False], ids=["jupyterlab-lsp overrides", "raw IPython syntax"])
async def test_a_notebook_sent_as_one_text_document_gets_the_same_findings(client, tmp_path, rewritten):
    cells = TRAINING_WITH_MAGICS[:-1] + [("code", LOOP)]  # jupyterlab-lsp turns a %%time body into a string
    if rewritten:
        text, starts = jupyterlab_virtual_document(cells)
        assert "get_ipython().run_line_magic(\"load_ext\"" in text
    else:
        text = "\n\n\n".join(source for kind, source in cells if kind == "code")
    uri = (tmp_path / ".virtual_documents" / "training.ipynb").as_uri()
    open_text(client, uri, text)
    found = await file_diagnostics(client, uri, version=1)
    lines = text.split("\n")
    assert sorted((d.code, lines[d.range.start.line].strip()) for d in found) == [
        ("TL101", "optimizer.step()"),
        ("TL111", "loader = DataLoader(TensorDataset(features, targets), batch_size=32)")]


async def test_bad_notebook_input_never_crashes(client, tmp_path):
    # A change for a notebook never opened, a close of one never opened.
    client.notebook_document_did_change(types.DidChangeNotebookDocumentParams(
        notebook_document=types.VersionedNotebookDocumentIdentifier(uri="file:///nowhere/ghost.ipynb", version=2),
        change=types.NotebookDocumentChangeEvent()))
    client.notebook_document_did_close(types.DidCloseNotebookDocumentParams(
        notebook_document=types.NotebookDocumentIdentifier(uri="file:///nowhere/ghost.ipynb"), cell_text_documents=[]))
    # Cells with CRLF line ends, an empty cell, binary junk, a huge cell.
    session = NotebookSession(client, tmp_path / "odd.ipynb", [
        ("code", IMPORTS.replace("\n", "\r\n")), ("code", ""), ("code", "\x00\x01 binary"), ("code", MODEL),
        ("code", "x = torch.zeros(3)\n" * 20_000), ("code", DATA.replace("\n", "\r\n")), ("code", SETUP),
        ("code", LOOP)])
    session.open()
    await session.diagnostics(but=(2,))
    latest = {p.uri: p.diagnostics for p in client.published[session.mark:]}
    assert session.cells[2].uri not in latest  # it does not parse: nothing published for it
    [tl111] = latest[session.cells[5].uri]
    assert (tl111.code, tl111.range.start.line, tl111.range.start.character) == ("TL111", 3, 9)  # CRLF: same place
    assert [d.code for d in latest[session.cells[7].uri]] == ["TL101"]
    # Requests far outside a cell are clamped, not errors.
    far = types.Range(start=types.Position(line=10_000, character=500), end=types.Position(line=10_001, character=0))
    for cell in session.cells:
        document = types.TextDocumentIdentifier(uri=cell.uri)
        await client.text_document_code_action_async(types.CodeActionParams(
            text_document=document, range=far, context=types.CodeActionContext(diagnostics=[])))
        await client.text_document_hover_async(types.HoverParams(text_document=document, position=far.start))
        await client.text_document_inlay_hint_async(types.InlayHintParams(text_document=document, range=far))
    info = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="torch-lsp.serverInfo", arguments=[]))
    assert info["pid"] > 0 and info["torchImported"] is False


async def test_stating_a_model_input_edits_the_cell_of_its_forward(client, tmp_path):
    session = NotebookSession(client, tmp_path / "training.ipynb", TRAINING)
    session.open()
    await session.diagnostics()
    model = session.cells[2]
    at = types.Position(line=0, character=6)  # `class MLP`
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=types.TextDocumentIdentifier(uri=model.uri), range=types.Range(start=at, end=at),
        context=types.CodeActionContext(diagnostics=[], only=[types.CodeActionKind.RefactorRewrite])))
    [state] = [a for a in actions if a.title.startswith("State the input of MLP")]
    [change] = state.edit.document_changes
    assert change.text_document.uri == model.uri
    session.apply(state.edit)
    assert "# torch-lsp: input" in session.cells[2].text.split("\n")[6]  # on `def forward(self, x):`


async def test_hover_in_a_cell_documents_the_torch_api_imported_in_another_cell(client, tmp_path):
    session = NotebookSession(client, tmp_path / "training.ipynb", TRAINING)
    session.open()
    await session.diagnostics()
    session.save()  # notebookDocument/didSave: analysed again, nothing changes
    model = session.cells[2]
    line = model.text.split("\n").index("        h = torch.relu(self.fc1(x))")
    at = types.Position(line=line, character=len("        h = torch.re"))
    deadline = time.monotonic() + 90  # the jedi helper starts on the first lookup
    text = None
    while time.monotonic() < deadline:
        result = await client.text_document_hover_async(types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=model.uri), position=at))
        text = result.contents.value if result else None
        if text and "relu(input" in text:
            break
        await asyncio.sleep(0.5)
    assert text and "relu(input" in text  # `torch` comes from the first code cell
