"""Shape analysis in the server: starts the engine, runs it after each static analysis, keeps the
latest report per document, publishes shape diagnostics and asks for fresh inlay hints.

Hover and inlay hints read `ShapeService.latest()`: they never wait on torch.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch_lsp.server.api_docs import ApiDocs
from torch_lsp.shapes import view

if TYPE_CHECKING:
    from torch_lsp.server.app import TorchLanguageServer
    from torch_lsp.server.documents import DocState
    from torch_lsp.shapes.engine import ShapeEngine
    from torch_lsp.shapes.report import ShapeReport

log = logging.getLogger(__name__)
FINDINGS_KEY = "shapes"


@dataclass(frozen=True)
class DocumentShapes:
    version: int | None
    source_lines: tuple[str, ...]  # the text the report describes
    report: "ShapeReport"

    def matches(self, lines: list[str], line: int) -> bool:
        """Is `line` unchanged since the report? (A stale report is still right there.)"""
        return line < len(self.source_lines) and line < len(lines) and self.source_lines[line] == lines[line]


class ShapeService:
    def __init__(self, ls: "TorchLanguageServer") -> None:
        self.ls = ls
        self.engine: "ShapeEngine | None" = None  # imported and built when execution is on
        self.api_docs = ApiDocs()
        self._latest: dict[str, DocumentShapes] = {}
        self._tasks: dict[str, asyncio.Task] = {}
        # Observers of new reports (tests and benchmarks wait on this; the server needs none).
        self.report_listeners: list = []

    # lifecycle ------------------------------------------------------------------------------

    def on_settings(self, ls: "TorchLanguageServer") -> None:
        if ls.settings.execution.enabled and self.engine is None:
            from torch_lsp.shapes.engine import ShapeEngine

            self.engine = ShapeEngine()
            asyncio.ensure_future(self.engine.start())  # torch imports while the user opens a file
        elif not ls.settings.execution.enabled and self.engine is not None:
            engine, self.engine = self.engine, None
            asyncio.ensure_future(engine.close())
            self._forget_all()

    def shutdown(self) -> None:
        self.api_docs.shutdown()
        if self.engine is not None:
            self.engine.terminate()

    def latest(self, uri: str) -> DocumentShapes | None:
        return self._latest.get(uri) if uri in self.ls.documents else None

    # analysis -------------------------------------------------------------------------------

    def on_analysis(self, ls: "TorchLanguageServer", state: "DocState") -> None:
        if not ls.settings.execution.enabled:
            return
        if self.engine is None:  # a document analysed before settings were first applied
            self.on_settings(ls)
        previous = self._tasks.get(state.uri)
        if previous is not None and not previous.done():
            previous.cancel()
        self._tasks[state.uri] = asyncio.ensure_future(self._analyse(state.uri, state.version))

    async def _analyse(self, uri: str, version: int | None) -> None:
        try:
            await self._analyse_version(uri, version)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - shapes failing must never take static features down
            log.exception("shape analysis failed for %s", uri)

    async def _analyse_version(self, uri: str, version: int | None) -> None:
        from torch_lsp.analysis.plan import build_plan
        from torch_lsp.shapes.engine import JobSettings

        document = self.ls.workspace.get_text_document(uri)
        source, path = document.source, document.path or uri
        plan = await asyncio.get_running_loop().run_in_executor(None, build_plan, source, path)
        engine = self.engine
        if plan.error or engine is None:
            return
        execution = self.ls.settings.execution
        settings = JobSettings(execution.device, execution.timeout, execution.memory_mb)
        report = await engine.analyse(uri, plan, settings)
        state = self.ls.documents.get(uri)
        if report is None or state is None or state.version != version:
            return  # superseded: a newer version is on its way
        self._latest[uri] = DocumentShapes(version, tuple(source.splitlines()), report)
        for closed in [u for u in self._latest if u not in self.ls.documents]:
            self.forget(closed)  # documents closed since: their reports are never read again
        state.findings[FINDINGS_KEY] = view.findings(report, source.splitlines(), self.ls.settings.rule_selection())
        state.findings_version[FINDINGS_KEY] = version
        self.ls.publish(uri)
        self._refresh_inlay_hints()
        self.api_docs.prefetch(source, path)
        for listener in self.report_listeners:
            listener(uri, report)

    def _refresh_inlay_hints(self) -> None:
        workspace = self.ls.client_capabilities.workspace
        inlay = workspace.inlay_hint if workspace else None
        if inlay is not None and inlay.refresh_support:
            self.ls.workspace_inlay_hint_refresh(None)

    def _forget_all(self) -> None:
        for uri in list(self._latest):
            state = self.ls.documents.get(uri)
            if state is not None:
                state.findings.pop(FINDINGS_KEY, None)
                self.ls.publish(uri)
        self._latest.clear()

    def forget(self, uri: str) -> None:
        self._latest.pop(uri, None)
        task = self._tasks.pop(uri, None)
        if task is not None:
            task.cancel()


def register(ls: "TorchLanguageServer") -> ShapeService:
    service = ShapeService(ls)
    ls.shapes = service
    ls.settings_listeners.append(service.on_settings)
    ls.shutdown_hooks.append(service.shutdown)
    ls.documents.listeners.append(service.on_analysis)

    @ls.command("torch-lsp.shapeReport")
    def shape_report(ls, *args):
        """The latest shape report of a document (for tests, benchmarks and curious users)."""
        uri = args[0] if args and isinstance(args[0], str) else None
        shapes = service.latest(uri) if uri else None
        return shapes.report.model_dump(mode="json") if shapes else None

    @ls.command("torch-lsp.summary")
    def summary(ls, *args):
        """The model summary of a document, from its latest shape report: `{markdown, rows}`."""
        from torch_lsp.shapes.summary import model_summary

        uri = args[0] if args and isinstance(args[0], str) else None
        if uri is None or uri not in ls.documents:
            return {"markdown": "Open the file first: the summary comes from its shape analysis.", "rows": []}
        if not ls.settings.execution.enabled:
            return {"markdown": "Shape analysis is off (execution.enabled = false): no summary.", "rows": []}
        shapes = service.latest(uri)
        if shapes is None:
            return {"markdown": "No shape report yet for this file: it is still being analysed.", "rows": []}
        return model_summary(shapes.report, lines_of(ls, uri))

    return service


def lines_of(ls: "TorchLanguageServer", uri: str) -> list[str]:
    return _split_lines(ls.workspace.get_text_document(uri).source)


@functools.lru_cache(maxsize=8)
def _split_lines(source: str) -> list[str]:
    # Hover and inlay hints ask for every request; the text changes far less often. Callers
    # must not mutate the list.
    return source.splitlines()
