"""The language server: lifecycle, settings, document sync, and registration of each feature.

Feature modules (diagnostics, actions, hover, inlay hints, commands, lenses) each expose
`register(ls)`; this module wires them and owns nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any, BinaryIO, Callable

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from torch_lsp import __version__
from torch_lsp.server import (actions, commands, cost, diagnostics, hover, inlay, lenses, notebook_shapes,
                              notebooks, sandbox_notice, shapes)
from torch_lsp.server.documents import DocumentStore
from torch_lsp.server.latency import RequestLatency
from torch_lsp.server.notebooks import NotebookStore
from torch_lsp.server.on_screen import OnScreen
from torch_lsp.server.protocol import TorchProtocol

log = logging.getLogger(__name__)

SERVER_INFO_COMMAND = "torch-lsp.serverInfo"
SECTION = "torchLsp"  # the settings section, as in config.SECTION (not imported: see settings)
# The process ends this long after `exit` or the end of its input at the latest, whatever the
# shutdown hooks (worker, training runs) are still doing.
FINISH_WITHIN_S = 0.7
# How long code execution waits for the client's configuration (asked for on `initialized`,
# itself bounded by CONFIGURATION_TIMEOUT_S).
SETTINGS_WAIT_S = 10.0
CONFIGURATION_TIMEOUT_S = 5.0


def _trim_heap() -> None:
    """Give freed heap pages back to the system (glibc): memory freed by other threads stays in
    their malloc arenas otherwise, so a few huge documents raised RSS for good."""
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc


def _tune_allocator() -> None:
    """Two glibc defaults that cost a long-running, threaded server memory for good:
    - the mmap threshold rises (up to 32 MB) after a large block is freed, so a few
      multi-megabyte messages (a big file opened, pasted, closed) then live on the heap; a fixed
      1 MiB threshold keeps each such block in its own mapping, returned when freed;
    - each analysis thread gets its own malloc arena (up to 8 per core), and what one frees
      stays in that arena: two arenas for the event loop and the four analysis threads cut the
      server's resident memory by ~5 MB in a 30-document session (docs/benchmarks.md). The
      allocations that matter are the interpreter's, serialised by the GIL anyway."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(ctypes.c_int(-3), ctypes.c_int(1 << 20))  # M_MMAP_THRESHOLD
        libc.mallopt(ctypes.c_int(-8), ctypes.c_int(2))  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc: nothing to adjust


