"""Per-document state: text versions, debounced analysis off the event loop, stale results
dropped. Findings are kept per producer ("static", "shapes", ...) and published together.

Each edit's line moves are kept (`DocState.moves`), so that results made for an older version
(a shape report) can be shown on the current text (shapes/moved.py). Large documents are
analysed incrementally (analysis/incremental.py): an edit inside one function re-analyses
what it can affect, not the whole file."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from torch_lsp.analysis.check import Analysis, analyze_source
from torch_lsp.analysis.facts import Finding
from torch_lsp.analysis.incremental import IncrementalAnalyzer
from torch_lsp.analysis.line_moves import LineMap
from torch_lsp.analysis.magics import document_as_python
from torch_lsp.analysis.syntax import ParsedModule

if TYPE_CHECKING:
    from torch_lsp.server.app import TorchLanguageServer

log = logging.getLogger(__name__)
# From this many lines on, an edit re-analyses only what it can affect (analysis/incremental.py).
INCREMENTAL_FROM_LINES = 1000
MAX_MOVES = 500  # line moves kept per document (one per edit since the shown shape report)
# While edits keep coming closer together than the debounce, a document is still analysed this
# many debounces after the first edit not analysed: a trailing debounce alone waits for a pause,
# and typing at 100-300 ms an edit pauses 250 ms only one edit in four (the shapes shown were
# 2 s old or more one time in twenty, docs/benchmarks.md). Two, not three: one document typed
# into showed shapes 0.50 s old at p95 against 0.72 s. (A job queued behind other documents'
# gets its document's newest edits analysed when its turn comes: `hurry`.)
MAX_WAIT_DEBOUNCES = 2


def debounce_delay_ms(debounce_ms: int, waited_s: float) -> int:
    """How long to wait before analysing after an edit, `waited_s` after the first edit not
    analysed yet: the debounce, but never past MAX_WAIT_DEBOUNCES of them in all."""
    return max(0, min(debounce_ms, round(MAX_WAIT_DEBOUNCES * debounce_ms - waited_s * 1000)))


@dataclass
class DocState:
    uri: str
    version: int | None = None
    analysis: Analysis | None = None  # for `analysis_version`, may be a parse failure
    analysis_version: int | None = None
    last_good: ParsedModule | None = None  # hover keeps working while the buffer is broken
    findings: dict[str, list[Finding]] = field(default_factory=dict)
    findings_version: dict[str, int | None] = field(default_factory=dict)
    pending: asyncio.Task | None = None
    lines: tuple[str, ...] = ()  # the current version's lines
    moves: list[tuple[int | None, LineMap]] = field(default_factory=list)  # (version, its lines -> the next's)
    analyzer: IncrementalAnalyzer | None = None  # large documents only
    analysing: asyncio.Lock = field(default_factory=asyncio.Lock)  # one analysis at a time (the analyzer's nodes)
    edited_at: float | None = None  # time.monotonic() of the last edit
    waiting_since: float | None = None  # time.monotonic() an analysis was first asked for and not yet started
    finishing: set[asyncio.Task] = field(default_factory=set)  # analyses left to end after a newer edit
    gap_before_s: float | None = None  # seconds between the last edit and the one before it

    def current_findings(self) -> list[Finding]:
        """Findings of every producer that were computed for the current version."""
        return [f for source, found in self.findings.items()
                if self.findings_version.get(source) == self.version for f in found]

    def edited(self, version: int | None, lines: tuple[str, ...]) -> None:
        now = time.monotonic()
        self.gap_before_s = now - self.edited_at if self.edited_at is not None else None
        self.edited_at = now
        self.moves.append((self.version, LineMap.between(self.lines, lines)))
        self.version, self.lines = version, lines
        if len(self.moves) > MAX_MOVES:  # no report for a long time (shapes off): older ones compare texts
            del self.moves[: len(self.moves) - MAX_MOVES]

    def moves_since(self, version: int | None) -> LineMap | None:
        """Where the lines of `version` are now; None when that version is not known (any
        more): then the caller compares texts itself."""
        if version == self.version:
            return LineMap.identity(len(self.lines))
        known = [v for v, _ in self.moves]
        if version is None or version not in known:
            return None
        composed = None
        for _, moves in self.moves[known.index(version):]:
            composed = moves if composed is None else composed.then(moves)
        return composed

    def release(self) -> None:
        """The document was closed: cancel its pending analysis and let go of everything sized
        like the document. Dropping `pending` matters most: a task cancelled while it awaits
        the analysis keeps its CancelledError, whose traceback holds `ensure_analysis`'s frame,
        which holds this state and the text. state -> task -> frame -> state is a cycle that
        only a full garbage collection frees, and an idle server runs none: a closed 14 M
        character file kept its 800,000 lines (~100 MiB) resident."""
        if self.pending is not None:
            self.pending.cancel()
            self.pending = None
        for task in list(self.finishing):
            task.cancel()
        self.finishing.clear()
        # An analysis still running in a thread holds this state until it ends (its result is
        # dropped): it holds nothing big meanwhile.
        self.lines, self.moves = (), []
        self.analysis = self.last_good = self.analyzer = None
        self.findings, self.findings_version = {}, {}

    def forget_moves_before(self, version: int | None) -> None:
        """Results older than `version` will not be shown again: their moves can go."""
        known = [v for v, _ in self.moves]
        if version in known:
            del self.moves[:known.index(version)]


# Called after a new static analysis is stored: (server, state) -> None. The shape engine hooks in here.
AnalysisListener = Callable[["TorchLanguageServer", DocState], None]


class AnalysedStore:
    """Open documents by URI, each analysed again a debounce after it changes; subclasses say
    what a document is and how it is analysed (files here, notebooks in notebooks.py)."""

    def __init__(self, server: "TorchLanguageServer"):
        self.server = server
        self.states: dict[str, DocState] = {}
        self.listeners: list[AnalysisListener] = []
        # Called in a worker thread with (path, Python source, its parse) after a large
        # document's incremental analysis is published, before the next one starts: that parse
        # is valid only until the next version's analysis moves its nodes
        # (analysis/incremental.py), so what else needs it is made from it then (the shape
        # job's plan: server/shapes.py).
        self.turn_listeners: list[Callable[[str, str, ParsedModule], None]] = []

    def __contains__(self, uri: str) -> bool:
        return uri in self.states

    def get(self, uri: str) -> DocState | None:
        return self.states.get(uri)

    def schedule(self, uri: str, delay_ms: int, interrupt: bool = False) -> None:
        """Analyse `uri` after `delay_ms` (a debounce: a later call starts it again, but the
        wait since the first call not yet analysed is bounded, debounce_delay_ms).

        An analysis already running is left to finish (its result is dropped if the version
        moved on) and the next one waits for it (`state.analysing`): cancelling the task would
        not stop its thread, and would let the next analysis run beside it on the same large
        document's analyzer. `interrupt`: cancel it anyway (the settings changed: its result
        would be stored for the current version with the old ones)."""
        state = self.states[uri]
        now = time.monotonic()
        waiting = state.waiting_since is not None  # the pending task has not started analysing
        if state.pending and not state.pending.done():
            if waiting or interrupt:
                state.pending.cancel()
            else:  # kept referenced until it ends (closing the document cancels it too)
                state.finishing.add(state.pending)
                state.pending.add_done_callback(state.finishing.discard)
        if state.waiting_since is None:
            state.waiting_since = now
        delay_ms = debounce_delay_ms(delay_ms, now - state.waiting_since)
        state.pending = asyncio.ensure_future(self._analyse_later(state, uri, delay_ms))

    def hurry(self, uri: str) -> bool:
        """Analyse now an edit still waiting out its debounce (its shape job is about to start:
        server/shapes.py). False when none waits."""
        state = self.states.get(uri)
        if state is None or state.waiting_since is None:
            return False
        self.schedule(uri, delay_ms=0)
        return True

    def reanalyse_all(self) -> None:
        """Settings changed: every open document's findings are out of date."""
        for uri, state in list(self.states.items()):
            state.analysis = None
            state.analyzer = None  # made for the old rule selection
            self.schedule(uri, delay_ms=0, interrupt=True)

    async def _analyse_later(self, state: DocState, uri: str, delay_ms: int) -> None:
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        state.waiting_since = None  # analysing now: the next edit starts a new wait, not cancel this
        await self.ensure_analysis(uri)

    async def ensure_analysis(self, uri: str):
        raise NotImplementedError

    def _forget(self, uri: str) -> DocState | None:
        state = self.states.pop(uri, None)
        if state is not None:
            state.release()
        return state

    def _notify(self, state: DocState) -> None:
        for listener in self.listeners:
            try:
                listener(self.server, state)
            except Exception:  # noqa: BLE001 - a listener bug must not stop diagnostics
                log.exception("analysis listener failed for %s", state.uri)


