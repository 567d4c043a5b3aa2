"""Open documents in the workspace index (ShapeSession.buffer_changed, run_for): a buffer is
indexed once per analysed text, not once per job of every other document; what it changes
for the others is said, so that the server re-runs the documents it may now drive."""

from __future__ import annotations

import asyncio
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import FIXTURES
from torch_lsp.analysis.workspace import WorkspaceIndex
from torch_lsp.config import Settings
from torch_lsp.shapes.session import RunRequest, ShapeSession
from torch_lsp.shapes.spec import JobSpec

PROJECT = FIXTURES / "projects" / "model_train"
NOT_CALLING = "import torch\n\nprint(torch.zeros(2))\n"


def session_on(tmp_path: Path) -> tuple[ShapeSession, Path, Path]:
    root = tmp_path / "project"
    shutil.copytree(PROJECT, root)
    (root / "train.py").write_text(NOT_CALLING)  # on disk, nothing calls Net
    settings = Settings()
    return ShapeSession(root, lambda: settings), (root / "model.py").resolve(), (root / "train.py").resolve()


def test_a_buffer_that_starts_calling_a_class_names_the_file_that_defines_it(tmp_path):
    session, model, train = session_on(tmp_path)
    calling = (PROJECT / "train.py").read_text()
    assert session.run_for(RunRequest(path=str(model), text=model.read_text())).driver == str(model)

    assert session.buffer_changed(str(train), calling) == {str(model)}
    assert session.run_for(RunRequest(path=str(model), text=model.read_text())).driver == str(train)
    # The same text again, or typing inside a loop body: nothing changes for the other files.
    assert session.buffer_changed(str(train), calling) == set()
    typed = calling.replace("        loss.backward()\n", "        loss.backward()  # typing\n")
    assert typed != calling and session.buffer_changed(str(train), typed) == set()
    # It stops calling Net: no file is named (the server re-runs the documents whose last job
    # ran train.py anyway), and model.py has no driver again.
    assert session.buffer_changed(str(train), NOT_CALLING + "x = 1\n") == set()
    assert session.run_for(RunRequest(path=str(model), text=model.read_text())).driver == str(model)


def test_a_job_indexes_its_own_text_but_not_the_other_open_buffers(tmp_path):
    session, model, train = session_on(tmp_path)
    calling = (PROJECT / "train.py").read_text()
    # The other buffers' texts travel with the job (imports see them), but only an analysis
    # indexes them: a job of model.py with train.py's buffer calling Net keeps the indexed text.
    request = RunRequest(path=str(model), text=model.read_text(), open_documents={str(train): calling})
    assert session.run_for(request).driver == str(model)
    session.buffer_changed(str(train), calling)
    assert session.run_for(request).driver == str(train)
    # The document's own text is indexed by its job: model.py renamed Net, train.py's call is
    # no longer of a workspace class.
    renamed = RunRequest(path=str(model), text=model.read_text().replace("class Net(", "class Other("))
    assert session.run_for(renamed).driver == str(model)


def test_a_buffer_analysed_before_the_first_scan_waits_for_it_not_a_thread(tmp_path):
    """The first scan holds the index for seconds on a large workspace: a buffer's text is kept
    for its end instead of a thread of the server's shared pool waiting on it."""
    session, model, train = session_on(tmp_path)
    calling = (PROJECT / "train.py").read_text()
    scanning, scan_may_end = threading.Event(), threading.Event()

    def scan() -> None:  # holds the index's lock, as the first scan does
        with session._index_lock:
            scanning.set()
            scan_may_end.wait(60)

    holder = threading.Thread(target=scan)
    holder.start()
    assert scanning.wait(60)
    answers: list = []
    caller = threading.Thread(target=lambda: answers.append(session.buffer_changed(str(train), calling)))
    caller.start()
    caller.join(30)  # a generous ceiling: it returns at once, or waits for the "scan" forever
    returned_first = answers == [set()]
    scan_may_end.set()
    holder.join()
    caller.join()
    assert returned_first
    assert session.run_for(RunRequest(path=str(model), text=model.read_text())).driver == str(train)


async def test_job_specs_wait_for_the_first_scan_on_the_loop_not_in_the_pool(tmp_path, monkeypatch):
    """Documents opened while the workspace is first scanned: their job specs wait on the event
    loop, so the shared pool keeps threads for everything else (a command's file reads)."""
    session, model, _ = session_on(tmp_path)
    scanning, scan_may_end = threading.Event(), threading.Event()
    scan = WorkspaceIndex.scan

    def slow_scan(index, *args, **kwargs):  # a large workspace: the scan holds the index a while
        scanning.set()
        scan_may_end.wait(60)
        return scan(index, *args, **kwargs)

    monkeypatch.setattr(WorkspaceIndex, "scan", slow_scan)
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=2)  # the scan takes one
    loop.set_default_executor(pool)
    try:
        specs = [asyncio.ensure_future(session.spec_for(
            RunRequest(path=str(model), text=model.read_text(), key=f"document {n}"))) for n in range(4)]
        for _ in range(6000):  # event-driven enough: the loop checks every 10 ms, 60 s ceiling
            if scanning.is_set():
                break
            await asyncio.sleep(0.01)
        assert scanning.is_set()
        # While the scan holds the index, other work still gets the pool's other thread.
        assert await asyncio.wait_for(loop.run_in_executor(None, lambda: "read"), 30) == "read"
        assert not any(spec.done() for spec in specs)  # they wait for the scan
    finally:
        scan_may_end.set()
    results = await asyncio.wait_for(asyncio.gather(*specs), 60)
    pool.shutdown(wait=True)
    assert all(isinstance(spec, JobSpec) and spec.main.filename == str(model) for spec in results)
