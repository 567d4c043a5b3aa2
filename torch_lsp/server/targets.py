"""What a request on a document analyses, and where its results land.

A file is its own program. A notebook cell is a part of its notebook's program
(analysis/notebook.py): a position in the cell maps into the program, and findings, fixes and
code actions of the program map back to the cells they touch (one versioned edit per cell).
Code actions are written once against `Target` and work in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from lsprotocol import types

from torch_lsp.analysis.facts import Finding, Fix, Span
from torch_lsp.server.convert import DocumentEdits, from_lsp_range, to_workspace_edit

if TYPE_CHECKING:
    from torch_lsp.scaffold import Offer
    from torch_lsp.server.app import TorchLanguageServer
    from torch_lsp.server.notebooks import NotebookState
    from torch_lsp.shapes.report import ShapeReport


@dataclass
class Target:
    """The program behind one request; built by `target_for`."""

    uri: str  # the document the request is about
    version: int | None  # of the program: the file's version, or the notebook's
    source: str  # the analysed program
    path: str
    findings: list[Finding]  # current, in program coordinates
    lines: list[str]  # the requested document's lines
    program_lines: list[str]
    encoding: str
    to_program: Callable[[Span], Span]  # a span of the document -> of the program
    documents_of: Callable[[Fix], "list[DocumentEdits] | None"]  # a program fix -> document edits
    offers: Callable[[Span], list["Offer"]]  # scaffold offers at a program span
    build: Callable[[str, Span], Fix | None]  # a scaffold action's fix, in program coordinates
    shape_report: "ShapeReport | None" = None  # the latest shape report of the program

    def program_span(self, rng: types.Range) -> Span:
        return self.to_program(from_lsp_range(rng, self.lines, self.encoding))

    def program_line(self, line: int) -> str:
        return self.program_lines[line] if 0 <= line < len(self.program_lines) else ""

    def workspace_edit(self, fix: Fix) -> types.WorkspaceEdit | None:
        documents = self.documents_of(fix)
        return to_workspace_edit(documents, self.encoding) if documents else None


async def target_for(ls: "TorchLanguageServer", uri: str) -> Target | None:
    """The analysed program behind `uri`, for its current version; None when there is none
    (unknown document, a syntax error, a cell that is not Python or does not parse)."""
    from torch_lsp import scaffold  # libcst and the templates load on the first code action

    notebook = ls.notebooks.of_cell(uri)
    if notebook is not None:
        state = await ls.notebooks.ensure_analysis(notebook.uri)
        cell = state.cell_index(uri) if state is not None and state.analysis and state.analysis.ok else None
        if cell is None or cell in state.program.left_out:
            return None
        return _cell_target(ls, uri, cell, state, scaffold)
    analysis = await ls.documents.ensure_analysis(uri)
    state = ls.documents.get(uri)
    if analysis is None or not analysis.ok or state is None:
        return None
    path, lines = ls.workspace.get_text_document(uri).path, analysis.parsed.lines
    shapes = ls.shapes.latest(uri)
    return Target(uri, state.version, analysis.source, path, state.current_findings(), lines, lines,
                  ls.position_encoding, to_program=lambda span: span,
                  documents_of=lambda fix: [DocumentEdits(uri, state.version, lines, fix.edits)],
                  offers=lambda span: scaffold.offers(analysis.source, span, path),
                  build=lambda offer, span: scaffold.build(analysis.source, offer, span, path),
                  shape_report=shapes.report if shapes is not None else None)


def _cell_target(ls: "TorchLanguageServer", uri: str, cell: int, state: "NotebookState", scaffold) -> Target:
    """A cell: positions map into the notebook's program, edits back into the cells they touch
    (one versioned edit per cell; none when an edit would span cells)."""
    program, cell_uris = state.program, state.cell_uris
    versions = {cell_uri: ls.notebooks.cell_version(cell_uri) for cell_uri in cell_uris}

    def documents_of(fix: Fix) -> list[DocumentEdits] | None:
        by_cell = program.fix_by_cell(fix)
        return [DocumentEdits(cell_uris[c], versions[cell_uris[c]], program.cell_lines(c), edits)
                for c, edits in sorted(by_cell.items())] if by_cell else None

    shapes = ls.notebook_shapes.latest(state.uri)
    same_program = shapes is not None and shapes.program.source == program.source
    return Target(uri, state.analysis_version, program.source, state.path, state.current_findings(),
                  program.cell_lines(cell), program.lines, ls.position_encoding,
                  to_program=lambda span: program.span_to_program(cell, span), documents_of=documents_of,
                  offers=lambda span: scaffold.offers_in_cell(program, cell, span, state.path),
                  build=lambda offer, span: scaffold.build_in_cell(program, cell, offer, span, state.path),
                  shape_report=shapes.report if same_program else None)
