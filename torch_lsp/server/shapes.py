"""Shape analysis in the server: starts the engine, runs it after each static analysis, keeps the
latest report per document, publishes shape diagnostics and asks for fresh inlay hints.

Hover, inlay hints and shape diagnostics read `ShapeService.current()`: the latest report,
moved through the edits made since its version (shapes/moved.py): they never wait on torch.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch_lsp.analysis.magics import document_as_python
from torch_lsp.server.api_docs import ApiDocs
from torch_lsp.shapes import scheduling, view

if TYPE_CHECKING:
    from torch_lsp.server.app import TorchLanguageServer
    from torch_lsp.server.documents import DocState
    from torch_lsp.shapes.engine import ShapeEngine
    from torch_lsp.shapes.report import ShapeReport
    from torch_lsp.shapes.session import ShapeSession

log = logging.getLogger(__name__)
# The producer key of shape findings a store keeps per version (notebooks: notebook_shapes.py).
# A file's shape diagnostics are not kept there: they are the latest report's, moved to the
# current text when published (`ShapeService.current_findings`, diagnostics.py).
FINDINGS_KEY = "shapes"


@dataclass(frozen=True)
class DocumentShapes:
    version: int | None
    source_lines: tuple[str, ...]  # the text the report describes
    report: "ShapeReport"

    def matches(self, lines: list[str], line: int) -> bool:
        """Is `line` unchanged since the report? (Code lenses read the report's extras, whose
        lines are not moved through edits: they show only where the line is still the same.)"""
        return line < len(self.source_lines) and line < len(lines) and self.source_lines[line] == lines[line]


class ShapeService:
    def __init__(self, ls: "TorchLanguageServer") -> None:
        self.ls = ls
        self.session: "ShapeSession | None" = None  # built when execution is first on
        self.api_docs = ApiDocs()
        self._latest: dict[str, DocumentShapes] = {}
        # The latest reports with the cost observers' extras: those of a document typed into
        # are measured once it pauses (scheduling.costs_now); until then the last ones stay.
        self._costs: dict[str, DocumentShapes] = {}
        # uri -> (the DocumentShapes moved, to which version, that version's lines, report, findings)
        self._moved: dict[str, tuple] = {}
        self._tasks: dict[str, set[asyncio.Task]] = {}
        # Files each document's last job ran (its driver, the files defining its classes): an
        # edit of one of them re-runs the document (editing train.py updates model.py's shapes).
        self._inputs: dict[str, set[str]] = {}
        self._watching = False
        # Observers of new reports (tests and benchmarks wait on this; the server needs none).
        self.report_listeners: list = []
        self.jobs_sent = 0  # for torch-lsp.serverInfo: did any code of the user's run?
        self.jobs_without_costs = 0  # ... and how many of those left the cost observers out (typing)

    @property
    def engine(self) -> "ShapeEngine | None":
        return self.session.engine if self.session is not None and self.session.started else None

    # lifecycle ------------------------------------------------------------------------------

    def on_settings(self, ls: "TorchLanguageServer") -> None:
        if ls.settings.execution.enabled:
            if self.session is None:
                from torch_lsp.shapes.session import ShapeSession

                # Drivers chosen before the first scan ends are confirmed after it (`_confirm_driver`).
                self.session = ShapeSession(ls.root_path, lambda: ls.settings, provisional_drivers=True)
                self.session.on_next_job = self._next_job
                # The workspace index is scanned off the event loop, while torch imports.
                asyncio.get_running_loop().run_in_executor(None, self.session.index)
            # One worker per server: started now, so torch imports while the user opens a file;
            # restarted only if the interpreter setting changed.
            asyncio.ensure_future(self.session.start())
            if not self._watching:
                self._watching = True
                asyncio.ensure_future(self._watch_python_files())
        else:
            from torch_lsp.shapes import early_start

            early_start.discard()  # started with `initialize`, before the settings said no
            if self.session is not None:
                session, self.session = self.session, None
                asyncio.ensure_future(session.close())
                self._forget_all()

    def shutdown(self) -> None:
        from torch_lsp.shapes import early_start

        early_start.discard()
        self.api_docs.shutdown()
        if self.session is not None:
            self.session.terminate()

    def latest(self, uri: str) -> DocumentShapes | None:
        return self._latest.get(uri) if uri in self.ls.documents else None

    def latest_costs(self, uri: str) -> DocumentShapes | None:
        """The latest report with FLOPs, memory and the module tree (code lenses, the summary):
        while the document is typed into, older than `latest`."""
        return self._costs.get(uri) if uri in self.ls.documents else None

    def costs_at(self, uri: str, lines: list[str], line: int) -> "ShapeReport | None":
        """The report whose costs describe `line` of the current text: the latest measured,
        where that line is as it was then (its extras' lines are not moved through edits)."""
        costs = self.latest_costs(uri)
        return costs.report if costs is not None and costs.matches(lines, line) else None

    def current(self, uri: str) -> "ShapeReport | None":
        """The latest report as it applies to the document's current text: lines added or
        removed above a result move it, an edited line loses its results."""
        moved = self._current(uri)
        return moved[3] if moved is not None else None

    def current_findings(self, uri: str) -> list:
        """Shape diagnostics of `current()` (selected and suppressed like static ones)."""
        moved = self._current(uri)
        return moved[4] if moved is not None else []

    def _current(self, uri: str):
        shapes, state = self.latest(uri), self.ls.documents.get(uri)
        if shapes is None or state is None:
            return None
        cached = self._moved.get(uri)
        if cached is not None and cached[0] is shapes and cached[1] == state.version and cached[2] is state.lines:
            return cached
        if shapes.source_lines == state.lines:
            report = shapes.report
        else:
            from torch_lsp.analysis.line_moves import LineMap
            from torch_lsp.shapes.moved import moved_report

            moves = state.moves_since(shapes.version) if shapes.version is not None else None
            report = moved_report(shapes.report, moves or LineMap.between(shapes.source_lines, state.lines))
        findings = view.findings(report, list(state.lines), self.ls.settings.rule_selection())
        self._moved[uri] = (shapes, state.version, state.lines, report, findings)
        return self._moved[uri]

    # analysis -------------------------------------------------------------------------------

    def prepare(self, path: str, source: str, parsed) -> None:
        """In a large document's static analysis (a worker thread): its version's shape plan
        from that analysis's parse (`ShapeSession.prepare`)."""
        session = self.session
        if session is not None and self.ls.settings.execution.enabled:
            session.prepare(path, source, parsed)

    def on_analysis(self, ls: "TorchLanguageServer", state: "DocState") -> None:
        if ls.settings_known.is_set() and not ls.settings.execution.enabled:
            return
        # Older versions' jobs are not cancelled here: the worker decides whether a running one
        # finishes first (shapes/scheduling.py), and its results are shown until newer ones come.
        # The documents that ran this one re-run too, once its text is indexed.
        self._schedule(state.uri, state.version, analysed=True)

    def _next_job(self, key: str) -> None:
        """The worker starts this document's queued job next: edits made since that job's
        version that still wait out their debounce are analysed now, so that the job of the
        newest text takes the queued one's place before it starts."""
        if key in self.ls.documents:
            self.ls.documents.hurry(key)

    def _schedule(self, uri: str, version: int | None, analysed: bool = False) -> None:
        self._track(uri, self._analyse(uri, version, analysed))

    async def _costs_when_quiet(self, uri: str, version: int | None) -> None:
        """`version` ran without the cost observers (typed into): once the document has been
        quiet a while at that version, run it again with them."""
        await asyncio.sleep(scheduling.COSTS_WHEN_QUIET_S)
        state, measured = self.ls.documents.get(uri), self._costs.get(uri)
        if state is None or state.version != version or (measured is not None and measured.version == version):
            return  # typed on (that version's job takes over), closed, or measured meanwhile
        await self._analyse(uri, version, costs=True)

    def _track(self, uri: str, work) -> None:
        """Run `work` as one of the document's tasks (cancelled when it closes)."""
        task = asyncio.ensure_future(work)
        tasks = self._tasks.setdefault(uri, set())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _rerun_dependents(self, paths: set[str], changed: str | None = None, at: set[str] = frozenset()) -> None:
        """Re-run the open documents whose last job ran one of `paths`, and those whose file is
        one of `at` (resolved paths); not `changed` itself."""
        for uri, state in list(self.ls.documents.states.items()):
            if uri == changed:
                continue
            path = self.ls.workspace.get_text_document(uri).path if at else None
            if self._inputs.get(uri, set()) & paths or (path and os.path.realpath(path) in at):
                self._schedule(uri, state.version)

    async def _analyse(self, uri: str, version: int | None, analysed: bool = False, costs: bool | None = None) -> None:
        try:
            await self._analyse_version(uri, version, analysed, costs)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - shapes failing must never take static features down
            log.exception("shape analysis failed for %s", uri)

    async def _analyse_version(self, uri: str, version: int | None, analysed: bool = False,
                               costs: bool | None = None) -> None:
        """`analysed`: the document's static analysis just ran: its text is indexed for the
        other documents' choice of driver, and those it may concern re-run. `costs`: run the
        cost observers (None: unless the document is typed into, scheduling.costs_now)."""
        from torch_lsp.shapes.session import RunRequest

        settings = await self.ls.effective_settings()  # the client's configuration is in by now
        if not settings.execution.enabled or uri not in self.ls.documents:
            return
        if self.session is None:  # settings were applied without the listeners (or not at all)
            self.on_settings(self.ls)
        document = self.ls.workspace.get_text_document(uri)
        path = document.path or uri
        source = document_as_python(document.source, path)  # a notebook sent as one document
        session = self.session
        if session is None:
            return
        state = self.ls.documents.get(uri)
        if state is None or (state.analysis is not None and not state.analysis.ok):
            return  # the buffer does not parse now: the last shapes stay (static analysis says why)
        if analysed:
            # Indexed before the documents it concerns re-run: their jobs choose drivers with it.
            concerned = set()
            if document.path:
                session.text_changed(path, source)  # noted here, in the order the editor said it
                concerned = await asyncio.get_running_loop().run_in_executor(None, session.index_changes, path)
            self._rerun_dependents({path}, changed=uri, at=concerned)
        observers = self.observers()
        measured = bool(observers) and (costs if costs is not None else scheduling.costs_now(state.gap_before_s))
        request = RunRequest(path=path, text=source, key=uri, open_documents=self._open_documents(uri),
                             observers=observers if measured else [], on_screen=self.ls.on_screen.shows(uri))
        self.jobs_sent += 1
        self.jobs_without_costs += bool(observers) and not measured
        # The driver's reports are shown as soon as they come; then those with the synthesized
        # calls of the classes it did not reach and its DataLoaders' batch dimension named.
        reports = await session.analyse(request, on_driver=lambda first: self._show(uri, version, path, source, first,
                                                                                    measured))
        if reports is not None:
            self._show(uri, version, path, source, reports, measured)
            if observers and not measured:
                self._track(uri, self._costs_when_quiet(uri, version))
            if session.chose_before_scan(uri):
                self._track(uri, self._confirm_driver(session, uri, version, request))

    async def _confirm_driver(self, session: "ShapeSession", uri: str, version: int | None, request) -> None:
        """The job was made while the workspace was first scanned (its driver taken from the files
        that may import the document's classes, or the document run alone): once the scan ends,
        run the document again if the whole index makes another job of it, another driver or
        more files recorded (and the document is still at this version)."""
        try:
            confirmed = await session.driver_confirmed(request)
        except Exception:  # noqa: BLE001 - the shapes shown stay; the next edit's job chooses again
            log.exception("checking the driver of %s failed", uri)
            return
        state = self.ls.documents.get(uri)
        if not confirmed and state is not None and state.version == version and self.session is session:
            self._schedule(uri, version)

    def _show(self, uri: str, version: int | None, path: str, source: str, reports: dict, measured: bool = True) -> bool:
        """Keep and publish `version`'s reports; False when the document was closed meanwhile or
        a newer version's results are already shown. `measured`: the job ran the cost
        observers (its report's costs replace the last ones)."""
        state = self.ls.documents.get(uri)
        if state is None:
            return False
        run = self.session.runs.get(uri) if self.session is not None else None
        self._inputs[uri] = set(reports) | ({run.driver} if run is not None else set())
        report = reports.get(path) or next(iter(reports.values()), None)
        if report is None:
            return False
        lines = tuple(source.splitlines())
        costs = self._costs.get(uri)
        if measured and (costs is None or not _newer(costs.version, version)):
            self._costs[uri] = DocumentShapes(version, lines, report)
        shown = self._latest.get(uri)
        if shown is not None and _newer(shown.version, version):
            return False
        self._latest[uri] = DocumentShapes(version, lines, report)
        state.forget_moves_before(version)  # older reports will not be shown again
        for closed in [u for u in self._latest if u not in self.ls.documents]:
            self.forget(closed)  # documents closed since: their reports are never read again
        self.ls.publish(uri)  # its shape diagnostics, moved to the current text (diagnostics.py)
        self._refresh_inlay_hints()
        self._refresh_code_lenses()
        # A regex pass over the file (8 ms at 5,000 lines): in a thread, not between two requests.
        asyncio.get_running_loop().run_in_executor(None, self.api_docs.prefetch, source, path)
        for listener in self.report_listeners:
            listener(uri, report)
        return True

    def observers(self) -> list[str]:
        """The cost observers (summary tree, FLOPs, memory) unless `shapes.costs` is off."""
        from torch_lsp.shapes.observers import COST

        return list(COST) if self.ls.settings.shapes.costs else []

    def _open_documents(self, uri: str) -> dict[str, str]:
        """Unsaved text of the other open documents: a job imports these, not the disk."""
        texts = {}
        for other in self.ls.documents.states:
            if other != uri:
                document = self.ls.workspace.get_text_document(other)
                if document.path:
                    texts[document.path] = document.source
        return texts

    # files outside the editor ------------------------------------------------------------------

    async def _watch_python_files(self) -> None:
        """Ask the client to tell us about `.py` files changing on disk (git checkout, a save
        from another tool), when it can register watchers dynamically."""
        from lsprotocol import types

        workspace = self.ls.client_capabilities.workspace
        watched = workspace.did_change_watched_files if workspace else None
        if watched is None or not watched.dynamic_registration:
            return
        options = types.DidChangeWatchedFilesRegistrationOptions(
            watchers=[types.FileSystemWatcher(glob_pattern="**/*.py")])
        try:
            await self.ls.client_register_capability_async(types.RegistrationParams(registrations=[
                types.Registration(id="torch-lsp-python-files", method=types.WORKSPACE_DID_CHANGE_WATCHED_FILES,
                                   register_options=options)]))
        except Exception as error:  # noqa: BLE001 - a client that refuses keeps the editor's own buffers
            log.warning("could not register a file watcher: %r", error)

    def files_changed(self, paths: list[str]) -> None:
        """Files changed on disk: the index re-reads them (open buffers win: they are indexed
        when analysed), cached reports are dropped, and the documents that ran them re-run."""
        session = self.session
        if session is None:
            return
        open_paths = {self.ls.workspace.get_text_document(u).path for u in self.ls.documents.states}
        for path in paths:
            if path not in open_paths:
                session.text_changed(path, None)
        self._index_changes_soon(session)
        session.files_changed()
        self._rerun_dependents(set(paths))

    def closed(self, uri: str, path: str | None) -> None:
        """A closed buffer may not have been saved: the disk's text counts again."""
        self._inputs.pop(uri, None)
        # Its report and the report's moved copy hold the document's lines (two tuples of one
        # string per line): not kept until some other document's report comes (see _show).
        self._latest.pop(uri, None)
        self._costs.pop(uri, None)
        self._moved.pop(uri, None)
        if self.session is not None and path:
            self.session.text_changed(path, None)
            self._index_changes_soon(self.session)

    @staticmethod
    def _index_changes_soon(session: "ShapeSession") -> None:
        """Index noted disk texts in the pool: reading and parsing a file, or waiting for the
        first scan's lock (seconds on a large workspace), never on the event loop. A job's
        choice of driver indexes what is still noted first anyway."""
        future = asyncio.get_running_loop().run_in_executor(None, session.index_changes)
        future.add_done_callback(_log_failure)

    def _refresh_inlay_hints(self) -> None:
        workspace = self.ls.client_capabilities.workspace
        inlay = workspace.inlay_hint if workspace else None
        if inlay is not None and inlay.refresh_support:
            self.ls.workspace_inlay_hint_refresh(None)

    def _refresh_code_lenses(self) -> None:
        """The lenses above module classes and training loops come from the report."""
        workspace = self.ls.client_capabilities.workspace
        lens = workspace.code_lens if workspace else None
        if lens is not None and lens.refresh_support and self.ls.settings.shapes.costs:
            self.ls.workspace_code_lens_refresh(None)

    def _forget_all(self) -> None:
        uris = list(self._latest)
        self._latest.clear()
        self._costs.clear()
        self._moved.clear()
        for uri in uris:
            if uri in self.ls.documents:
                self.ls.publish(uri)

    def forget(self, uri: str) -> None:
        self._latest.pop(uri, None)
        self._costs.pop(uri, None)
        self._moved.pop(uri, None)
        for task in self._tasks.pop(uri, set()):
            task.cancel()
        if self.session is not None:
            self.session.cancel(uri)


def _newer(a: int | None, b: int | None) -> bool:
    """Is version `a` newer than `b`? (Clients may send no versions at all.)"""
    return a is not None and b is not None and a > b


def _log_failure(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("indexing a changed file failed", exc_info=future.exception())


def register(ls: "TorchLanguageServer") -> ShapeService:
    from lsprotocol import types
    from pygls.uris import to_fs_path

    service = ShapeService(ls)
    ls.shapes = service
    ls.settings_listeners.append(service.on_settings)
    ls.shutdown_hooks.append(service.shutdown)
    ls.documents.listeners.append(service.on_analysis)
    ls.documents.turn_listeners.append(service.prepare)

    @ls.feature(types.WORKSPACE_DID_CHANGE_WATCHED_FILES)
    def did_change_watched_files(ls, params: types.DidChangeWatchedFilesParams):
        paths = [p for p in (to_fs_path(change.uri) for change in params.changes) if p and p.endswith(".py")]
        if paths:
            service.files_changed(paths)

    @ls.command("torch-lsp.shapeReport")
    def shape_report(ls, *args):
        """The latest shape report of a document (for tests, benchmarks and curious users)."""
        uri = args[0] if args and isinstance(args[0], str) else None
        shapes = service.latest(uri) if uri else None
        if shapes is None and uri:  # a notebook, or one of its cells (server/notebook_shapes.py)
            shapes = ls.notebook_shapes.latest_of(uri)
        return shapes.report.to_dict() if shapes else None

    @ls.command("torch-lsp.shapesShown")
    def shapes_shown(ls, *args):
        """Which version the shapes shown for a document come from, and the document's own
        version (benchmarks: how old are the shapes on screen while typing)."""
        uri = args[0] if args and isinstance(args[0], str) else None
        shapes, state = (service.latest(uri), ls.documents.get(uri)) if uri else (None, None)
        return {"reportVersion": shapes.version if shapes else None,
                "documentVersion": state.version if state else None}

    @ls.command("torch-lsp.summary")
    async def summary(ls, *args):
        """The model summary of a document, from its latest shape report: `{markdown, rows}`.
        Arguments: `[uri, {depth?, show?}]` (`show`: open it beside the code, for code lenses)."""
        from torch_lsp.server.cost import options_of, show_markdown
        from torch_lsp.shapes.summary import DEFAULT_DEPTH, model_summary

        uri = args[0] if args and isinstance(args[0], str) else None
        notebook = ls.notebook_shapes.notebook_of(uri) if uri and uri not in ls.documents else None
        if uri is None or (uri not in ls.documents and notebook is None):
            return {"markdown": "Open the file first: the summary comes from its shape analysis.", "rows": []}
        if not ls.settings.execution.enabled:
            return {"markdown": "Shape analysis is off (execution.enabled = false): no summary.", "rows": []}
        if notebook is not None:
            return ls.notebook_shapes.summary(notebook)
        # The latest report with the module tree, with the text it describes (typed into: the
        # last version measured), else the latest report moved to the current text.
        costs = service.latest_costs(uri)
        report = costs.report if costs is not None else service.current(uri)
        if report is None:
            return {"markdown": "No shape report yet for this file: it is still being analysed.", "rows": []}
        lines = list(costs.source_lines) if costs is not None else lines_of(ls, uri)
        options = options_of(args)
        depth = options.get("depth")
        depth = depth if isinstance(depth, int) and not isinstance(depth, bool) and depth >= 0 else DEFAULT_DEPTH
        result = model_summary(report, lines, depth=depth)
        if options.get("show"):
            await show_markdown(ls, "summary", uri, result["markdown"])
        return result

    return service


def lines_of(ls: "TorchLanguageServer", uri: str) -> list[str]:
    return _split_lines(ls.workspace.get_text_document(uri).source)


@functools.lru_cache(maxsize=8)
def _split_lines(source: str) -> list[str]:
    # Hover and inlay hints ask for every request; the text changes far less often. Callers
    # must not mutate the list.
    return source.splitlines()
