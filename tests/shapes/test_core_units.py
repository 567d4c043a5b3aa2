"""Pure pieces of the shape engine's core: the scheduling policy, the report's wire form, and where
a file sits in its project."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from torch_lsp.shapes import project, scheduling
from torch_lsp.shapes.report import (
    ExpressionShapes, Location, Note, Origin, Range, ReportError, ShapeError, ShapeReport, Value,
    VariableShapes, reports_from_json, reports_to_json,
)


def test_a_job_within_its_usual_time_is_waited_for_and_an_overrun_one_is_not():
    assert scheduling.keeps_running(0.1, None)  # no history: a second is usual
    assert not scheduling.keeps_running(5.0, None)
    assert scheduling.keeps_running(0.4, 0.3)
    assert not scheduling.keeps_running(0.8, 0.3)


def test_jobs_beyond_the_spare_cores_start_only_beside_jobs_that_overran():
    # Two slots, one core spared for jobs (a two-core machine): one quick job at a time...
    assert scheduling.opens_slot([], slots=2, cores=1)
    assert not scheduling.opens_slot([(0.2, 0.5)], slots=2, cores=1)
    assert not scheduling.opens_slot([(0.1, None)], slots=2, cores=1)
    # ... but a second beside one that has run well past its usual time (a loop, a data load).
    assert scheduling.opens_slot([(5.0, 0.5)], slots=2, cores=1)
    assert scheduling.opens_slot([(5.0, None)], slots=2, cores=1)
    assert not scheduling.opens_slot([(5.0, 0.5), (9.0, 0.5)], slots=2, cores=1)  # never past the slots
    # Enough cores: every slot at once, as before.
    assert scheduling.opens_slot([(0.2, 0.5)], slots=2, cores=3)
    assert not scheduling.opens_slot([(0.2, 0.5), (0.1, 0.5)], slots=2, cores=3)
    assert scheduling.spare_cores() >= 1


def test_the_heap_goes_onto_huge_pages_once_quiet_after_the_warm_up_or_after_enough_jobs():
    quiet, jobs = scheduling.COLLAPSE_WHEN_QUIET_S, scheduling.COLLAPSE_AFTER_JOBS
    assert scheduling.huge_page_step_in(warmed=False, jobs_waiting_for_it=0, quiet_s=60.0) is None  # the warm-up first
    assert scheduling.huge_page_step_in(warmed=True, jobs_waiting_for_it=0, quiet_s=0.25) == pytest.approx(quiet - 0.25)
    assert scheduling.huge_page_step_in(warmed=True, jobs_waiting_for_it=jobs - 1, quiet_s=quiet) == 0.0
    # Steady load (documents typed into without a pause; the warm-up waits too): now, between jobs.
    assert scheduling.huge_page_step_in(warmed=False, jobs_waiting_for_it=jobs, quiet_s=0.0) == 0.0
    assert scheduling.huge_page_step_in(warmed=True, jobs_waiting_for_it=jobs, quiet_s=0.0) == 0.0


def test_the_worker_starts_a_second_job_only_once_the_first_overran(monkeypatch):
    from types import SimpleNamespace

    from torch_lsp.shapes import worker as worker_module

    clock = [100.0]
    monkeypatch.setattr(worker_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    worker = worker_module.Worker(out_fd=-1, parallel=2, cores=1)  # a two-core machine
    monkeypatch.setattr(worker, "send", lambda message: None)
    started: list[str] = []

    def start(job):  # no fork: what the loop decides is under test
        started.append(job.key)
        worker.running[job.key] = SimpleNamespace(job=job, started=clock[0])

    monkeypatch.setattr(worker, "_start", start)
    for key, background in (("a", False), ("b", False), ("a#probes", True)):
        worker.queue[key] = worker_module.Job(0, key, SimpleNamespace(background=background), {})
    worker._start_queued()
    assert started == ["a"]  # the background job waits while `b`, another document's driver, waits
    clock[0] += 0.5
    worker._start_queued()
    assert started == ["a"]  # `a` is within a usual job's time: `b` waits
    clock[0] += 5.0
    worker._start_queued()
    # `a` overran (a loop?): `b` does not wait for it; then no driver waits, and the background
    # job starts in a slot of its own.
    assert started == ["a", "b", "a#probes"]
    worker.running.pop("a#probes")  # done
    worker.queue["a"] = worker_module.Job(0, "a", SimpleNamespace(background=False), {})
    worker.queue["b#batch"] = worker_module.Job(0, "b#batch", SimpleNamespace(background=True), {})
    worker._start_queued()
    assert started == ["a", "b", "a#probes", "b#batch"]  # `a`'s newer version waits for its own job only


def _worker_without_forks(monkeypatch):
    """A worker whose jobs start without a fork (what its loop decides is under test): the
    worker, the messages it sends, and `queue(key, first=False, background=False)`, which puts
    a job in its queue."""
    from types import SimpleNamespace

    from torch_lsp.shapes import worker as worker_module

    worker = worker_module.Worker(out_fd=-1, parallel=2, cores=1)  # a two-core machine
    said: list[dict] = []
    monkeypatch.setattr(worker, "send", said.append)

    def start(job):
        worker.running[job.key] = SimpleNamespace(job=job, started=worker_module.time.monotonic())

    monkeypatch.setattr(worker, "_start", start)

    def queue(key: str, first: bool = False, background: bool = False) -> None:
        worker.queue[key] = worker_module.Job(0, key, SimpleNamespace(background=background), {}, first)

    return worker, said, queue


def test_the_jobs_of_documents_on_screen_start_first_and_are_announced_first(monkeypatch):
    """A job marked `first` (its document is on screen: server/on_screen.py) starts before the
    queued drivers without the mark, whatever their order; each group keeps its own order."""
    worker, said, queue = _worker_without_forks(monkeypatch)

    queue("a"), queue("b"), queue("c", first=True), queue("d"), queue("e", first=True)
    worker._start_queued()
    assert list(worker.running) == ["c"] and said == [{"type": "next", "key": "e"}]
    worker.running.clear()
    worker._start_queued()
    assert list(worker.running) == ["e"] and said[-1] == {"type": "next", "key": "a"}
    queue("b", first=True)  # b's newer version: its document is on screen now
    queue("c#batch", first=True, background=True)  # background jobs still wait while drivers do
    worker._start_queued()
    assert said[-1] == {"type": "next", "key": "b"}
    order = []
    while worker.queue.keys() - {"c#batch"}:
        worker.running.clear()
        worker._start_queued()
        order += list(worker.running)
    assert order == ["b", "a", "d"]


def test_a_job_not_on_screen_overtaken_too_often_goes_first_too(monkeypatch):
    """Documents on screen typed into without a pause must not take every turn: a job that
    MOST_OVERTAKEN jobs queued after it overtook goes first too, its document's newer versions
    keeping the count."""
    from torch_lsp.analysis.plan import build_plan
    from torch_lsp.shapes import scheduling
    from torch_lsp.shapes.spec import JobSpec

    assert scheduling.goes_first(True, 0) and not scheduling.goes_first(False, scheduling.MOST_OVERTAKEN - 1)
    assert scheduling.goes_first(False, scheduling.MOST_OVERTAKEN)
    worker, _, _ = _worker_without_forks(monkeypatch)

    def accept(key: str, first: bool = False) -> None:
        spec = JobSpec(key=key, main=build_plan("", f"/w/{key}.py")).to_dict()
        worker._accept({"type": "job", "id": 0, "key": key, "first": first, "spec": spec})

    accept("behind")
    started = []
    for _ in range(scheduling.MOST_OVERTAKEN + 1):
        accept("shown", first=True)  # typed into, on screen: a newer version every turn
        accept("behind")  # and so is the other document, which keeps its place and its count
        worker._start_queued()
        started += list(worker.running)
        worker.running.clear()
    assert started == ["shown"] * scheduling.MOST_OVERTAKEN + ["behind"]


def test_the_worker_announces_the_driver_job_that_starts_next(monkeypatch):
    """While a driver runs, the server is told which queued driver starts next (once per turn),
    so that it can replace that job with its document's newest text first."""
    worker, said, queue = _worker_without_forks(monkeypatch)

    queue("a#batch", background=True)
    worker._start_queued()
    assert said == []  # a background job runs: no driver waits for a turn
    worker.running.clear()
    queue("a"), queue("b"), queue("c")
    worker._start_queued()
    assert list(worker.running) == ["a"] and said == [{"type": "next", "key": "b"}]
    queue("b")  # `b`'s newer version takes its place: not announced again
    worker._start_queued()
    assert said == [{"type": "next", "key": "b"}]
    worker.running.clear()  # `a` is done: `b` starts, `c` is next
    worker._start_queued()
    assert list(worker.running) == ["b"] and said[-1] == {"type": "next", "key": "c"}
    queue("a")  # `a` again, behind `c`
    worker.running.clear()
    worker._start_queued()
    assert list(worker.running) == ["c"] and said[-1] == {"type": "next", "key": "a"}
    queue("c")  # `c`'s newer version, while `c` runs: `a` is still next
    worker._start_queued()
    assert list(worker.running) == ["c"] and len(said) == 3
    worker.running.clear()
    worker._start_queued()
    assert list(worker.running) == ["a"] and said[-1] == {"type": "next", "key": "c"}
    worker.running.clear()
    worker._start_queued()  # `c` starts; nothing waits
    queue("c")  # its newer version waits for its own job: not next while that runs
    worker._start_queued()
    assert list(worker.running) == ["c"] and len(said) == 4
    queue("d")
    worker._start_queued()
    assert said[-1] == {"type": "next", "key": "d"} and len(said) == 5
    worker.queue.pop("d")  # closed before its turn (a `cancel`)
    worker._start_queued()
    queue("d")  # opened and queued again: announced again
    worker._start_queued()
    assert said[-1] == {"type": "next", "key": "d"} and len(said) == 6


