"""The warm worker: isolation, timeouts, crashes, cancellation, cache, runtime guards."""

import asyncio
import os
import signal
import textwrap

import pytest
import pytest_asyncio

from tests.shapes.helpers import cpu_run, held_until, shape_of, variable
from torch_lsp.analysis.plan import build_plan
from torch_lsp.shapes.engine import JobSettings, ShapeEngine
from torch_lsp.shapes.report import Note

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]  # a real worker process


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def engine():
    engine = ShapeEngine()
    assert await engine.wait_ready(120)
    yield engine
    await engine.close()


def plan_for(tmp_path, source: str, name: str = "user_code.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return build_plan(path.read_text(), str(path))


async def test_a_loop_that_never_ends_is_stopped_with_its_line(engine, tmp_path):
    plan = plan_for(tmp_path, "import torch\nx = torch.zeros(2, 3)\nwhile x.shape[0] > 0:\n    pass\n")
    report = await engine.analyse("hang", plan, JobSettings(timeout=1.0))
    # The timer fires on the `while` line or in its body: both are "the loop".
    assert report.stopped in ("shape analysis stopped after 1 s at line 3", "shape analysis stopped after 1 s at line 4")
    assert variable(report, "x").values[0].shape == (2, 3)  # shapes up to there are kept


async def test_sys_exit_and_os_exit_do_not_hurt_the_worker(engine, tmp_path):
    report = await engine.analyse("exit", plan_for(tmp_path, "import sys, torch\nx = torch.ones(4)\nsys.exit(3)\n"))
    assert "sys.exit" in report.stopped and report.errors == []
    report = await engine.analyse("exit", plan_for(tmp_path, "import os, torch\nx = torch.ones(4)\nos._exit(3)\n"))
    assert report.stopped == "shape analysis ended: the process exited with status 3 at line 3"
    pid = engine.pid
    report = await engine.analyse("exit", plan_for(tmp_path, "import torch\ny = torch.ones(2)\n"))
    assert variable(report, "y").values[0].shape == (2,) and engine.pid == pid


async def test_exception_in_init_is_an_error_at_the_constructor(engine, tmp_path):
    source = """
    import torch.nn as nn
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)
            raise ValueError("broken model")
    m = Model()
    """
    report = await engine.analyse("init", plan_for(tmp_path, source))
    assert report.errors == [] and "ValueError: broken model" in report.stopped
    assert report.stopped_line == 6


async def test_huge_allocations_hit_the_memory_limit_not_the_machine(engine, tmp_path):
    source = "import torch\nsmall = torch.ones(3)\nhuge = torch.empty(400_000, 400_000)\nafter = torch.ones(2)\n"
    # On meta a huge tensor costs nothing; on CPU the address-space limit stops the job quietly.
    meta = await engine.analyse("huge", plan_for(tmp_path, source))
    assert variable(meta, "huge").values[0].shape == (400_000, 400_000) and meta.errors == []
    cpu = await engine.analyse("huge", plan_for(tmp_path, source), JobSettings(device="cpu", memory_mb=512))
    assert cpu.errors == [] and cpu.stopped and cpu.stopped_line == 2
    assert variable(cpu, "small").values[0].shape == (3,)


async def test_crashed_worker_is_restarted(engine, tmp_path):
    restarts = engine.restarts
    os.kill(engine.pid, signal.SIGKILL)
    report = await engine.analyse("crash", plan_for(tmp_path, "import torch\nz = torch.ones(5, 1)\n"))
    assert variable(report, "z").values[0].shape == (5, 1)
    assert engine.restarts == restarts + 1


async def test_unsaved_texts_of_open_documents_reach_jobs_once_and_again_after_a_restart(engine, tmp_path):
    from torch_lsp.shapes.spec import JobSpec

    (tmp_path / "sizes.py").write_text("WIDTH = 3\n")  # on disk; the editor holds another text
    main = plan_for(tmp_path, "import torch\nfrom sizes import WIDTH\nv = torch.ones(2, WIDTH)\n", "uses_sizes.py")
    written = []
    real_write = engine._write
    engine._write = lambda process, message: (written.append(message), real_write(process, message))[1]

    def spec(width: int) -> JobSpec:
        return JobSpec(key="sizes", main=main, roots=[str(tmp_path)], workspace=str(tmp_path),
                       overlay={str(tmp_path / "sizes.py"): f"WIDTH = {width}\n"}, timeout=30.0)

    def v(reports):
        return variable(reports[main.filename], "v").values[0].shape

    try:
        assert v(await engine.run(spec(7))) == (2, 7)
        assert v(await engine.run(spec(8))) == (2, 8)  # a new text
        sent = engine._texts.messages_for({"type": "job", "id": 0, "key": "k", "spec": spec(8).to_dict()})
        assert [m["type"] for m in sent] == ["job"]  # held by the worker: the next job only names it
        os.kill(engine.pid, signal.SIGKILL)
        engine.invalidate()
        assert v(await engine.run(spec(8))) == (2, 8)  # the new worker process got the text again
    finally:
        del engine._write
    assert len(written) >= 3 and all("overlay" in m["spec"] for m in written)  # pending jobs keep their texts
    assert shape_of(cpu_run("WIDTH = 8\nimport torch\nv = torch.ones(2, WIDTH)\n")["v"]) == (2, 8)


async def test_what_jobs_import_is_imported_once_by_the_worker_not_by_every_fork(engine, tmp_path):
    from torch_lsp.shapes.observers import COST
    from torch_lsp.shapes.spec import JobSpec

    os.kill(engine.pid, signal.SIGKILL)  # a fresh worker process: nothing imported for jobs yet
    engine.invalidate()
    source = "import torch\nimport torchvision\nnet = torchvision.models.resnet18(weights=None)\ny = net(torch.zeros(1, 3, 64, 64))\n"
    main = plan_for(tmp_path, source, "vision.py")

    def spec(run: int) -> JobSpec:
        return JobSpec(key=f"vision{run}", main=main, cwd=str(tmp_path), observers=list(COST), timeout=60.0)

    for run in range(2):
        reports = await engine.run(spec(run))
        assert variable(reports[main.filename], "y").values[0].shape == (1, 1000)
    [imported] = engine.worker_imports  # the first job's imports, done in the worker; none for the second
    assert {"torch_lsp.shapes.job", "torch_lsp.shapes.observe_cost", "torch_lsp.shapes.memory",
            "torchvision"} <= set(imported["modules"]), imported
    assert shape_of(cpu_run(source)["y"]) == (1, 1000)


async def until(condition, ceiling_s: float = 120.0) -> None:
    """Wait for something the worker reports on its own (no reply to await), up to a ceiling."""
    deadline = asyncio.get_running_loop().time() + ceiling_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the worker never reported it"
        await asyncio.sleep(0.05)


async def test_the_worker_warms_up_again_with_the_observers_a_job_asks_for(engine, tmp_path):
    """The warm-up runs what jobs run (worker.warm_up): idle after a plain job, without
    observers; once a job asks for the cost observers, again with them, so that what they import
    on first use is imported by the worker and not by every later job's fork."""
    from torch_lsp.shapes.observers import COST
    from torch_lsp.shapes.spec import JobSpec

    os.kill(engine.pid, signal.SIGKILL)  # a fresh worker process
    engine.invalidate()
    source = "import torch\nnet = torch.nn.Linear(4, 3)\ny = net(torch.ones(2, 4))\ny.sum().backward()\n"
    main = plan_for(tmp_path, source, "warm.py")
    reports = await engine.run(JobSpec(key="plain", main=main, cwd=str(tmp_path)))
    assert variable(reports[main.filename], "y").values[0].shape == (2, 3)
    await until(lambda: engine.worker_warm_ups)
    assert [w["observers"] for w in engine.worker_warm_ups] == [[]]
    main = plan_for(tmp_path, source + "# observed\n", "warm.py")  # not the cached result
    reports = await engine.run(JobSpec(key="observed", main=main, cwd=str(tmp_path), observers=list(COST)))
    assert variable(reports[main.filename], "y").values[0].shape == (2, 3)
    await until(lambda: len(engine.worker_warm_ups) == 2)
    assert engine.worker_warm_ups[1]["observers"] == sorted(COST)
    assert shape_of(cpu_run(source)["y"]) == (2, 3)


async def test_the_worker_warms_up_between_jobs_under_steady_load(engine, tmp_path):
    """Documents typed into keep a job queued all the time: the worker is never idle, and waited
    for the warm-up for ever (every fork paid torch's first use again). Once enough jobs have
    started without it, it runs between two of them, while more wait."""
    from torch_lsp.shapes import scheduling
    from torch_lsp.shapes.spec import JobSpec

    os.kill(engine.pid, signal.SIGKILL)  # a fresh worker process, not warmed up
    engine.invalidate()
    # The first job sleeps, so that all the others are queued behind it before it ends.
    slow = plan_for(tmp_path, "import time, torch\ntime.sleep(1.0)\nx = torch.ones(2)\n", "slow.py")
    first = asyncio.ensure_future(engine.run(JobSpec(key="slow", main=slow, cwd=str(tmp_path))))
    assert await engine.wait_started("slow")
    assert engine.worker_warm_ups == []
    warm_ups_seen = {}  # job -> warm-ups the engine had heard of when its result came
    parse = engine._parse

    def noted(message, pending):
        # As the engine reads the result, in the worker's order: a job's task may end only after
        # the engine has read more messages (a busy machine delays the event loop), the warm-up
        # among them.
        if pending.key.startswith("doc"):
            warm_ups_seen[int(pending.key[3:])] = len(engine.worker_warm_ups)
        return parse(message, pending)

    engine._parse = noted
    try:
        jobs = []
        for number in range(scheduling.WARM_UP_AFTER_JOBS + 3):
            source = f"import torch\ny = torch.ones({number + 1}, 3)\n"
            jobs.append(asyncio.ensure_future(engine.run(JobSpec(
                key=f"doc{number}", main=plan_for(tmp_path, source, f"doc{number}.py"), cwd=str(tmp_path)))))
        await first
        results = await asyncio.gather(*jobs)
    finally:
        del engine._parse  # the class's again
    for number, reports in enumerate(results):
        assert variable(reports[str(tmp_path / f"doc{number}.py")], "y").values[0].shape == (number + 1, 3)
    # Warmed up while jobs were still queued: the last ones' results came after it (idle, it
    # would have warmed up only after the last).
    assert warm_ups_seen[scheduling.WARM_UP_AFTER_JOBS + 2] == 1 and warm_ups_seen[0] == 0
    assert shape_of(cpu_run("import torch\ny = torch.ones(3, 3)\n")["y"]) == (3, 3)


async def test_the_worker_puts_its_heap_on_huge_pages_when_idle_and_jobs_fork_from_it(engine, tmp_path):
    """After the warm-up, the idle worker collapses its heap onto 2 MB pages (huge_pages.py) and
    says so; jobs forked from it afterwards give CPU's shapes. A kernel that cannot (THP off,
    before Linux 6.1) is reported as such instead."""
    from torch_lsp.shapes.spec import JobSpec

    os.kill(engine.pid, signal.SIGKILL)  # a fresh worker process
    engine.invalidate()
    source = "import torch\nnet = torch.nn.Conv2d(3, 8, 3)\ny = net(torch.ones(2, 3, 16, 16))\n"
    main = plan_for(tmp_path, source, "huge.py")
    await engine.run(JobSpec(key="huge", main=main, cwd=str(tmp_path)))
    await until(lambda: engine.worker_huge_pages is not None)
    report = engine.worker_huge_pages
    thp = _transparent_huge_pages()
    if thp in ("always", "madvise"):
        assert report["unsupported"] is None, report
        # Collapsed, unless the kernel had no free huge page just then (skipped, not an error).
        assert (report["collapsed_mb"] > 0 and report["huge_mb"] > 0) or report["skipped_mb"] > 0, report
    elif report["unsupported"] is None:  # THP off or unknown: nothing may have been collapsed
        assert report["collapsed_mb"] == 0, report
    for run in range(3):
        main = plan_for(tmp_path, source + f"# run {run}\n", "huge.py")  # not the cached result
        reports = await engine.run(JobSpec(key="huge", main=main, cwd=str(tmp_path)))
        assert variable(reports[main.filename], "y").values[0].shape == (2, 8, 14, 14)
    assert shape_of(cpu_run(source)["y"]) == (2, 8, 14, 14)


def _transparent_huge_pages() -> str | None:
    """The kernel's THP mode ("always", "madvise", "never"), None where it has none."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as setting:
            return setting.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return None


async def test_dynamo_is_imported_by_the_worker_once_a_job_needed_it(engine, tmp_path):
    """The worker starts without dynamo (lazy_dynamo.py); non-reentrant checkpointing reads its
    config, so the first such job's fork imports it, and the worker imports it for the next."""
    from torch_lsp.shapes.spec import JobSpec

    os.kill(engine.pid, signal.SIGKILL)  # a fresh worker process
    engine.invalidate()
    plain = plan_for(tmp_path, "import torch\nx = torch.nn.functional.layer_norm(torch.ones(2, 5), (5,))\n", "plain.py")
    reports = await engine.run(JobSpec(key="plain", main=plain, cwd=str(tmp_path)))
    assert variable(reports[plain.filename], "x").values[0].shape == (2, 5)
    source = textwrap.dedent("""
        import torch
        from torch.utils.checkpoint import checkpoint
        layer = torch.nn.Linear(4, 3)
        y = checkpoint(layer, torch.ones(2, 4), use_reentrant=False)
        y.sum().backward()
    """)
    for run in range(2):
        main = plan_for(tmp_path, source + f"# run {run}\n", "checkpointed.py")  # not the cached result
        reports = await engine.run(JobSpec(key=f"checkpointed{run}", main=main, cwd=str(tmp_path)))
        assert variable(reports[main.filename], "y").values[0].shape == (2, 3)
    imported = [name for entry in engine.worker_imports for name in entry["modules"]]
    assert "torch._dynamo" in imported, engine.worker_imports  # for the second job, after the first
    assert shape_of(cpu_run(source)["y"]) == (2, 3)


async def test_sympy_is_imported_by_the_worker_once_a_job_needed_it(engine, tmp_path):
    """The worker starts with stand-ins for symbolic shapes and sympy (lazy_symbolic.py); a
    script that uses sympy itself makes its job's fork import it, and the worker for the next."""
    from torch_lsp.shapes.spec import JobSpec

    os.kill(engine.pid, signal.SIGKILL)  # a fresh worker process
    engine.invalidate()
    plain = plan_for(tmp_path, "import torch\nx = torch.ones(2, 5).mean(0)\n", "plain.py")  # a Python reference
    reports = await engine.run(JobSpec(key="plain", main=plain, cwd=str(tmp_path)))
    assert variable(reports[plain.filename], "x").values[0].shape == (5,)
    assert not [entry for entry in engine.worker_imports if "sympy" in entry["modules"]]
    source = textwrap.dedent("""
        import sympy
        import torch
        side = sympy.Integer(3) * 2
        y = torch.zeros(int(side), 4)
    """)
    for run in range(2):
        main = plan_for(tmp_path, source + f"# run {run}\n", "symbolic.py")  # not the cached result
        reports = await engine.run(JobSpec(key=f"symbolic{run}", main=main, cwd=str(tmp_path)))
        assert variable(reports[main.filename], "y").values[0].shape == (6, 4)
    imported = [name for entry in engine.worker_imports for name in entry["modules"]]
    assert "torch.fx.experimental.symbolic_shapes" in imported, engine.worker_imports
    assert shape_of(cpu_run(source)["y"]) == (6, 4)


async def test_a_newer_version_kills_a_job_that_overran_what_its_document_usually_takes(engine, tmp_path):
    # History: this document's jobs take milliseconds.
    first = await engine.analyse("doc", plan_for(tmp_path, "import torch\nq = torch.ones(1)\n", "v0.py"))
    assert variable(first, "q").values[0].shape == (1,)
    hung = asyncio.ensure_future(engine.analyse(
        "doc", plan_for(tmp_path, "import torch\nwhile True:\n    pass\n", "v1.py"), JobSettings(timeout=120)))
    assert await engine.wait_started("doc")
    # Each newer version asks again; once the hung job has clearly overrun, it is killed. How many
    # versions that takes depends on the machine's speed, not the outcome.
    for size in range(2, 2000):
        newest = asyncio.ensure_future(engine.analyse(
            "doc", plan_for(tmp_path, f"import torch\nq = torch.ones({size})\n", f"v{size}.py")))
        done, _ = await asyncio.wait([hung], timeout=0.1)
        if done:
            break
    assert hung.result() is None  # killed: its caller hears "cancelled"
    report = await newest
    assert variable(report, "q").values[0].shape == (size,)


async def test_a_newer_version_lets_a_job_within_its_usual_time_finish(engine, tmp_path):
    busy = "import time, torch\nstart = time.monotonic()\nwhile time.monotonic() - start < 1.0:\n    pass\nq = torch.ones({})\n"
    for size in (1, 2):  # history: about a second per job
        report = await engine.analyse("steady", plan_for(tmp_path, busy.format(size), f"s{size}.py"))
        assert variable(report, "q").values[0].shape == (size,)
    running = asyncio.ensure_future(engine.analyse("steady", plan_for(tmp_path, busy.format(3), "s3.py")))
    assert await engine.wait_started("steady")
    newer = await engine.analyse("steady", plan_for(tmp_path, "import torch\nq = torch.ones(4)\n", "s4.py"))
    finished = await running
    assert finished is not None and variable(finished, "q").values[0].shape == (3,)
    assert variable(newer, "q").values[0].shape == (4,)


async def test_same_plan_is_served_from_the_cache(engine, tmp_path):
    plan = plan_for(tmp_path, "import torch\nw = torch.ones(3, 3)\n")
    first = await engine.analyse("cache", plan)
    notes = list(first.notes)
    first.notes.append(Note("added by a caller"))  # callers add to their result (session.analyse)
    again = await engine.analyse("cache", plan)
    assert again.duration_ms == first.duration_ms  # the worker's answer of the first run: not run again
    assert variable(again, "w").values[0].shape == (3, 3)
    assert again.notes == notes and again is not first  # kept as the worker sent it, not as changed


async def test_side_effects_are_neutralised(engine, tmp_path):
    source = f"""
    import os, subprocess, torch
    print("stdout must not reach the protocol")
    with open({str(tmp_path / 'written.txt')!r}, "w") as f:
        f.write("no")
    os.makedirs({str(tmp_path / 'made')!r})
    torch.save(torch.ones(1), {str(tmp_path / 'saved.pt')!r})
    name = input("your name? ")
    before = torch.ones(2)
    subprocess.run(["touch", {str(tmp_path / 'touched')!r}])
    after = torch.ones(2)
    """
    report = await engine.analyse("effects", plan_for(tmp_path, source))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user_code.py"]
    assert "subprocess" in report.stopped and report.errors == []
    assert variable(report, "before").values[0].shape == (2,)
    assert not [v for v in report.variables if v.name == "after"]


async def test_datasets_become_fake_data_of_the_same_size(engine, tmp_path):
    source = """
    import torch
    import torchvision
    import torchvision.transforms as T
    from torch.utils.data import DataLoader
    train = torchvision.datasets.CIFAR10(root="./data", train=True, download=True, transform=T.ToTensor())
    loader = DataLoader(train, batch_size=4, shuffle=True, num_workers=2)
    images, labels = next(iter(loader))
    """
    report = await engine.analyse("data", plan_for(tmp_path, source))
    assert report.errors == [] and report.stopped is None, report
    assert variable(report, "images").values[0].shape == (4, 3, 32, 32)
    assert variable(report, "labels").values[0].shape == (4,)
    assert not (tmp_path / "data").exists()
    # The same shapes as real CIFAR-10 batches (FakeData of CIFAR size stands in on CPU here too).
    import torchvision
    reference = torchvision.datasets.FakeData(size=8, image_size=(3, 32, 32), transform=torchvision.transforms.ToTensor())
    assert shape_of(reference[0][0]) == (3, 32, 32)


async def test_a_hang_is_reported_as_information_at_its_line(engine, tmp_path):
    from torch_lsp.shapes import view

    source = "import torch\nx = torch.zeros(2)\nwhile True:\n    x = x + 1\n"
    report = await engine.analyse("hang-note", plan_for(tmp_path, source), JobSettings(timeout=0.5))
    [note] = view.findings(report, source.splitlines())
    assert note.code == "TL299" and note.severity.name == "INFO"
    assert note.span.start.line in (2, 3) and "stopped after 0.5 s" in note.message



async def test_background_jobs_never_make_a_driver_wait_and_are_timed_on_cpu(engine, tmp_path):
    from torch_lsp.shapes.spec import JobSpec

    # Background jobs fill the worker's background slots with a loop that never ends...
    spinning = plan_for(tmp_path, "import torch\nx = torch.zeros(2)\nwhile True:\n    pass\n", "spin.py")
    busy = [asyncio.ensure_future(engine.run(JobSpec(key=f"spin#probes-{i}", main=spinning, timeout=1.0,
                                                     background=True))) for i in range(engine.parallel + 1)]
    assert await engine.wait_started("spin#probes-0")
    # ... and a driver still starts and finishes at once, in its own slots.
    report = await engine.analyse("driver", plan_for(tmp_path, "import torch\ny = torch.ones(3, 4)\n", "driver.py"))
    assert variable(report, "y").values[0].shape == (3, 4)
    # A background job stops at its budget (CPU time: its loop burns it) like a driver at its own.
    for reports in await asyncio.gather(*busy):
        assert reports[str(tmp_path / "spin.py")].stopped.startswith("shape analysis stopped after 1 s at line")


async def test_the_engine_hears_which_queued_driver_job_starts_next(engine, tmp_path):
    """While a driver job runs, the worker names the queued driver that starts next, once per
    turn (the server then replaces it with its document's newest text: server/shapes.py)."""
    from torch_lsp.shapes.spec import JobSpec

    announced: list[str] = []
    engine.on_next = announced.append
    flag = tmp_path / "go"
    try:
        # The first job runs until the test has heard the announcement.
        slow = plan_for(tmp_path, held_until(flag, "x = 1\n"), "slow_first.py")
        first = asyncio.ensure_future(engine.run(JobSpec(key="first", main=slow, cwd=str(tmp_path), timeout=60)))
        assert await engine.wait_started("first")
        others = [asyncio.ensure_future(engine.run(JobSpec(key=f"next{n}", main=plan_for(tmp_path, f"y = {n}\n", f"next{n}.py"),
                                                           cwd=str(tmp_path)))) for n in range(2)]
        for _ in range(6000):  # event-driven, with a generous ceiling
            if announced or first.done():
                break
            await asyncio.sleep(0.01)
        flag.write_text("")
        await asyncio.gather(first, *others)
        # On two cores one driver runs at a time: next0, then next1 (with more cores next0 may
        # start beside the first job, and next1 is announced first).
        assert announced and len(announced) == len(set(announced)) and set(announced) <= {"next0", "next1"}
    finally:
        engine.on_next = None
        flag.write_text("")
