"""The documents the editor shows get their shape jobs first, through the real protocol.

An editor asks inlay hints (and code lenses, hover, code actions) only for what it shows
(server/on_screen.py). While another document's job runs, three documents' jobs queue: the
one the editor asked inlay hints for starts first, although it was queued last. Every job here
waits for a file the test writes, so what runs is seen without a race; then each document ends
with its shapes, as CPU gives them.
"""

from __future__ import annotations

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from tests.lsp.conftest import open_text, wait_for
from tests.shapes.helpers import cpu_run, shape_of

pytestmark = pytest.mark.slow  # server and shape worker processes


@pytest.fixture
def client(project_client: LanguageClient) -> LanguageClient:
    return project_client


async def server_info(client: LanguageClient) -> dict:
    return await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="torch-lsp.serverInfo", arguments=[])) or {}


def held(flag, rows: int) -> str:
    """A script whose job runs until `flag` exists."""
    return (f"import os, time, torch\nwhile not os.path.exists({str(flag)!r}):\n    time.sleep(0.01)\n"
            f"x = torch.ones({rows}, 3)\n")


async def test_the_document_on_screen_gets_its_job_before_those_queued_ahead_of_it(client):
    root = client.root
    slow = root / "slow.py"
    slow.write_text(held(root / "go_slow", 2))
    open_text(client, slow.as_uri(), slow.read_text())

    async def started(count: int):
        return (await server_info(client)).get("shapeJobsStarted", 0) >= count

    await wait_for(lambda: started(1), "the first document's job started")
    documents = {name: root / f"{name}.py" for name in ("a", "b", "c")}

    async def queued(*names: str):
        waiting = set((await server_info(client)).get("queuedShapeJobs", []))
        return waiting >= {documents[name].as_uri() for name in names}

    for rows, (name, path) in enumerate(documents.items(), start=3):
        path.write_text(held(root / f"go_{name}", rows))
        if name == "c":  # the editor shows c.py: it asks its inlay hints (its layout restored: before the text is open)
            await client.text_document_inlay_hint_async(types.InlayHintParams(
                text_document=types.TextDocumentIdentifier(uri=path.as_uri()),
                range=types.Range(start=types.Position(0, 0), end=types.Position(10, 0))))
        open_text(client, path.as_uri(), path.read_text())
        await wait_for(lambda: queued(*list(documents)[:rows - 2]), f"{name}.py's job queued in the worker")
    (root / "go_slow").write_text("")

    async def next_running():
        running = (await server_info(client)).get("runningShapeJobs", [])
        return running and slow.as_uri() not in running and running

    running = await wait_for(next_running, "the next job to start")
    assert running == [documents["c"].as_uri()]  # queued last, on screen: first
    for name in documents:
        (root / f"go_{name}").write_text("")
    for rows, (name, path) in enumerate(documents.items(), start=3):
        uri = path.as_uri()

        async def current():
            shown = await client.workspace_execute_command_async(
                types.ExecuteCommandParams(command="torch-lsp.shapesShown", arguments=[uri])) or {}
            return shown.get("reportVersion") == 1

        await wait_for(current, f"{name}.py's shapes")
        report = await client.workspace_execute_command_async(
            types.ExecuteCommandParams(command="torch-lsp.shapeReport", arguments=[uri]))
        shapes = [tuple(v["shape"]) for var in report["variables"] if var["name"] == "x" for v in var["values"]]
        assert shapes == [shape_of(cpu_run(path.read_text())["x"])] == [(rows, 3)]  # its flag is there: it runs through