class DocumentStore(AnalysedStore):
    def text(self, uri: str) -> str | None:
        if uri not in self.states:
            return None
        return self.server.workspace.get_text_document(uri).source

    def opened(self, uri: str, version: int | None) -> None:
        source = self.server.workspace.get_text_document(uri).source
        self.states[uri] = DocState(uri, version, lines=tuple(source.splitlines()))
        self.schedule(uri, delay_ms=0)

    def changed(self, uri: str, version: int | None) -> None:
        state = self.states.setdefault(uri, DocState(uri))
        state.edited(version, tuple(self.server.workspace.get_text_document(uri).source.splitlines()))
        self.schedule(uri, delay_ms=self.server.settings.debounce_ms)

    def closed(self, uri: str) -> None:
        self._forget(uri)

    async def ensure_analysis(self, uri: str) -> Analysis | None:
        """The analysis of the current version, computing it off the event loop if needed."""
        state = self.states.get(uri)
        if state is None:
            return None
        if state.analysis is not None and state.analysis_version == state.version:
            return state.analysis
        loop = asyncio.get_running_loop()
        async with state.analysing:
            if state.analysis is not None and state.analysis_version == state.version:
                return state.analysis  # made while we waited
            version, source = state.version, self.text(uri)
            if source is None:
                return None
            analysis = await loop.run_in_executor(None, self._analyse, state, source)
            if self.states.get(uri) is not state or state.version != version:
                return None  # the buffer moved on while we worked: never publish for an old version
            state.analysis, state.analysis_version = analysis, version
            if not analysis.ok:
                return analysis  # a syntax error publishes nothing: the last diagnostics stay
            state.last_good = analysis.parsed
            state.findings["static"], state.findings_version["static"] = analysis.findings, version
            self.server.publish(uri)
            if state.analyzer is not None and self.turn_listeners:
                # Still holding `analysing`: the next version's analysis, which moves this
                # parse's nodes, waits for the listeners.
                await loop.run_in_executor(None, self._tell_turn_listeners, state, analysis)
        if self.states.get(uri) is state and state.version == version:
            self._notify(state)
        return analysis

    def _tell_turn_listeners(self, state: DocState, analysis: Analysis) -> None:
        path = self.server.workspace.get_text_document(state.uri).path
        if not path:
            return
        for listener in self.turn_listeners:
            try:
                listener(path, analysis.source, analysis.parsed)
            except Exception:  # noqa: BLE001 - a listener bug must not stop the analyses
                log.exception("analysis turn listener failed for %s", state.uri)

    def _analyse(self, state: DocState, source: str) -> Analysis:
        """In a worker thread, one document at a time (`state.analysing`)."""
        path = self.server.workspace.get_text_document(state.uri).path
        source = document_as_python(source, path)  # a notebook sent as one document (jupyterlab-lsp)
        selection = self.server.settings.rule_selection()
        if source.count("\n") < INCREMENTAL_FROM_LINES:
            # Small files: analysed whole in milliseconds, on the shared parse (the shape plan
            # of the same version reuses it).
            state.analyzer = None
            return analyze_source(source, path, selection)
        if state.analyzer is None:
            state.analyzer = IncrementalAnalyzer(path or "<buffer>", selection)
        return state.analyzer.analyze(source)