class TorchLanguageServer(LanguageServer):
    def __init__(self) -> None:
        _tune_allocator()
        super().__init__("torch-lsp", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
                         notebook_document_sync=notebooks.SYNC_OPTIONS, protocol_cls=TorchProtocol, max_workers=4)
        self._settings = None  # merged on `initialize` and `initialized` (apply_settings)
        self._default_settings = None  # until then; built on first use
        self.documents = DocumentStore(self)
        self.notebooks = NotebookStore(self)
        self.init_options: dict[str, Any] | None = None
        self.pyproject_settings: dict[str, Any] | None = None
        self.client_settings: dict[str, Any] | None = None
        # Callbacks run when settings change and on shutdown (the shape engine, training runs).
        self.settings_listeners: list[Callable[["TorchLanguageServer"], None]] = []
        self.shutdown_hooks: list[Callable[[], None]] = []
        self.shutdown_hooks_ran = False
        self.sandbox_reported = False
        self.latency = RequestLatency()  # each request, read to answered (server/stdio.py)
        self.on_screen = OnScreen()  # documents the editor shows: their shape jobs go first
        self.warned: set[str] = set()  # settings warnings already shown: each is shown once
        # Set once the client's configuration has been asked for (answered, refused or timed
        # out): nothing of the user's code runs before (see effective_settings).
        self.settings_known = asyncio.Event()
        self._finishing = threading.Lock()
        self._trim: asyncio.TimerHandle | None = None

    @property
    def settings(self):
        if self._settings is not None:
            return self._settings
        # Before `initialized` merges the client's settings: the defaults, never stored in
        # `_settings` (an analysis thread storing them could overwrite the merged ones).
        if self._default_settings is None:
            from torch_lsp.config import Settings

            self._default_settings = Settings()
        return self._default_settings

    async def effective_settings(self):
        """The settings, once every layer is known: the project's and the editor's start-up
        options from `initialize`, and the client's live configuration, awaited once (bounded:
        a client that never sends `initialized` gets the layers known so far)."""
        try:
            await asyncio.wait_for(self.settings_known.wait(), SETTINGS_WAIT_S)
        except asyncio.TimeoutError:
            self.settings_known.set()
        return self.settings

    @property
    def position_encoding(self) -> str:
        capabilities = getattr(self.protocol, "server_capabilities", None)
        encoding = getattr(capabilities, "position_encoding", None) if capabilities else None
        return str(encoding.value if hasattr(encoding, "value") else encoding or "utf-16")

    @property
    def root_path(self) -> Path | None:
        root = self.workspace.root_uri if self.protocol._workspace is not None else None
        path = to_fs_path(root) if root else None
        return Path(path) if path else None

    def start_io(self, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
        """pygls' stdio loop, fed by a thread that reads ahead (server/stdio.py): the process
        ends within a second of `exit` or of the end of its input, however busy it is."""
        from torch_lsp.server.stdio import serve

        serve(self, stdin or sys.stdin.buffer, stdout or sys.stdout.buffer)

    def run_shutdown_hooks(self) -> None:
        if self.shutdown_hooks_ran:
            return
        self.shutdown_hooks_ran = True
        for hook in self.shutdown_hooks:
            try:
                hook()
            except Exception:  # noqa: BLE001 - shutting down must always succeed
                log.exception("shutdown hook failed")

    def finish(self, status: int | None = None) -> None:
        """End the process: after `exit` (status 0 if `shutdown` came first, else 1, as the spec
        says) or when the input ends. Shutdown hooks run (bounded); the process never lingers."""
        if not self._finishing.acquire(blocking=False):
            # Another thread is ending the process (os._exit, within FINISH_WITHIN_S). Returning
            # would let this one start the interpreter's shutdown under it, and a daemon thread
            # flushing stdout during finalisation aborts the process (exit status -6).
            threading.Event().wait()
        if status is None:
            status = 0 if self.protocol._shutdown else 1
        hooks = threading.Thread(target=self.run_shutdown_hooks, daemon=True)
        hooks.start()
        hooks.join(FINISH_WITHIN_S)
        try:
            sys.stdout.flush()
            writer = self.protocol.writer
            if writer is not None and hasattr(writer, "_stdout"):
                writer._stdout.flush()
        except (OSError, ValueError):
            pass
        logging.shutdown()
        os._exit(status)

    def release_memory_soon(self) -> None:
        """After a huge message or a closed document: trim the heap once things have settled
        (a second after the last such event)."""
        if self._trim is not None:
            self._trim.cancel()
        self._trim = asyncio.get_running_loop().call_later(1.0, self._trim_now)

    def _trim_now(self) -> None:
        self._trim = None
        _trim_heap()

    def publish(self, uri: str) -> None:
        diagnostics.publish(self, uri)

    def apply_settings(self, notify: bool = True) -> None:
        """Merge every settings layer (see config.py for the precedence) and warn about bad keys;
        then tell the listeners (the shape engine, ...) unless `notify` is False."""
        from torch_lsp import config

        pyproject = config.find_pyproject(self.root_path) if self.root_path else None
        table, problems = config.read_pyproject(pyproject)
        table, capped = config.cap_project_settings(table, str(pyproject or "pyproject.toml"),
                                                    (self.init_options, self.client_settings))
        problems += capped
        merged = config.merge(("defaults", {}), (str(pyproject or "pyproject.toml"), table),
                              ("initializationOptions", self.init_options),
                              ("workspace/configuration", self.client_settings))
        self._settings = merged.settings
        self.settings_applied = True
        for warning in problems + merged.warnings:
            if warning in self.warned:  # settings are merged at initialize and again after
                continue
            self.warned.add(warning)
            log.warning(warning)
            self.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning, message=warning))
        if notify:
            for listener in self.settings_listeners:
                listener(self)


