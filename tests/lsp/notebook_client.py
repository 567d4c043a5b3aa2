"""Driving a notebook through `notebookDocument/*` the way VS Code does, for the tests.

`NotebookSession` keeps the client's side of one open notebook (cells, URIs, versions) and
sends didOpen / didChange (cell text, cells added, removed, moved) / didSave / didClose.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

from lsprotocol import types
from pytest_lsp import LanguageClient

from tests.lsp.conftest import apply_text_edits

_cell_ids = itertools.count()


def record_diagnostics(client: LanguageClient) -> list[types.PublishDiagnosticsParams]:
    """Keep every publishDiagnostics (pytest-lsp keeps only the last per URI, without version)."""
    published: list[types.PublishDiagnosticsParams] = []
    client.protocol.fm.features.pop(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)

    @client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def publish(client: LanguageClient, params: types.PublishDiagnosticsParams):
        published.append(params)
        client.diagnostics[params.uri] = params.diagnostics

    client.published = published
    return published


@dataclass
class Cell:
    kind: str  # "code" | "markdown"
    uri: str
    text: str
    version: int = 1

    def item(self) -> types.TextDocumentItem:
        return types.TextDocumentItem(uri=self.uri, language_id="python" if self.kind == "code" else "markdown",
                                      version=self.version, text=self.text)

    def lsp(self) -> types.NotebookCell:
        kind = types.NotebookCellKind.Code if self.kind == "code" else types.NotebookCellKind.Markup
        return types.NotebookCell(kind=kind, document=self.uri)


class NotebookSession:
    def __init__(self, client: LanguageClient, path: Path, cells: list[tuple[str, str]]):
        self.client = client
        self.path = path
        self.uri = path.as_uri()
        self.version = 1
        self.cells = [self._new_cell(kind, text) for kind, text in cells]

    def _new_cell(self, kind: str, text: str) -> Cell:
        # VS Code's cell URIs: the notebook's path and a per-cell fragment (percent-encoded here
        # on purpose: servers must not trip over it).
        return Cell(kind, f"vscode-notebook-cell:{self.path}#W{next(_cell_ids)}sZmlsZQ%3D%3D", text)

    # -- what the client sends ---------------------------------------------------------------
    def open(self) -> None:
        self.mark = len(self.client.published)
        self.client.notebook_document_did_open(types.DidOpenNotebookDocumentParams(
            notebook_document=types.NotebookDocument(uri=self.uri, notebook_type="jupyter-notebook",
                                                     version=self.version, cells=[c.lsp() for c in self.cells]),
            cell_text_documents=[c.item() for c in self.cells]))

    def edit(self, index: int, text: str) -> None:
        cell = self.cells[index]
        cell.text, cell.version = text, cell.version + 1
        self._change(types.NotebookDocumentCellChanges(text_content=[types.NotebookDocumentCellContentChanges(
            document=types.VersionedTextDocumentIdentifier(uri=cell.uri, version=cell.version),
            changes=[types.TextDocumentContentChangeWholeDocument(text=text)])]))

    def apply(self, edit: types.WorkspaceEdit) -> None:
        """Apply a WorkspaceEdit of the server the way an editor does (refusing stale versions)."""
        for change in edit.document_changes:
            [index] = [i for i, c in enumerate(self.cells) if c.uri == change.text_document.uri]
            assert change.text_document.version == self.cells[index].version, "edit for an old version"
            self.edit(index, apply_text_edits(self.cells[index].text, change.edits))

    def insert(self, index: int, kind: str, text: str) -> Cell:
        cell = self._new_cell(kind, text)
        self.cells.insert(index, cell)
        self._change(types.NotebookDocumentCellChanges(structure=types.NotebookDocumentCellChangeStructure(
            array=types.NotebookCellArrayChange(start=index, delete_count=0, cells=[cell.lsp()]),
            did_open=[cell.item()])))
        return cell

    def remove(self, index: int) -> Cell:
        cell = self.cells.pop(index)
        self._change(types.NotebookDocumentCellChanges(structure=types.NotebookDocumentCellChangeStructure(
            array=types.NotebookCellArrayChange(start=index, delete_count=1),
            did_close=[types.TextDocumentIdentifier(uri=cell.uri)])))
        return cell

    def move(self, source: int, destination: int) -> None:
        """As VS Code reports a move: the affected range is replaced by the same cells reordered."""
        low, high = min(source, destination), max(source, destination)
        self.cells.insert(destination, self.cells.pop(source))
        self._change(types.NotebookDocumentCellChanges(structure=types.NotebookDocumentCellChangeStructure(
            array=types.NotebookCellArrayChange(start=low, delete_count=high - low + 1,
                                                cells=[c.lsp() for c in self.cells[low:high + 1]]))))

    def save(self) -> None:
        self.client.notebook_document_did_save(types.DidSaveNotebookDocumentParams(
            notebook_document=types.NotebookDocumentIdentifier(uri=self.uri)))

    def close(self) -> None:
        self.client.notebook_document_did_close(types.DidCloseNotebookDocumentParams(
            notebook_document=types.NotebookDocumentIdentifier(uri=self.uri),
            cell_text_documents=[types.TextDocumentIdentifier(uri=c.uri) for c in self.cells]))

    def _change(self, cells: types.NotebookDocumentCellChanges) -> None:
        self.version += 1
        self.mark = len(self.client.published)
        self.client.notebook_document_did_change(types.DidChangeNotebookDocumentParams(
            notebook_document=types.VersionedNotebookDocumentIdentifier(uri=self.uri, version=self.version),
            change=types.NotebookDocumentChangeEvent(cells=cells)))

    # -- what the server publishes -----------------------------------------------------------
    def code_cells(self) -> list[Cell]:
        return [c for c in self.cells if c.kind == "code"]

    def as_cells(self) -> list[tuple[str, str]]:
        return [(c.kind, c.text) for c in self.cells]

    async def diagnostics(self, timeout: float = 30.0, but: tuple[int, ...] = ()) -> dict[int, list[types.Diagnostic]]:
        """Wait until every code cell (`but` those) has diagnostics for its current version,
        published after the last change was sent; return them by cell index."""
        wanted = {c.uri: c.version for i, c in enumerate(self.cells) if c.kind == "code" and i not in but}
        found: dict[str, list[types.Diagnostic]] = {}
        deadline = time.monotonic() + timeout
        seen = self.mark
        while time.monotonic() < deadline:
            for params in self.client.published[seen:]:
                if params.uri in wanted and wanted[params.uri] == params.version:
                    found[params.uri] = list(params.diagnostics)
            seen = len(self.client.published)
            if found.keys() == wanted.keys():
                return {i: found[c.uri] for i, c in enumerate(self.cells) if c.uri in found}
            await asyncio.sleep(0.02)
        raise AssertionError(f"no diagnostics for cells {sorted(set(wanted) - set(found))} within {timeout} s")


async def file_diagnostics(client: LanguageClient, uri: str, version: int, timeout: float = 30.0) -> list[types.Diagnostic]:
    """Diagnostics of a text document for `version` (from the recorded notifications)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for params in reversed(client.published):
            if params.uri == uri and params.version == version:
                return list(params.diagnostics)
        await asyncio.sleep(0.02)
    raise AssertionError(f"no diagnostics for {uri} version {version} within {timeout} s")
