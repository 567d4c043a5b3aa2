"""Per-document state: text versions, debounced analysis off the event loop, stale results
dropped. Findings are kept per producer ("static", "shapes", ...) and published together."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from torch_lsp.analysis.check import Analysis, analyze_source
from torch_lsp.analysis.facts import Finding
from torch_lsp.analysis.syntax import ParsedModule

if TYPE_CHECKING:
    from torch_lsp.server.app import TorchLanguageServer

log = logging.getLogger(__name__)


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

    def current_findings(self) -> list[Finding]:
        """Findings of every producer that were computed for the current version."""
        return [f for source, found in self.findings.items()
                if self.findings_version.get(source) == self.version for f in found]


# Called after a new static analysis is stored: (server, state) -> None. The shape engine hooks in here.
AnalysisListener = Callable[["TorchLanguageServer", DocState], None]


class DocumentStore:
    def __init__(self, server: "TorchLanguageServer"):
        self.server = server
        self.states: dict[str, DocState] = {}
        self.listeners: list[AnalysisListener] = []

    def __contains__(self, uri: str) -> bool:
        return uri in self.states

    def get(self, uri: str) -> DocState | None:
        return self.states.get(uri)

    def text(self, uri: str) -> str | None:
        if uri not in self.states:
            return None
        return self.server.workspace.get_text_document(uri).source

    def opened(self, uri: str, version: int | None) -> None:
        self.states[uri] = DocState(uri, version)
        self.schedule(uri, delay_ms=0)

    def changed(self, uri: str, version: int | None) -> None:
        state = self.states.setdefault(uri, DocState(uri))
        state.version = version
        self.schedule(uri, delay_ms=self.server.settings.debounce_ms)

    def closed(self, uri: str) -> None:
        state = self.states.pop(uri, None)
        if state and state.pending:
            state.pending.cancel()

    def schedule(self, uri: str, delay_ms: int) -> None:
        state = self.states[uri]
        if state.pending and not state.pending.done():
            state.pending.cancel()
        state.pending = asyncio.ensure_future(self._analyse_later(uri, state.version, delay_ms))

    def reanalyse_all(self) -> None:
        """Settings changed: every open document's findings are out of date."""
        for uri, state in list(self.states.items()):
            state.analysis = None
            self.schedule(uri, delay_ms=0)

    async def _analyse_later(self, uri: str, version: int | None, delay_ms: int) -> None:
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        await self.ensure_analysis(uri)

    async def ensure_analysis(self, uri: str) -> Analysis | None:
        """The analysis of the current version, computing it off the event loop if needed."""
        state = self.states.get(uri)
        if state is None:
            return None
        if state.analysis is not None and state.analysis_version == state.version:
            return state.analysis
        version, source = state.version, self.text(uri)
        if source is None:
            return None
        path = self.server.workspace.get_text_document(uri).path
        selection = self.server.settings.rule_selection()
        analysis = await asyncio.get_running_loop().run_in_executor(None, analyze_source, source, path, selection)
        if self.states.get(uri) is not state or state.version != version:
            return None  # the buffer moved on while we worked: never publish for an old version
        state.analysis, state.analysis_version = analysis, version
        if analysis.ok:
            state.last_good = analysis.parsed
            state.findings["static"], state.findings_version["static"] = analysis.findings, version
            self.server.publish(uri)
            for listener in self.listeners:
                try:
                    listener(self.server, state)
                except Exception:  # noqa: BLE001 - a listener bug must not stop diagnostics
                    log.exception("analysis listener failed for %s", uri)
        # A syntax error publishes nothing: the last diagnostics stay until the code parses again.
        return analysis
