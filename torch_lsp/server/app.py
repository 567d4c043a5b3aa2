"""The language server: lifecycle, settings, document sync, and registration of each feature.

Feature modules (diagnostics, actions, hover, inlay hints, commands, lenses) each expose
`register(ls)`; this module wires them and owns nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from torch_lsp import __version__
from torch_lsp.server import actions, commands, diagnostics, hover, inlay, lenses, shapes
from torch_lsp.server.documents import DocumentStore

log = logging.getLogger(__name__)

SERVER_INFO_COMMAND = "torch-lsp.serverInfo"
SECTION = "torchLsp"  # the settings section, as in config.SECTION (not imported: see settings)


class TorchLanguageServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("torch-lsp", __version__, text_document_sync_kind=types.TextDocumentSyncKind.Incremental,
                         max_workers=4)
        self._settings = None  # built on first use: pydantic costs ~100 ms to import
        self.documents = DocumentStore(self)
        self.init_options: dict[str, Any] | None = None
        self.pyproject_settings: dict[str, Any] | None = None
        self.client_settings: dict[str, Any] | None = None
        # Callbacks run when settings change and on shutdown (the shape engine, training runs).
        self.settings_listeners: list[Callable[["TorchLanguageServer"], None]] = []
        self.shutdown_hooks: list[Callable[[], None]] = []

    @property
    def settings(self):
        if self._settings is None:
            from torch_lsp.config import Settings

            self._settings = Settings()
        return self._settings

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

    def publish(self, uri: str) -> None:
        diagnostics.publish(self, uri)

    def apply_settings(self) -> None:
        """Merge every settings layer (see config.py for the precedence) and warn about bad keys."""
        from torch_lsp import config

        pyproject = config.find_pyproject(self.root_path) if self.root_path else None
        table, problems = config.read_pyproject(pyproject)
        merged = config.merge(("defaults", {}), (str(pyproject or "pyproject.toml"), table),
                              ("initializationOptions", self.init_options),
                              ("workspace/configuration", self.client_settings))
        self._settings = merged.settings
        for warning in problems + merged.warnings:
            log.warning(warning)
            self.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning, message=warning))
        for listener in self.settings_listeners:
            listener(self)


def create_server() -> TorchLanguageServer:
    ls = TorchLanguageServer()

    @ls.feature(types.INITIALIZE)
    def initialize(ls: TorchLanguageServer, params: types.InitializeParams) -> None:
        options = params.initialization_options
        # Clients nest settings differently; accept both {"torchLsp": {...}} and {...}.
        if isinstance(options, dict) and isinstance(options.get(SECTION), dict):
            options = options[SECTION]
        ls.init_options = options
        # Settings are merged on `initialized`, after the reply: start-up latency is what the
        # user feels, and nothing needs settings before the first document arrives.

    @ls.feature(types.INITIALIZED)
    async def initialized(ls: TorchLanguageServer, params: types.InitializedParams) -> None:
        if not await refresh_client_settings(ls):
            ls.apply_settings()

    @ls.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    async def did_change_configuration(ls: TorchLanguageServer, params: types.DidChangeConfigurationParams) -> None:
        pushed = params.settings.get(SECTION) if isinstance(params.settings, dict) else None
        if not await refresh_client_settings(ls) and isinstance(pushed, dict):
            ls.client_settings = pushed
            ls.apply_settings()
        ls.documents.reanalyse_all()

    @ls.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: TorchLanguageServer, params: types.DidOpenTextDocumentParams) -> None:
        ls.documents.opened(params.text_document.uri, params.text_document.version)

    @ls.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: TorchLanguageServer, params: types.DidChangeTextDocumentParams) -> None:
        ls.documents.changed(params.text_document.uri, params.text_document.version)

    @ls.feature(types.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: TorchLanguageServer, params: types.DidSaveTextDocumentParams) -> None:
        if params.text_document.uri in ls.documents:
            ls.documents.schedule(params.text_document.uri, delay_ms=0)

    @ls.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: TorchLanguageServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.documents.closed(params.text_document.uri)
        diagnostics.clear(ls, params.text_document.uri)

    @ls.feature(types.SHUTDOWN)
    def shutdown(ls: TorchLanguageServer, *args) -> None:
        for hook in ls.shutdown_hooks:
            try:
                hook()
            except Exception:  # noqa: BLE001 - shutting down must always succeed
                log.exception("shutdown hook failed")

    @ls.command(SERVER_INFO_COMMAND)
    def server_info(ls: TorchLanguageServer, *args) -> dict[str, Any]:
        """Facts for bug reports and tests: notably that torch is not imported here."""
        return {"version": __version__, "pid": os.getpid(), "python": sys.executable,
                "torchImported": "torch" in sys.modules, "rssMb": _rss_mb(),
                "settings": ls.settings.model_dump(by_alias=True)}

    for feature in (actions, shapes, hover, inlay, commands, lenses):
        feature.register(ls)
    return ls


async def refresh_client_settings(ls: TorchLanguageServer) -> bool:
    """Pull the `torchLsp` section with workspace/configuration; False if the client can't."""
    workspace_caps = ls.client_capabilities.workspace
    if not (workspace_caps and workspace_caps.configuration):
        return False
    try:
        # A client that answers with something pygls cannot read leaves the future pending
        # forever: bound the wait so start-up settings are applied regardless.
        result = await asyncio.wait_for(ls.workspace_configuration_async(
            types.ConfigurationParams(items=[types.ConfigurationItem(section=SECTION)])), timeout=5)
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
