"""A minimal stdio LSP client for benchmarks (stdlib only, like an editor would talk)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path


class StdioClient:
    def __init__(self, command: list[str], cwd: Path | None = None, env: dict | None = None):
        stderr = open(os.environ["TORCH_LSP_BENCH_STDERR"], "wb") if os.environ.get("TORCH_LSP_BENCH_STDERR") else \
            subprocess.DEVNULL
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=stderr, cwd=cwd, env=env)
        self._next_id = 0
        self._responses: dict[int, queue.Queue] = {}
        self.notifications: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stream = self.process.stdout
        while True:
            length = 0
            while True:
                line = stream.readline()
                if not line:
                    return
                if not line.strip():
                    break
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            message = json.loads(stream.read(length))
            if "id" in message and "method" in message:  # a request from the server: accept it
                result = None
                if message["method"] == "workspace/configuration":  # one (empty) value per item
                    result = [None] * len(message.get("params", {}).get("items", []))
                try:
                    self._send({"jsonrpc": "2.0", "id": message["id"], "result": result})
                except (OSError, ValueError):  # we closed our end: the server is going away
                    return
            elif "id" in message:
                self._responses.setdefault(message["id"], queue.Queue()).put(message)
            else:
                self.notifications.put((time.perf_counter(), message))

    def _send(self, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def request(self, method: str, params, timeout: float = 60) -> tuple[dict, float]:
        started = time.perf_counter()
        message = self.ask(method, params).get(timeout=timeout)
        return message, (time.perf_counter() - started) * 1000

    def ask(self, method: str, params) -> queue.Queue:
        """Send a request without waiting: its answer will be put in the returned queue."""
        self._next_id += 1
        box = self._responses.setdefault(self._next_id, queue.Queue())
        self._send({"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params})
        return box

    def notify(self, method: str, params) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def wait_for(self, method: str, predicate=lambda params: True, timeout: float = 60) -> tuple[float, dict]:
        deadline = time.perf_counter() + timeout
        while True:
            at, message = self.notifications.get(timeout=max(deadline - time.perf_counter(), 0.001))
            if message.get("method") == method and predicate(message.get("params")):
                return at, message["params"]

    def initialize(self, root: Path, options: dict | None = None) -> float:
        capabilities = {"textDocument": {"hover": {"contentFormat": ["markdown", "plaintext"]},
                                         "publishDiagnostics": {"versionSupport": True}, "inlayHint": {},
                                         "codeAction": {"resolveSupport": {"properties": ["edit"]}}},
                        "window": {"workDoneProgress": True}, "workspace": {"configuration": True}}
        _, ms = self.request("initialize", {"processId": os.getpid(), "rootUri": root.as_uri(),
                                            "capabilities": capabilities, "initializationOptions": options or {}})
        self.notify("initialized", {})
        return ms

    def open(self, path: Path, text: str | None = None, version: int = 1) -> None:
        self.notify("textDocument/didOpen", {"textDocument": {"uri": path.as_uri(), "languageId": "python",
                                                              "version": version, "text": path.read_text() if text is None else text}})

    def close(self) -> None:
        try:
            self.request("shutdown", None, timeout=10)
            self.notify("exit", None)
            self.process.wait(timeout=10)
        except Exception:  # noqa: BLE001 - benchmarks must always clean up
            self.process.kill()


def cpu_times(pid: int) -> tuple[float, float, float, float]:
    """Seconds of CPU from /proc/PID/stat: user and system of the process, then user and system
    of its children it has reaped."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return tuple(int(value) / os.sysconf("SC_CLK_TCK") for value in fields[11:15])


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
