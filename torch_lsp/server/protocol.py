"""pygls' protocol, made to answer every request the way the LSP spec says and to hold no
memory it does not need. What pygls 2.1 does, and what we do instead:

- A request whose params do not match the spec (hover without `position`, `line: -1`) fails in
  pygls' `structure_message`, inside the read loop: it logs a traceback and never answers. We
  answer `-32602 InvalidParams`. A *response* from the client that cannot be read left the
  matching future pending forever; we fail it.
- Requests before `initialize` were served; they get `-32002 ServerNotInitialized` (and
  notifications are dropped, except `exit`).
- Requests after `shutdown` were dropped without an answer; they get `-32600 InvalidRequest`.
- Every notification handled by an async, threaded or generator handler (pygls' own didOpen,
  didChange and didClose are generators) left a `Future` in `_request_futures` for good: ~2 KB
  per edit. We remove a handler's future when it is done (`_execute_handler`); `shutdown`
  then iterates over a copy (cancelling a future now removes it).
- pygls names every notification and every step of a generator handler with `uuid.uuid4()`,
  whose `os.urandom` releases the GIL: with the analysis threads busy, the event loop then
  waits up to a switch interval to get it back, several times per message (the largest share
  of the slow event-loop turns while 30 documents are typed into). A counter names them instead.
- pygls tells a request from a notification with `isinstance` against runtime-checkable
  `Protocol`s: on Python 3.11 each check looks up every member of the Protocol's class anew,
  ~0.1 ms per message on the event loop, twice for every keystroke's notification. Requests
  and notifications are dispatched here from the message's own attributes; responses, rare,
  still go through pygls.

Exit and end of input are handled by the server (`TorchLanguageServer.finish`).
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import re
from typing import Any

from cattrs import transform_error
from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.protocol import LanguageServerProtocol, json_rpc
from pygls.protocol.language_server import lsp_method

log = logging.getLogger(__name__)

SERVER_NOT_INITIALIZED = -32002
INVALID_REQUEST = -32600
INVALID_PARAMS = JsonRpcInvalidParams.CODE  # -32602


class _LocalIds:
    """Stands in for the `uuid` module inside pygls' json_rpc. Its names key `_request_futures`
    and are the ids of the server's own requests to the client (`workspace/configuration`):
    unique within this process is all they need. The prefix keeps them apart from the ids of
    the client's requests in `_request_futures`."""

    def __init__(self) -> None:
        self._next = itertools.count()

    def uuid4(self) -> str:
        return f"torch-lsp-{next(self._next)}"


json_rpc.uuid = _LocalIds()


class _Unreadable:
    """A message whose envelope we understood but whose params (or result) we could not."""

    jsonrpc = "2.0"

    def __init__(self, data: dict, error: Exception, code: int = INVALID_PARAMS) -> None:
        self.id = data.get("id")
        self.method = data.get("method")
        self.error = error
        self.code = code


class TorchProtocol(LanguageServerProtocol):
    def __init__(self, server, converter) -> None:
        super().__init__(server, converter)
        self.initialize_received = False

    def structure_message(self, data: dict[str, Any]):
        if "id" in data and "method" in data and not isinstance(data["method"], str):
            # pygls fails on it with a TypeError (answered -32603); the spec says Invalid Request.
            return _Unreadable(data, ValueError(f"the method must be a string, not {data['method']!r}"),
                               INVALID_REQUEST)
        try:
            return super().structure_message(data)
        except JsonRpcException as error:
            if "id" in data and isinstance(data.get("method", ""), str):
                return _Unreadable(data, error)
            raise

    def handle_message(self, message) -> None:
        if isinstance(message, _Unreadable):
            self._answer_unreadable(message)
            return
        method = getattr(message, "method", None)
        is_request = method is not None and hasattr(message, "id")
        if method == types.INITIALIZE:
            self.initialize_received = True
        elif not self.initialize_received and method is not None and method != types.EXIT:
            if is_request:
                self._refuse(message.id, SERVER_NOT_INITIALIZED, f"{method}: the server is not initialized yet")
            return
        if self._shutdown and method is not None and method != types.EXIT:
            if is_request:
                self._refuse(message.id, INVALID_REQUEST, f"{method}: the server is shutting down")
            return
        if method is not None and message.jsonrpc == json_rpc.JsonRPCProtocol.VERSION:
            # As pygls does, without its Protocol checks (the module's docstring); each handler
            # runs in a context of its own.
            context = contextvars.copy_context()
            if is_request:
                context.run(self._handle_request, message.id, method, message.params)
            else:
                context.run(self._handle_notification, method, message.params)
            return
        super().handle_message(message)

    def _answer_unreadable(self, message: _Unreadable) -> None:
        if message.method is None:  # a response we could not read: fail whoever waits for it
            future = self._request_futures.pop(message.id, None)
            self._result_types.pop(message.id, None)
            if future is not None and not future.done():
                future.set_exception(message.error)
            return
        if message.code == INVALID_REQUEST:
            self._refuse(message.id, INVALID_REQUEST, f"invalid request: {message.error}")
            return
        detail = _cause(message.error)
        log.warning("invalid params for %s (id %r): %s", message.method, message.id, detail)
        self._refuse(message.id, INVALID_PARAMS, f"invalid params for {message.method}: {detail}")

    def _refuse(self, msg_id, code: int, text: str) -> None:
        self._send_response(msg_id, error=types.ResponseError(code=code, message=text))

    def _send_response(self, msg_id, result=None, error=None):
        super()._send_response(msg_id, result, error)
        self._server.latency.answered(msg_id)  # served: `torch-lsp.serverInfo` reports how fast

    def _execute_handler(self, msg_id, handler, callback, args=None, kwargs=None):
        def forget_then(future, callback=callback):
            # pygls removes a request's future when it answers, but never a notification's.
            if self._request_futures.get(msg_id) is future:
                self._request_futures.pop(msg_id, None)
            callback(future)

        super()._execute_handler(msg_id, handler, forget_then, args, kwargs)

    @lsp_method(types.SHUTDOWN)
    def lsp_shutdown(self, *args):
        """pygls' own, iterating over a copy of the in-flight futures."""
        if (user_handler := self.fm.features.get(types.SHUTDOWN)) is not None:
            yield user_handler, args, None
        current_id = self.msg_id
        for msg_id, future in list(self._request_futures.items()):
            if msg_id != current_id and not future.done():
                future.cancel()
        self._shutdown = True
        return None


def _cause(error: Exception) -> str:
    """What cattrs found wrong, as paths: `required field missing @ $.params.position`."""
    cause = error.__cause__ or error
    try:
        problems = transform_error(cause, path="$")
    except Exception:  # noqa: BLE001 - not a cattrs error: say what it is
        return f"{type(cause).__name__}: {cause}"
    return "; ".join(_camel_path(problem) for problem in problems)


def _camel_path(problem: str) -> str:
    """cattrs names attributes the Python way (`$.params.text_document`); the client wrote
    them in camelCase."""
    what, at, path = problem.partition(" @ ")
    return what + at + re.sub(r"_([a-z])", lambda match: match.group(1).upper(), path)
