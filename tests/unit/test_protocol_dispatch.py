"""The server's protocol dispatches requests and notifications itself (server/protocol.py): pygls
tells them apart with `isinstance` against runtime-checkable Protocols, ~0.1 ms a check on
Python 3.11, on the event loop for every keystroke."""

from __future__ import annotations

import pytest
from lsprotocol import types
from pygls.protocol import json_rpc

from torch_lsp.server.app import create_server


class _NoCheck(type):
    def __instancecheck__(cls, instance):
        raise AssertionError(f"a Protocol check for {type(instance).__name__}")


@pytest.fixture
def protocol(monkeypatch):
    server = create_server()
    protocol = server.protocol
    protocol.initialize_received = True  # past `initialize`, as a session is
    handled = []
    monkeypatch.setattr(protocol, "_handle_request", lambda *args: handled.append(("request", *args)))
    monkeypatch.setattr(protocol, "_handle_notification", lambda *args: handled.append(("notification", *args)))
    protocol.handled = handled
    return protocol


def test_requests_and_notifications_reach_their_handlers_without_protocol_checks(protocol, monkeypatch):
    for name in ("RPCRequest", "RPCNotification"):
        monkeypatch.setattr(json_rpc, name, _NoCheck(name, (), {}))
    change = types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri="file:///m.py", version=2),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text="x = 1\n")])
    hover = types.HoverParams(text_document=types.TextDocumentIdentifier(uri="file:///m.py"),
                              position=types.Position(line=0, character=0))
    protocol.handle_message(types.DidChangeTextDocumentNotification(params=change))
    protocol.handle_message(types.HoverRequest(id=7, params=hover))
    protocol.handle_message(types.ExitNotification())
    assert protocol.handled == [
        ("notification", types.TEXT_DOCUMENT_DID_CHANGE, change),
        ("request", 7, types.TEXT_DOCUMENT_HOVER, hover),
        ("notification", types.EXIT, None),
    ]


def test_responses_still_reach_pygls_and_a_foreign_version_is_ignored(protocol, monkeypatch):
    answered = []
    monkeypatch.setattr(protocol, "_handle_response", lambda *args: answered.append(args))
    protocol.handle_message(json_rpc.JsonRPCResponseMessage(id="torch-lsp-3", jsonrpc="2.0", result=[{}]))
    assert answered == [("torch-lsp-3", [{}])]
    protocol.handle_message(json_rpc.JsonRPCNotification(method=types.TEXT_DOCUMENT_DID_CHANGE, jsonrpc="1.0",
                                                         params=None))
    assert protocol.handled == []
