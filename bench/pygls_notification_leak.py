"""Minimal reproduction of pygls' notification-future leak, for an upstream report.

pygls 2.1.1, `JsonRPCProtocol._execute_handler`: for an async, threaded or generator handler it
stores the handler's future in `self._request_futures[msg_id]`. For a request the callback
`_send_handler_result` pops it; for a notification the callback `_check_handler_result` does
not, so every notification leaves one Future behind. pygls' own didOpen/didChange/didClose are
generators, so every edit leaks, whatever the user's handler is. Run with plain pygls:

    python bench/pygls_notification_leak.py
    # pygls 2.1.1: after 20000 didChange notifications, 20002 futures are kept in _request_futures
    # (one per notification: initialized, didOpen and every didChange; ~2 KB each)

torch-lsp works around it in torch_lsp/server/protocol.py (`TorchProtocol._execute_handler`).
"""

import io
import json
from importlib.metadata import version

from lsprotocol import types
from pygls.lsp.server import LanguageServer

server = LanguageServer("leak-repro", "0")


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls, params):  # a plain synchronous handler: the leak is pygls' own generator
    pass


def send(method, params, msg_id=None):
    message = {"jsonrpc": "2.0", "method": method, "params": params}
    if msg_id is not None:
        message["id"] = msg_id
    server.protocol.handle_message(json.loads(json.dumps(message), object_hook=server.protocol.structure_message))


server.protocol.set_writer(io.BytesIO())  # replies are not needed
send("initialize", {"processId": None, "rootUri": None, "capabilities": {}}, msg_id=1)
send("initialized", {})
uri = "file:///leak.py"
send("textDocument/didOpen", {"textDocument": {"uri": uri, "languageId": "python", "version": 1, "text": "x = 1\n"}})
for n in range(20_000):
    send("textDocument/didChange", {"textDocument": {"uri": uri, "version": n + 2}, "contentChanges": [
        {"range": {"start": {"line": 0, "character": 4}, "end": {"line": 0, "character": 5}}, "text": str(n % 10)}]})
print(f"pygls {version('pygls')}: after 20000 didChange notifications, "
      f"{len(server.protocol._request_futures)} futures are kept in _request_futures")