def create_server() -> TorchLanguageServer:
    # Analyses and plans run in threads while the event loop answers hover: with the default
    # 5 ms switch interval a request waits up to 5 ms (per busy thread) for the interpreter
    # lock; 1 ms keeps hover within a few ms while the user types (bench/bench_typing.py).
    sys.setswitchinterval(0.001)
    ls = TorchLanguageServer()

    @ls.feature(types.INITIALIZE)
    def initialize(ls: TorchLanguageServer, params: types.InitializeParams) -> None:
        from torch_lsp.shapes import early_start

        # Other transports than stdio's fast start: the worker starts here (idempotent).
        early_start.start_for_initialize({
            "rootUri": params.root_uri, "rootPath": params.root_path,
            "workspaceFolders": [{"uri": folder.uri} for folder in params.workspace_folders or []],
            "initializationOptions": params.initialization_options})
        options = params.initialization_options
        # Clients nest settings differently; accept both {"torchLsp": {...}} and {...}.
        if isinstance(options, dict) and isinstance(options.get(SECTION), dict):
            options = options[SECTION]
        ls.init_options = options
        # What the project and the editor's start-up options say is known from here on (a
        # request or document arriving before the client's configuration sees these, never
        # the built-in defaults). Listeners start work on `initialized`, once the client's
        # live configuration has been asked for.
        ls.apply_settings(notify=False)

    @ls.feature(types.INITIALIZED)
    async def initialized(ls: TorchLanguageServer, params: types.InitializedParams) -> None:
        try:
            if not await refresh_client_settings(ls):
                ls.apply_settings()
        finally:
            ls.settings_known.set()  # jobs waiting for the client's configuration may start
        await sandbox_notice.report_once(ls)

    @ls.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: TorchLanguageServer, params: types.DidChangeConfigurationParams) -> None:
        pushed = params.settings.get(SECTION) if isinstance(params.settings, dict) else None
        if not await refresh_client_settings(ls) and isinstance(pushed, dict):
            ls.client_settings = pushed
            ls.apply_settings()
        ls.documents.reanalyse_all()
        ls.notebooks.reanalyse_all()

    @ls.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: TorchLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
        if _is_notebook_cell(ls, params.text_document.uri):
            return  # analysed as part of its notebook (server/notebooks.py)
        ls.documents.opened(params.text_document.uri, params.text_document.version)

    @ls.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: TorchLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
        if _is_notebook_cell(ls, params.text_document.uri):
            return
        ls.documents.changed(params.text_document.uri, params.text_document.version)

    @ls.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: TorchLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
        if params.text_document.uri in ls.documents:
            ls.documents.schedule(params.text_document.uri, delay_ms=0)

    @ls.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: TorchLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.shapes.closed(params.text_document.uri, to_fs_path(params.text_document.uri))
        ls.on_screen.closed(params.text_document.uri)
        ls.documents.closed(params.text_document.uri)
        ls.release_memory_soon()
        diagnostics.clear(ls, params.text_document.uri)

    @ls.feature(types.SHUTDOWN)
    def shutdown(ls: TorchLanguageServer, *args) -> None:
        ls.run_shutdown_hooks()

    @ls.feature(types.EXIT)
    def on_exit(ls: TorchLanguageServer, *args) -> None:
        ls.finish()

    @ls.command(SERVER_INFO_COMMAND)
    def server_info(ls: TorchLanguageServer, *args) -> dict[str, Any]:
        """Facts for bug reports, tests and benches: notably that torch, and matplotlib (charts
        are drawn by a helper process), are not imported here, and how fast requests were
        answered (`{"resetLatency": true}` as the argument starts a new count after this one)."""
        shapes = getattr(ls, "shapes", None)
        reset = bool(args) and isinstance(args[0], dict) and args[0].get("resetLatency") is True
        return {"version": __version__, "pid": os.getpid(), "python": sys.executable,
                "torchImported": "torch" in sys.modules, "matplotlibImported": "matplotlib" in sys.modules,
                "rssMb": _rss_mb(), "shapeJobs": ls.shapes.jobs_sent,
                "shapeJobsWithoutCosts": ls.shapes.jobs_without_costs,
                "shapeJobsStarted": ls.shapes.engine.jobs_started if ls.shapes.engine is not None else 0,
                "shapeSession": shapes is not None and shapes.session is not None,
                "shapeWorkerPid": ls.shapes.engine.pid if ls.shapes.engine is not None else None,
                "runningShapeJobs": ls.shapes.engine.running if ls.shapes.engine is not None else [],
                "queuedShapeJobs": ls.shapes.engine.queued if ls.shapes.engine is not None else [],
                # Requests being handled, plus any future pygls failed to drop (server/protocol.py).
                "pendingFutures": len(ls.protocol._request_futures),
                "settingsKnown": ls.settings_known.is_set(), "sandboxChecked": ls.sandbox_reported,
                "requestLatency": ls.latency.summary(reset=reset),
                "settings": ls.settings.to_dict()}

    for feature in (notebooks, actions, shapes, notebook_shapes, hover, inlay, commands, cost, lenses):
        feature.register(ls)
    return ls


def _is_notebook_cell(ls: TorchLanguageServer, uri: str) -> bool:
    return ls.workspace.get_notebook_document(cell_uri=uri) is not None


async def refresh_client_settings(ls: TorchLanguageServer) -> bool:
    """Pull the `torchLsp` section with workspace/configuration; False if the client can't."""
    workspace_caps = ls.client_capabilities.workspace
    if not (workspace_caps and workspace_caps.configuration):
        return False
    try:
        # A client that answers with something pygls cannot read leaves the future pending
        # forever: bound the wait so start-up settings are applied regardless.
        result = await asyncio.wait_for(ls.workspace_configuration_async(
            types.ConfigurationParams(items=[types.ConfigurationItem(section=SECTION)])), timeout=CONFIGURATION_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 - a client that fails this keeps the other layers
        log.warning("workspace/configuration failed: %r", error)
        return False
    settings = result[0] if result else None
    ls.client_settings = settings if isinstance(settings, dict) else None
    ls.apply_settings()
    return True


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
