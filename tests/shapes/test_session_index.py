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


def held_scan(session: ShapeSession, monkeypatch) -> tuple[threading.Event, threading.Event]:
    """The first scan of a large workspace, held until the test lets it end."""
    scanning, scan_may_end = threading.Event(), threading.Event()
    scan = WorkspaceIndex.scan

    def slow_scan(index, *args, **kwargs):
        scanning.set()
        scan_may_end.wait(60)
        return scan(index, *args, **kwargs)

    monkeypatch.setattr(WorkspaceIndex, "scan", slow_scan)
    threading.Thread(target=session.index, daemon=True).start()
    assert scanning.wait(60)
    return scanning, scan_may_end


async def test_a_document_that_runs_its_own_classes_does_not_wait_for_the_first_scan(tmp_path, monkeypatch):
    """Its driver is itself whatever the workspace holds: its job starts while the workspace is
    scanned; a model file whose driver may be elsewhere waits, and then gets train.py."""
    session, model, train = session_on(tmp_path)
    seed = (FIXTURES / "cifar10_seed.py").read_text()
    seed_path = (model.parent / "seed.py").resolve()
    seed_path.write_text(seed)
    train.write_text((PROJECT / "train.py").read_text())
    _, scan_may_end = held_scan(session, monkeypatch)
    try:
        early = await asyncio.wait_for(session.spec_for(RunRequest(path=str(seed_path), text=seed)), 30)
        waiting = asyncio.ensure_future(session.spec_for(RunRequest(path=str(model), text=model.read_text())))
        # The why-notes of the early job read the document's own index, not the scanned one.
        forwards = await asyncio.wait_for(asyncio.to_thread(
            session._forwards, RunRequest(path=str(seed_path), text=seed)), 30)
        assert [f.cls for f in forwards] == ["Net"]
        await asyncio.sleep(0)
        assert not waiting.done()
    finally:
        scan_may_end.set()
    assert isinstance(early, JobSpec) and early.main.filename == str(seed_path) and early.record == [str(seed_path)]
    assert session.runs[str(seed_path)].runs_itself and session.runs[str(seed_path)].reached == ("seed.Net",)
    later = await asyncio.wait_for(waiting, 60)
    assert isinstance(later, JobSpec) and later.main.filename == str(train)
    # Once scanned, the same document's spec is the workspace's, and the same job.
    again = session.job_spec(RunRequest(path=str(seed_path), text=seed))
    assert (again.main.filename, again.record, again.roots) == (early.main.filename, early.record, early.roots)


def test_a_file_changed_or_closed_during_the_first_scan_waits_for_its_end_not_a_thread(tmp_path, monkeypatch):
    """Closing a buffer or a change on disk while the workspace is scanned: noted at once (the
    server calls this on the event loop), indexed after the scan, the newest note winning."""
    session, model, train = session_on(tmp_path)
    calling = (PROJECT / "train.py").read_text()
    _, scan_may_end = held_scan(session, monkeypatch)
    answers: list = []
    caller = threading.Thread(target=lambda: answers.append(session.file_changed(str(train))))
    caller.start()
    caller.join(30)  # a generous ceiling: it returns at once, or waits for the "scan" forever
    returned_first = answers == [None]
    # train.py closed unsaved, then opened again with the calling text: the buffer's text wins.
    session.text_changed(str(train), None)
    session.text_changed(str(train), calling)
    scan_may_end.set()
    caller.join()
    assert returned_first
    assert session.run_for(RunRequest(path=str(model), text=model.read_text())).driver == str(train)
    # Closed again: the disk's text (calling nothing) counts.
    session.file_changed(str(train))
    assert session.run_for(RunRequest(path=str(model), text=model.read_text())).driver == str(model)


async def test_a_model_run_from_elsewhere_gets_its_driver_before_the_first_scan_ends(tmp_path, monkeypatch):
    """With provisional drivers (the server's session): a model file whose driver is train.py
    gets train.py's job while the workspace is scanned, from the files that may import its
    classes; once the scan ends the whole index confirms it."""
    session, model, train = session_on(tmp_path)
    train.write_text((PROJECT / "train.py").read_text())
    session.provisional_drivers = True
    request = RunRequest(path=str(model), text=model.read_text())
    _, scan_may_end = held_scan(session, monkeypatch)
    try:
        spec = await asyncio.wait_for(session.spec_for(request), 30)
        assert isinstance(spec, JobSpec) and spec.main.filename == str(train)
        assert session.runs[str(model)].driver == str(train) and session.chose_before_scan(str(model))
        # Its why-notes read the index it chose with (the scan's is still being built).
        forwards = await asyncio.wait_for(asyncio.to_thread(session._forwards, request), 30)
        assert [f.cls for f in forwards] == ["Net"]
        confirmed = asyncio.ensure_future(session.driver_confirmed(request))
        await asyncio.sleep(0)
        assert not confirmed.done()  # it waits for the scan
    finally:
        scan_may_end.set()
    assert await asyncio.wait_for(confirmed, 60) is True
    assert not session.chose_before_scan(str(model))
    # A session without provisional drivers (the CLI) waits for the scan: test above.


async def test_a_provisional_driver_the_whole_index_disagrees_with_is_not_confirmed(tmp_path, monkeypatch):
    """A class reached through a name the text search misses: the job before the scan runs the
    document itself; after the scan the whole index chooses train.py, and the caller is told."""
    from torch_lsp.shapes import session as session_module

    session, model, train = session_on(tmp_path)
    train.write_text((PROJECT / "train.py").read_text())
    session.provisional_drivers = True
    monkeypatch.setattr(session_module, "possible_runners", lambda document, texts: {document})
    request = RunRequest(path=str(model), text=model.read_text())
    _, scan_may_end = held_scan(session, monkeypatch)
    try:
        spec = await asyncio.wait_for(session.spec_for(request), 30)
        assert spec.main.filename == str(model) and session.chose_before_scan(str(model))
    finally:
        scan_may_end.set()
    assert await asyncio.wait_for(session.driver_confirmed(request), 60) is False
    spec = await asyncio.wait_for(session.spec_for(request), 60)
    assert spec.main.filename == str(train) and not session.chose_before_scan(str(model))


async def test_a_script_run_alone_before_the_scan_is_run_again_when_the_index_knows_its_classes_files(tmp_path, monkeypatch):
    """train.py runs itself, so its job needs no scan; but an index of train.py alone does not
    know that Net is model.py's, and the job recorded train.py only: an error inside Net then
    had no place in model.py to point to (seen through the protocol under load). Once the
    scan ends the whole index records model.py, and the caller is told to run it again."""
    session, model, train = session_on(tmp_path)
    script = (PROJECT / "train.py").read_text()
    train.write_text(script)
    session.provisional_drivers = True
    request = RunRequest(path=str(train), text=script)
    _, scan_may_end = held_scan(session, monkeypatch)
    try:
        early = await asyncio.wait_for(session.spec_for(request), 30)
        assert isinstance(early, JobSpec) and early.record == [str(train)]
        assert session.chose_before_scan(str(train))
    finally:
        scan_may_end.set()
    assert await asyncio.wait_for(session.driver_confirmed(request), 60) is False
    later = await asyncio.wait_for(session.spec_for(request), 60)
    assert later.main.filename == str(train) and later.record == [str(train), str(model)]
    assert not session.chose_before_scan(str(train))
    assert await asyncio.wait_for(session.driver_confirmed(request), 60) is True  # nothing left to confirm
