"""Jupyter notebooks: LSP notebook document sync, one analysis per notebook, results per cell.

pygls keeps the notebook and its cells' text in its workspace (`notebookDocument/did*`); this
module keeps, per notebook, the program its Python code cells make (analysis/notebook.py), the
findings of that program, and publishes them on each cell's URI and lines. Any change (an edit
in a cell, cells added, removed or moved) re-analyses the whole notebook after the usual
debounce: a change in cell 2 can change what cell 5 means.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING
from urllib.parse import unquote

from lsprotocol import types
from pygls.uris import to_fs_path

from torch_lsp.analysis.check import Analysis, analyze_source
from torch_lsp.analysis.facts import Span
from torch_lsp.analysis.notebook import NotebookProgram
from torch_lsp.server.convert import to_diagnostic
from torch_lsp.server.documents import AnalysedStore, DocState

if TYPE_CHECKING:
    from torch_lsp.server.app import TorchLanguageServer

log = logging.getLogger(__name__)

# What the server asks clients to sync as notebooks: Jupyter notebooks, their Python cells.
SYNC_OPTIONS = types.NotebookDocumentSyncOptions(
    notebook_selector=[types.NotebookDocumentFilterWithCells(
        notebook="jupyter-notebook", cells=[types.NotebookCellLanguage(language="python")])],
    save=True)


@dataclass
class NotebookState(DocState):
    """A notebook (`version` is the notebook's); its findings are in program coordinates."""

    program: NotebookProgram | None = None  # of `analysis_version`
    cell_uris: tuple[str, ...] = ()  # the program's cells, in order
    published: set[str] = field(default_factory=set)  # cells whose diagnostics are shown

    @property
    def path(self) -> str:
        return to_fs_path(self.uri) or self.uri

    def release(self) -> None:
        super().release()
        self.program = None  # the whole notebook's text (`published` stays: closing clears those cells)

    def cell_index(self, cell_uri: str) -> int | None:
        return self.cell_uris.index(cell_uri) if cell_uri in self.cell_uris else None

    def locate(self, span: Span) -> tuple[str, list[str], Span] | None:
        """A program span -> (cell URI, the cell's lines, the span in the cell)."""
        located = self.program.locate_span(span) if self.program else None
        if located is None:
            return None
        cell, cell_span = located
        return self.cell_uris[cell], self.program.cell_lines(cell), cell_span


class NotebookStore(AnalysedStore):
    states: dict[str, NotebookState]

    def of_cell(self, cell_uri: str) -> NotebookState | None:
        """The open notebook that `cell_uri` is a cell of."""
        notebook = self.server.workspace.get_notebook_document(cell_uri=cell_uri)
        return self.states.get(notebook.uri) if notebook is not None else None

    # -- sync ---------------------------------------------------------------------------------
    def opened(self, uri: str) -> None:
        self.states[uri] = NotebookState(uri, self._notebook_version(uri))
        self.schedule(uri, delay_ms=0)

    def changed(self, uri: str) -> None:
        state = self.states.get(uri)
        if state is None:
            return  # a notebook that was never opened
        state.version = self._notebook_version(uri)
        self.schedule(uri, delay_ms=self.server.settings.debounce_ms)

    def saved(self, uri: str) -> None:
        if uri in self.states:
            self.schedule(uri, delay_ms=0)

    def closed(self, uri: str, cell_uris: list[str]) -> None:
        state = self._forget(uri)
        shapes = getattr(self.server, "shapes", None)
        if shapes is not None:
            shapes.forget(uri)  # its jobs (the program's, its synthesized calls') are dropped
        for cell_uri in set(cell_uris) | (state.published if state else set()):
            self._publish(cell_uri, None, [])

    # -- analysis -----------------------------------------------------------------------------
    def python_cells(self, uri: str) -> list[tuple[str, str]]:
        """(cell URI, text) of the notebook's Python code cells, in notebook order."""
        notebook = self.server.workspace.get_notebook_document(notebook_uri=uri)
        if notebook is None:
            return []
        cells = []
        for cell in notebook.cells:
            if cell.kind != types.NotebookCellKind.Code:
                continue
            document = self.text_document(cell.document)
            if document is not None and (document.language_id or "python") == "python":
                cells.append((cell.document, document.source))
        return cells

    async def ensure_analysis(self, uri: str) -> NotebookState | None:
        """The notebook's state analysed for its current version (None if closed meanwhile)."""
        state = self.states.get(uri)
        if state is None:
            return None
        if state.analysis is not None and state.analysis_version == state.version:
            return state
        version, cells = state.version, self.python_cells(uri)
        selection = self.server.settings.rule_selection()
        program, analysis = await asyncio.get_running_loop().run_in_executor(
            None, _analyse, [text for _, text in cells], state.path, selection)
        if self.states.get(uri) is not state or state.version != version:
            return None  # the notebook moved on while we worked: never publish for an old version
        state.program, state.cell_uris = program, tuple(cell_uri for cell_uri, _ in cells)
        state.analysis, state.analysis_version = analysis, version
        if analysis.ok:
            state.findings["static"], state.findings_version["static"] = analysis.findings, version
            self.publish(state)
            self._notify(state)
        return state

    # -- diagnostics --------------------------------------------------------------------------
    def publish(self, state: NotebookState) -> None:
        """Each cell's diagnostics on its own URI. A cell that does not parse keeps what it
        showed (like a file with a syntax error); cells no longer in the notebook are cleared."""
        program, encoding = state.program, self.server.position_encoding
        if program is None:
            return
        by_cell: dict[int, list[types.Diagnostic]] = {}
        for finding in state.current_findings():
            located = program.locate_span(finding.span)
            if located is None:
                continue
            cell, span = located
            diagnostic = to_diagnostic(replace(finding, span=span), program.cell_lines(cell), state.cell_uris[cell],
                                       self.server.settings.docs_url, encoding, locate_related=state.locate)
            by_cell.setdefault(cell, []).append(diagnostic)
        shown = set()
        for cell, cell_uri in enumerate(state.cell_uris):
            if cell not in program.left_out:
                self._publish(cell_uri, self.cell_version(cell_uri), by_cell.get(cell, []))
            shown.add(cell_uri)
        for gone in state.published - shown:
            self._publish(gone, None, [])
        state.published = shown

    def _publish(self, uri: str, version: int | None, diagnostics: list[types.Diagnostic]) -> None:
        self.server.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, version=version, diagnostics=diagnostics))

    def cell_version(self, cell_uri: str) -> int | None:
        document = self.text_document(cell_uri)
        return document.version if document is not None else None

    def text_document(self, uri: str):
        # pygls keys its documents by unquoted URI; get_text_document would invent one from disk.
        return self.server.workspace.text_documents.get(unquote(uri))

    def _notebook_version(self, uri: str) -> int | None:
        notebook = self.server.workspace.get_notebook_document(notebook_uri=uri)
        return notebook.version if notebook is not None else None


