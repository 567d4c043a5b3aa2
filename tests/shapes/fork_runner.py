"""Run a job like the worker does, in a fork of the test process: the fork isolates itself and
installs guards, inputs and script_env exactly as a worker's job does (worker._isolate), so the
patches (argparse, open, torchvision, DataLoader...) never reach the test process. Returns the
reports by file."""

from __future__ import annotations

import json
import os
import select
import signal
import time
from pathlib import Path


def job_spec(path: str | Path, source: str | None = None, argv=(), workspace: str | Path | None = None,
             device: str = "meta", timeout: float = 60.0, record=()):
    from torch_lsp.analysis.plan import build_plan
    from torch_lsp.shapes import project
    from torch_lsp.shapes.spec import JobSpec

    path = str(Path(path).resolve())
    plan = build_plan(source if source is not None else Path(path).read_text(), path)
    assert plan.error is None, plan.error
    layout = project.layout(path, Path(workspace).resolve() if workspace else None)
    return JobSpec(key=path, main=plan, record=[path, *[str(Path(r).resolve()) for r in record]],
                   roots=layout.roots, workspace=str(layout.workspace), module=layout.module,
                   cwd=os.path.dirname(path), argv=list(argv), device=device, timeout=timeout)


def run_spec_in_fork(spec, deadline_s: float | None = None) -> dict:
    """{path: ShapeReport} of the job, run in a fork isolated like a worker's job."""
    from torch_lsp.shapes.report import reports_from_json

    from torch_lsp.shapes import sandbox

    job_directory = sandbox.job_directory()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(read_fd)
        try:
            payload = _child(spec, job_directory)
        except BaseException as error:  # noqa: BLE001
            payload = json.dumps({"crash": repr(error)})
        with os.fdopen(write_fd, "w") as out:
            out.write(payload)
        os._exit(0)
    os.close(write_fd)
    chunks, deadline = [], time.monotonic() + (deadline_s or spec.timeout + 30)
    with os.fdopen(read_fd, "rb") as pipe:
        while time.monotonic() < deadline:
            if select.select([pipe], [], [], 1.0)[0]:
                chunk = os.read(pipe.fileno(), 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
    if time.monotonic() >= deadline:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    sandbox.remove_job_directory(job_directory)
    data = b"".join(chunks) or b'{"crash": "no output (killed at the deadline)"}'
    assert b'"crash"' not in data[:20], data
    return reports_from_json(data.decode())


def run_in_fork(path: str | Path, **options) -> tuple[object, list]:
    """The report of `path` run as its own driver, and its notes."""
    spec = job_spec(path, **options)
    report = run_spec_in_fork(spec)[spec.main.filename]
    return report, report.notes


def _child(spec, job_directory: str) -> str:
    import torch

    from torch_lsp.shapes import worker
    from torch_lsp.shapes.job import run_spec
    from torch_lsp.shapes.report import reports_to_json

    # The test process may have run CPU kernels (OpenMP threads) before forking: a child that
    # starts a parallel region with threads inherited half-alive hangs. One thread is enough here.
    torch.set_num_threads(1)
    worker._isolate(spec, job_directory)  # the sandbox too, as in a worker's job
    worker._enter_project(spec)
    return reports_to_json(run_spec(spec))
