"""Documents typed into while another document's job runs, through the real protocol.

Their jobs wait for their turn in the worker's queue; when the worker says a document is next,
its edits still waiting out the debounce (the default 250 ms here) are analysed at once and
that job takes the queued one's place (server/shapes.py, `_next_job`). Whatever the order,
every document ends with the shapes of its last version, as CPU gives them.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.lsp.conftest import command, open_text, replace_text, wait_for
from tests.shapes.helpers import cpu_run, held_until, shape_of

pytestmark = pytest.mark.slow  # server and shape worker processes


def source(rows: int) -> str:
    return f"import torch\nx = torch.ones({rows}, 3)\n"


async def test_versions_typed_while_jobs_wait_their_turn_each_end_with_their_shapes(project_client):
    client = project_client
    root = client.root
    flag = root / "go"
    slow = root / "slow.py"  # its job runs until the typing below is done
    slow.write_text(held_until(flag, "z = torch.ones(2)\n"))
    open_text(client, slow.as_uri(), slow.read_text())

    async def slow_started():
        info = await command(client, "torch-lsp.serverInfo") or {}
        return info.get("shapeJobsStarted", 0) >= 1

    await wait_for(slow_started, "the slow document's job started")
    documents = {name: root / f"{name}.py" for name in ("a", "b", "c")}
    versions = {name: 1 for name in documents}
    try:
        for path in documents.values():
            path.write_text(source(1))
            open_text(client, path.as_uri(), source(1))
        for rows in range(2, 8):  # typed into while their first jobs wait
            for name, path in documents.items():
                versions[name] += 1
                replace_text(client, path.as_uri(), source(rows), versions[name])
            await asyncio.sleep(0.05)  # the pace of typing, not a wait for an outcome
    finally:
        flag.write_text("")
    expected = shape_of(cpu_run(source(7))["x"])
    for name, path in documents.items():
        uri = path.as_uri()

        async def current():
            shown = await command(client, "torch-lsp.shapesShown", uri) or {}
            return shown.get("reportVersion") == versions[name]

        await wait_for(current, f"{name}.py's shapes of version {versions[name]}")
        report = await command(client, "torch-lsp.shapeReport", uri)
        shapes = [tuple(v["shape"]) for var in report["variables"] if var["name"] == "x" for v in var["values"]]
        assert shapes == [expected] == [(7, 3)]