def _analyse(cells: list[str], path: str, selection) -> tuple[NotebookProgram, Analysis]:
    program = NotebookProgram(cells)
    return program, analyze_source(program.source, path, selection)


def register(ls: "TorchLanguageServer") -> None:
    @ls.feature(types.NOTEBOOK_DOCUMENT_DID_OPEN)
    def did_open(ls: "TorchLanguageServer", params: types.DidOpenNotebookDocumentParams) -> None:
        ls.notebooks.opened(params.notebook_document.uri)

    @ls.feature(types.NOTEBOOK_DOCUMENT_DID_CHANGE)
    def did_change(ls: "TorchLanguageServer", params: types.DidChangeNotebookDocumentParams) -> None:
        ls.notebooks.changed(params.notebook_document.uri)

    @ls.feature(types.NOTEBOOK_DOCUMENT_DID_SAVE)
    def did_save(ls: "TorchLanguageServer", params: types.DidSaveNotebookDocumentParams) -> None:
        ls.notebooks.saved(params.notebook_document.uri)

    @ls.feature(types.NOTEBOOK_DOCUMENT_DID_CLOSE)
    def did_close(ls: "TorchLanguageServer", params: types.DidCloseNotebookDocumentParams) -> None:
        ls.notebooks.closed(params.notebook_document.uri, [cell.uri for cell in params.cell_text_documents])