def test_background_jobs_start_only_while_no_driver_waits():
    assert scheduling.background_may_start(waiting_drivers=0)
    assert not scheduling.background_may_start(waiting_drivers=1)


def test_a_version_typed_within_a_second_of_the_last_runs_without_the_cost_observers():
    assert scheduling.costs_now(None)  # opened, not edited yet
    assert scheduling.costs_now(scheduling.TYPING_GAP_S)  # an edit after a pause
    assert not scheduling.costs_now(0.2)  # typing
    assert scheduling.warm_up_under_load(scheduling.WARM_UP_AFTER_JOBS)
    assert not scheduling.warm_up_under_load(scheduling.WARM_UP_AFTER_JOBS - 1)


def test_a_newer_version_keeps_its_documents_place_in_the_worker_queue():
    """Documents typed into faster than jobs run: each newer version replaces the queued one in
    its place, so the document queued first runs first (at the end, one typed into steadily
    never got to the front while others did)."""
    from torch_lsp.analysis.plan import build_plan
    from torch_lsp.shapes import worker as worker_module
    from torch_lsp.shapes.spec import JobSpec

    read_fd, write_fd = os.pipe()  # what the worker says goes here, unread
    worker = worker_module.Worker(out_fd=write_fd, parallel=2, cores=1)
    ids = iter(range(1, 100))

    def job(key: str, kind: str = "job") -> int:
        spec = JobSpec(key=key, main=build_plan(f"x = {next(ids)}\n", f"/p/{key}.py")).to_dict()
        job_id = next(ids)
        worker._accept({"type": kind, "id": job_id, "key": key, "spec": spec})
        return job_id

    job("a"), job("b"), job("c")
    newest_a = job("a")
    assert list(worker.queue) == ["a", "b", "c"] and worker.queue["a"].id == newest_a
    job("b", kind="cancel")  # a closed document leaves the queue
    job("d")
    assert list(worker.queue) == ["a", "c", "d"]
    worker._accept({"type": "job", "id": 99, "key": "c", "spec": {"broken": True}})
    assert list(worker.queue) == ["a", "d"]  # an unreadable job replaces nothing it cannot run


