"""The documents the editor shows get their shape jobs first, through the real protocol.

An editor asks inlay hints (and code lenses, hover, code actions) only for what it shows
(server/on_screen.py). While another document's job runs, documents' jobs queue: the one the
editor asked inlay hints for starts first, although it was queued last. Every job here waits
for a file the test writes, so what runs is seen without a race; then each ends with its
shapes, as CPU gives them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lsprotocol import types
from pytest_lsp import LanguageClient

from tests.lsp.conftest import command, open_text, wait_for
from tests.lsp.notebook_client import NotebookSession, record_diagnostics
from tests.shapes.helpers import cpu_run, held_until, shape_of

pytestmark = pytest.mark.slow  # server and shape worker processes


def held(flag: Path, rows: int) -> str:
    """A script whose job runs until `flag` exists."""
    return held_until(flag, f"x = torch.ones({rows}, 3)\n")


async def hold_the_worker(client: LanguageClient) -> Path:
    """Open a document whose job runs until the returned flag exists; return once it runs."""
    slow, flag = client.root / "slow.py", client.root / "go_slow"
    slow.write_text(held(flag, 2))
    open_text(client, slow.as_uri(), slow.read_text())

    async def running():
        return slow.as_uri() in ((await command(client, "torch-lsp.serverInfo")) or {}).get("runningShapeJobs", [])

    await wait_for(running, "the first document's job running")
    return flag


async def wait_queued(client: LanguageClient, uris: list[str]) -> None:
    async def queued():
        return set(((await command(client, "torch-lsp.serverInfo")) or {}).get("queuedShapeJobs", [])) >= set(uris)

    await wait_for(queued, f"{uris[-1]}'s job queued in the worker behind {len(uris) - 1} others")


async def started_next(client: LanguageClient, flag: Path) -> list[str]:
    """Let the first document's job end; the keys of the job(s) the worker started next."""
    flag.write_text("")
    slow = (client.root / "slow.py").as_uri()

    async def next_running():
        running = ((await command(client, "torch-lsp.serverInfo")) or {}).get("runningShapeJobs", [])
        return running and slow not in running and running

    return await wait_for(next_running, "the next job to start")


async def ask_inlay_hints(client: LanguageClient, uri: str) -> None:
    await client.text_document_inlay_hint_async(types.InlayHintParams(
        text_document=types.TextDocumentIdentifier(uri=uri),
        range=types.Range(start=types.Position(0, 0), end=types.Position(10, 0))))


async def wait_shapes(client: LanguageClient, uri: str) -> list[tuple]:
    """The shapes of `x` in the first report of `uri` (a document's or a notebook's) that has any."""
    async def shapes():
        report = await command(client, "torch-lsp.shapeReport", uri) or {}
        return [tuple(v["shape"]) for var in report.get("variables", []) if var["name"] == "x" for v in var["values"]]

    return await wait_for(shapes, f"{uri}'s shapes")


async def test_the_document_on_screen_gets_its_job_before_those_queued_ahead_of_it(project_client):
    client = project_client
    root = client.root
    flag = await hold_the_worker(client)
    documents = {name: root / f"{name}.py" for name in ("a", "b", "c")}
    for rows, (name, path) in enumerate(documents.items(), start=3):
        path.write_text(held(root / f"go_{name}", rows))
        if name == "c":  # the editor shows c.py: it asks its inlay hints (its layout restored: before the text is open)
            await ask_inlay_hints(client, path.as_uri())
        open_text(client, path.as_uri(), path.read_text())
        await wait_queued(client, [documents[n].as_uri() for n in documents if n <= name])
    assert await started_next(client, flag) == [documents["c"].as_uri()]  # queued last, on screen: first
    for name in documents:
        (root / f"go_{name}").write_text("")
    for path in documents.values():
        expected = shape_of(cpu_run(path.read_text())["x"])  # its flag is there: it runs through
        assert await wait_shapes(client, path.as_uri()) == [expected]


async def test_a_notebook_whose_cell_is_on_screen_gets_its_job_first(project_client):
    client = project_client
    root = client.root
    record_diagnostics(client)
    flag = await hold_the_worker(client)
    behind = root / "behind.py"
    behind.write_text(held(root / "go_behind", 3))
    open_text(client, behind.as_uri(), behind.read_text())
    await wait_queued(client, [behind.as_uri()])
    cell = held(root / "go_notebook", 5)
    notebook = NotebookSession(client, root / "shown.ipynb", [("code", cell)])
    await ask_inlay_hints(client, notebook.cells[0].uri)  # the editor shows the notebook's cell
    notebook.open()
    await wait_queued(client, [behind.as_uri(), notebook.uri])
    assert await started_next(client, flag) == [notebook.uri]
    (root / "go_behind").write_text("")
    (root / "go_notebook").write_text("")
    assert await wait_shapes(client, notebook.uri) == [shape_of(cpu_run(cell)["x"])] == [(5, 3)]
    assert await wait_shapes(client, behind.as_uri()) == [shape_of(cpu_run(behind.read_text())["x"])] == [(3, 3)]
