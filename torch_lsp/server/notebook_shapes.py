"""Shapes in notebooks: the notebook's program runs through the shape session as one document
(its path, `<notebook>.ipynb`, with the program's text), so a model defined in cell 2 and called
in cell 5 shows its shapes in cell 2. The report is kept per notebook with the program it
describes; shape diagnostics, hover and inlay hints of a cell read it through that program's
map, and only on lines that have not changed since (the same rule as for files).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from torch_lsp.analysis.facts import Position
from torch_lsp.analysis.magics import split_lines
from torch_lsp.server.shapes import FINDINGS_KEY, _newer
from torch_lsp.shapes import view

if TYPE_CHECKING:
    from torch_lsp.analysis.notebook import NotebookProgram
    from torch_lsp.server.app import TorchLanguageServer
    from torch_lsp.server.hover import HoverPlace
    from torch_lsp.server.notebooks import NotebookState
    from torch_lsp.shapes.report import ShapeReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NotebookShapes:
    version: int | None
    program: "NotebookProgram"  # the program the report describes
    cell_uris: tuple[str, ...]
    report: "ShapeReport"

    def at(self, cell_uri: str, lines: list[str], line: int) -> int | None:
        """The program line of a cell's line, if the line is unchanged since the report."""
        return program_line(self.program, self.cell_uris, cell_uri, lines, line)


def program_line(program: "NotebookProgram", cell_uris: tuple[str, ...], cell_uri: str, lines: list[str],
                 line: int) -> int | None:
    """The line of `program` that holds `line` of the cell, if the cell's text there is the
    same as when `program` was built (`lines`: the cell's text now)."""
    cell = cell_uris.index(cell_uri) if cell_uri in cell_uris else None
    if cell is None:
        return None
    then = program.cell_lines(cell)
    if line >= len(then) or line >= len(lines) or then[line] != lines[line]:
        return None
    return program.to_program(cell, Position(line, 0)).line