def test_durations_are_a_moving_average_per_document_with_bounded_memory():
    durations = scheduling.Durations(weight=0.5, capacity=2)
    durations.add("a", 1.0)
    durations.add("a", 3.0)
    assert durations.expected("a") == 2.0
    durations.add("b", 1.0)
    durations.add("c", 1.0)
    assert durations.expected("a") is None and durations.expected("c") == 1.0


def full_report() -> ShapeReport:
    tensor = Value("tensor", (8, 3), "float32")
    rng = Range(1, 2, 1, 9)
    return ShapeReport(
        plan_hash="abc", path="/p/model.py", variables=[VariableShapes("x", 1, 1, [tensor])],
        expressions=[ExpressionShapes(rng, [Value("tuple", items=(tensor, tensor))], "Linear(3, 3)", 12)],
        errors=[ShapeError("TL201", "bad", rng, "raw", [Location("/p/train.py", rng, "called from here")])],
        stopped="stopped", stopped_line=1, origin=Origin("driver", "/p/train.py", 4),
        notes=[Note("CIFAR10 replaced by FakeData", 3, "stand-in")], extras={"flops": {"1": 10}})


def test_a_report_survives_the_wire_unchanged():
    report = full_report()
    assert ShapeReport.from_json(report.to_json()) == report
    assert reports_from_json(reports_to_json({"/p/model.py": report})) == {"/p/model.py": report}


