"""Between an edit and its new shapes, the last report stays, moved with the edit.

A line inserted above `forward` moves every shape below it one line down: hover and inlay
hints still show them there. An edited line shows nothing until the new report. The new
version's analysis is held back by the longest debounce (10 s; a save then asks for it at
once), so what is shown in between does not depend on the machine's load.
"""

from __future__ import annotations

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from tests.lsp.conftest import SERVER, open_text
from tests.lsp.test_shapes_lsp import SEED, SEED_URI, _start, hover, line_index, named_report, seed_reference_shapes

pytestmark = pytest.mark.slow  # server and shape worker processes


@pytest_lsp.fixture(config=ClientServerConfig(server_command=SERVER))
async def patient_client(lsp_client: LanguageClient):
    yield await _start(lsp_client, {"debounceMs": 10_000})  # the longest allowed
    await lsp_client.shutdown_session()


def _insert(client: LanguageClient, version: int, line: int, character: int, text: str) -> None:
    at = types.Position(line=line, character=character)
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=SEED_URI, version=version),
        content_changes=[types.TextDocumentContentChangePartial(range=types.Range(start=at, end=at), text=text)]))


async def _hints(client: LanguageClient, first: int, last: int) -> dict[int, str]:
    hints = await client.text_document_inlay_hint_async(types.InlayHintParams(
        text_document=types.TextDocumentIdentifier(uri=SEED_URI),
        range=types.Range(start=types.Position(line=first, character=0), end=types.Position(line=last, character=0))))
    return {hint.position.line: hint.label for hint in hints}


async def test_shapes_move_with_an_inserted_line_and_leave_an_edited_one(patient_client):
    text = SEED.read_text()
    open_text(patient_client, SEED_URI, text)  # opening analyses at once, whatever the debounce
    first = await named_report(patient_client, SEED_URI)  # the driver's report, then the batch named
    dims = ", ".join(str(d) for d in seed_reference_shapes()["after_first"])
    shape = f"Tensor[{dims}] float32"
    conv_line = line_index(text, "x = self.pool(F.relu(self.conv1(x)))")
    forward, end = line_index(text, "def forward"), line_index(text, "return x")
    assert shape in await hover(patient_client, SEED_URI, conv_line, 8)
    before = await _hints(patient_client, forward, end)

    # A line above `forward`: everything below moves down one line, shapes with it.
    _insert(patient_client, 2, forward, 0, "    # a comment above forward\n")
    assert shape in await hover(patient_client, SEED_URI, conv_line + 1, 8)
    assert await _hints(patient_client, forward + 1, end + 1) == {line + 1: label for line, label in before.items()}

    # The moved line edited: its shape is gone (the edit may change it); its neighbours keep theirs.
    # (Hovering `x` there still shows what `x` held before it: forward's argument.)
    moved = conv_line + 1
    _insert(patient_client, 3, moved, len(text.splitlines()[conv_line]), "  # edited")
    assert shape not in (await hover(patient_client, SEED_URI, moved, 8) or "")
    hints = await _hints(patient_client, forward + 1, end + 1)
    assert moved not in hints and hints.get(moved + 1) == before[conv_line + 1]

    # The new report (a save asks for it now) covers the edited line again.
    patient_client.text_document_did_save(types.DidSaveTextDocumentParams(
        text_document=types.TextDocumentIdentifier(uri=SEED_URI)))
    await named_report(patient_client, SEED_URI, newer_than=first["plan_hash"], line=moved)
    assert shape in await hover(patient_client, SEED_URI, moved, 8)