class NotebookShapeService:
    def __init__(self, ls: "TorchLanguageServer") -> None:
        self.ls = ls
        self._latest: dict[str, NotebookShapes] = {}

    def latest(self, notebook_uri: str) -> NotebookShapes | None:
        return self._latest.get(notebook_uri) if notebook_uri in self.ls.notebooks else None

    def notebook_of(self, uri: str) -> "NotebookState | None":
        """The open notebook `uri` names, or the one it is a cell of."""
        return self.ls.notebooks.get(uri) or self.ls.notebooks.of_cell(uri)

    def latest_of(self, uri: str) -> NotebookShapes | None:
        """The latest shapes of a notebook, given its URI or one of its cells'."""
        state = self.notebook_of(uri)
        return self.latest(state.uri) if state is not None else None

    def summary(self, state: "NotebookState") -> dict:
        """The model summary of a notebook (`torch-lsp.summary`), rows placed as `cell 3:7`."""
        from torch_lsp.shapes.summary import model_summary

        shapes = self.latest(state.uri)
        if shapes is None:
            return {"markdown": "No shape report yet for this notebook: it is still being analysed.", "rows": []}
        place = self.place_label(state, shapes.program, shapes.cell_uris)
        return model_summary(shapes.report, shapes.program.lines, place)

    def place_label(self, state: "NotebookState", program: "NotebookProgram | None" = None,
                    cell_uris=None) -> Callable[[int], str]:
        """`cell 3:7` for a 0-based line of `program` (default: the notebook's current one),
        cells numbered as Jupyter shows them (markdown cells count)."""
        from torch_lsp.analysis.notebook import NotebookFile

        program, cell_uris = program or state.program, state.cell_uris if cell_uris is None else cell_uris
        notebook = self.ls.workspace.get_notebook_document(notebook_uri=state.uri)
        positions = {cell.document: index for index, cell in enumerate(notebook.cells)} if notebook else {}
        return NotebookFile(program, tuple(positions.get(uri, index) for index, uri in enumerate(cell_uris))).place_label

    def on_analysis(self, ls: "TorchLanguageServer", state: "NotebookState") -> None:
        if not ls.settings.execution.enabled:
            return
        if ls.shapes.session is None:  # a notebook analysed before settings were first applied
            ls.shapes.on_settings(ls)
        asyncio.ensure_future(self._analyse(state, state.analysis_version, state.program, state.cell_uris))

    async def _analyse(self, state: "NotebookState", version, program: "NotebookProgram", cell_uris) -> None:
        try:
            await self._run(state, version, program, cell_uris)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - shapes failing must never take static features down
            log.exception("shape analysis failed for %s", state.uri)

    async def _run(self, state: "NotebookState", version, program: "NotebookProgram", cell_uris) -> None:
        from torch_lsp.shapes.session import RunRequest

        session = self.ls.shapes.session
        if session is None:
            return
        # On screen when the editor asked for what it shows of any cell (server/on_screen.py).
        on_screen = any(map(self.ls.on_screen.shows, (state.uri, *cell_uris)))
        request = RunRequest(path=state.path, text=program.source, key=state.uri, observers=self.ls.shapes.observers(),
                             on_screen=on_screen)
        spec = await session.spec_for(request)
        if isinstance(spec, str):
            return
        reports = await session.engine.run(spec, first=request.on_screen)
        if reports is None or not self._show(state, version, program, cell_uris, reports.get(state.path)):
            return
        # Then, as for a file (and `torch-lsp shapes notebook.ipynb`): synthesized calls of the
        # classes the program did not reach, and its DataLoaders' batch dimension by name.
        merged = await session.synthesize(request, reports, spec)
        if merged is not None and merged is not reports:
            self._show(state, version, program, cell_uris, merged.get(state.path))

    def _show(self, state: "NotebookState", version, program: "NotebookProgram", cell_uris, report) -> bool:
        """Show `report` for `version` of the notebook, unless it is gone or a newer version is
        shown already; False then."""
        if report is None or self.ls.notebooks.get(state.uri) is not state:
            return False  # no report, or the notebook was closed meanwhile
        shown = self._latest.get(state.uri)
        if shown is not None and _newer(shown.version, version):
            return False
        self._latest[state.uri] = NotebookShapes(version, program, cell_uris, report)
        for closed in [uri for uri in self._latest if uri not in self.ls.notebooks]:
            self._latest.pop(closed, None)
        if state.version == version:
            lines = program.source.splitlines()
            state.findings[FINDINGS_KEY] = view.findings(report, lines, self.ls.settings.rule_selection())
            state.findings_version[FINDINGS_KEY] = version
            self.ls.notebooks.publish(state)
        self.ls.shapes._refresh_inlay_hints()
        self.ls.shapes.api_docs.prefetch(program.source, state.path)
        for listener in self.ls.shapes.report_listeners:
            listener(state.uri, report)
        return True

    # hover and inlay hints ------------------------------------------------------------------
    def place(self, cell_uri: str, position) -> "HoverPlace | None":
        """Where an LSP position of a cell lies in the notebook's program (None: not a cell of
        an open notebook, or a line changed since the last analysis)."""
        from torch_lsp.server.convert import from_lsp_position
        from torch_lsp.server.hover import HoverPlace

        state = self.ls.notebooks.of_cell(cell_uri)
        if state is None or state.program is None:
            return None
        lines = self._cell_lines(cell_uri)
        pos = from_lsp_position(position, lines, self.ls.position_encoding)
        shapes = self.latest(state.uri)
        line = shapes.at(cell_uri, lines, pos.line) if shapes is not None else None
        if line is not None:
            return HoverPlace(shapes.program.lines, Position(line, pos.col), shapes.report,
                              shapes.program.source, state.path, costs=shapes.report)
        line = program_line(state.program, state.cell_uris, cell_uri, lines, pos.line)
        if line is None:
            return None
        return HoverPlace(state.program.lines, Position(line, pos.col), None, state.program.source, state.path,
                          costs=None)

    def inlay_labels(self, cell_uri: str, first: int, last: int) -> list[tuple[view.InlayLabel, list[str]]]:
        """Inlay labels of a cell's lines first..last, in the cell's coordinates."""
        state = self.ls.notebooks.of_cell(cell_uri)
        shapes = self.latest(state.uri) if state is not None else None
        if shapes is None or cell_uri not in shapes.cell_uris:
            return []
        cell = shapes.cell_uris.index(cell_uri)
        lines = self._cell_lines(cell_uri)
        program = shapes.program
        start = program.to_program(cell, Position(first, 0)).line
        end = program.to_program(cell, Position(last, 0)).line
        labels = []
        for label in view.inlay_labels(shapes.report, program.lines, start, end):
            located = program.locate(label.position)
            if located is None or located[0] != cell or shapes.at(cell_uri, lines, located[1].line) is None:
                continue  # another cell, or a line changed since the report
            labels.append((view.InlayLabel(located[1], label.label, label.tooltip), lines))
        return labels

    def _cell_lines(self, cell_uri: str) -> list[str]:
        document = self.ls.notebooks.text_document(cell_uri)
        return split_lines(document.source) if document is not None else []


def register(ls: "TorchLanguageServer") -> NotebookShapeService:
    service = NotebookShapeService(ls)
    ls.notebook_shapes = service
    ls.notebooks.listeners.append(service.on_analysis)
    return service