@pytest.mark.parametrize("broken", [
    "not json", "[]", json.dumps({"variables": [{"name": "x", "line": "one", "end_line": 1, "values": []}]}),
    json.dumps({"expressions": [{"range": {"line": 1}, "values": []}]}),
    json.dumps({"variables": [{"name": "x", "line": 1, "end_line": 1, "values": [{"kind": "nonsense"}]}]}),
])
def test_a_malformed_report_is_a_report_error_not_a_crash(broken):
    with pytest.raises(ReportError):
        ShapeReport.from_json(broken)


def touch(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_layout_of_a_package_module_a_script_and_a_src_layout(tmp_path):
    touch(tmp_path / "pyproject.toml")
    touch(tmp_path / "src/lib/__init__.py")
    touch(tmp_path / "src/lib/nets/__init__.py")
    touch(tmp_path / "src/lib/nets/resnet.py")
    touch(tmp_path / "scripts/train.py")
    module = project.layout(str(tmp_path / "src/lib/nets/resnet.py"), tmp_path)
    assert module.module == "lib.nets.resnet"
    assert module.roots == [str(tmp_path / "src"), str(tmp_path / "src/lib/nets"), str(tmp_path)]
    script = project.layout(str(tmp_path / "scripts/train.py"), tmp_path)
    assert script.module is None and script.roots == [str(tmp_path / "scripts"), str(tmp_path), str(tmp_path / "src")]


def test_the_cli_finds_the_project_root_from_a_file(tmp_path):
    touch(tmp_path / "repo/setup.py")
    touch(tmp_path / "repo/models/__init__.py")
    touch(tmp_path / "repo/models/detr.py")
    assert project.find_workspace_root(tmp_path / "repo/models/detr.py") == tmp_path / "repo"
    touch(tmp_path / "loose/pkg/__init__.py")
    touch(tmp_path / "loose/pkg/mod.py")
    assert project.find_workspace_root(tmp_path / "loose/pkg/mod.py") == tmp_path / "loose"


def test_a_verdict_about_a_freed_layer_is_not_applied_to_a_model_at_its_address(tmp_path):
    """The recorder stops tracing lines inside library-only modules, remembering the verdict per
    module by id. A layer freed after one synthesized call can leave its id to the next model
    built; that model's forward was then taken for library code and never traced (CI: a
    ConvEncoder got no shapes, now and then). Here the reuse is staged: the freed layer's entry
    sits at the model's id."""
    import torch
    from torch import nn

    from torch_lsp.analysis.plan import build_plan
    from torch_lsp.shapes.tracer import Recorder

    path = str(tmp_path / "model.py")
    source = "from torch import nn\n\nclass Net(nn.Module):\n    def forward(self, x):\n        return x\n"
    namespace: dict = {}
    exec(compile(source, path, "exec"), namespace)  # noqa: S102 - the fixture's own class, as a job defines it
    recorder = Recorder(build_plan(source, path), torch.device("meta"))
    layer, model = nn.Conv2d(1, 1, 1), namespace["Net"]()
    assert recorder._library_only(layer) is True
    assert recorder._library_only(model) is False
    recorder._library_modules[id(model)] = recorder._library_modules[id(layer)]  # the freed layer's entry
    assert recorder._library_only(model) is False
