"""Jobs that run one file and record several: package context, imported project modules, editor
buffers served to `import`, errors seen from both files. In process (no fork): fast."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.shapes.helpers import cpu_run, shape_of
from torch_lsp.analysis.plan import build_plan
from torch_lsp.shapes import project
from torch_lsp.shapes.spec import JobSpec

LAYERS = """
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c * 2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        y = self.conv(x)
        z = self.pool(y)
        return z
"""

TRAIN = """
import torch
from .layers import Block

model = Block(3)
batch = torch.randn(2, 3, 8, 8)
out = model(batch)
"""


def write_project(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"))


def spec_for(root: Path, driver: str, record: list[str], overlay: dict[str, str] | None = None) -> JobSpec:
    path = str(root / driver)
    layout = project.layout(path, root)
    return JobSpec(key=path, main=build_plan(Path(path).read_text(), path), record=[str(root / r) for r in record],
                   roots=layout.roots, workspace=str(root), module=layout.module,
                   overlay={str(root / k): textwrap.dedent(v).lstrip("\n") for k, v in (overlay or {}).items()},
                   timeout=30.0)


@pytest.fixture()
def run_spec_in_process(run_meta, monkeypatch):
    """run_spec in this process, with the job's sys.path roots (the fork sets them)."""
    import sys

    from torch_lsp.shapes.job import run_spec

    def run(spec: JobSpec):
        monkeypatch.setattr(sys, "path", [*spec.roots, *sys.path])
        return run_spec(spec)

    return run


def values(report, name):
    found = [v for v in report.variables if v.name == name]
    assert found, f"no {name!r} in {report.path}: {[v.name for v in report.variables]} (stopped: {report.stopped})"
    return [tuple(v.shape) for v in found[-1].values]


def reference_shapes(c: int = 3) -> dict:
    namespace = cpu_run(LAYERS + f"\nimport torch\nm = Block({c})\nx = torch.randn(2, {c}, 8, 8)\ny = m.conv(x)\nz = m.pool(y)\n")
    return {name: shape_of(namespace[name]) for name in ("x", "y", "z")}


def test_a_module_of_a_package_runs_with_its_package_context_and_its_imports_are_recorded(tmp_path, run_spec_in_process):
    write_project(tmp_path, {"pkg/__init__.py": "", "pkg/layers.py": LAYERS, "pkg/train.py": TRAIN})
    reports = run_spec_in_process(spec_for(tmp_path, "pkg/train.py", ["pkg/layers.py"]))
    train, layers = reports[str(tmp_path / "pkg/train.py")], reports[str(tmp_path / "pkg/layers.py")]
    assert train.stopped is None and layers.stopped is None
    expected = reference_shapes()
    for name in ("x", "y", "z"):  # shapes on the model file's own lines, as real CPU execution gives
        assert values(layers, name) == [expected[name]]
    assert values(train, "out") == [expected["z"]]
    # Where the model file's shapes came from: the driver's call of the model.
    assert layers.origin.kind == "driver" and layers.origin.path == str(tmp_path / "pkg/train.py")
    assert layers.origin.line == TRAIN.lstrip("\n").splitlines().index("out = model(batch)")


def test_the_editors_unsaved_text_of_an_imported_file_is_what_runs(tmp_path, run_spec_in_process):
    write_project(tmp_path, {"pkg/__init__.py": "", "pkg/layers.py": LAYERS, "pkg/train.py": TRAIN})
    edited = LAYERS.replace("c * 2", "c * 5")
    reports = run_spec_in_process(spec_for(tmp_path, "pkg/train.py", ["pkg/layers.py"], {"pkg/layers.py": edited}))
    layers = reports[str(tmp_path / "pkg/layers.py")]
    assert values(layers, "y") == [(2, 15, 8, 8)]
    assert shape_of(cpu_run(edited + "\nimport torch\ny = Block(3).conv(torch.randn(2, 3, 8, 8))\n")["y"]) == (2, 15, 8, 8)


def test_a_shape_error_in_the_model_file_is_reported_there_and_at_the_call_site(tmp_path, run_spec_in_process):
    broken_train = TRAIN.replace("torch.randn(2, 3, 8, 8)", "torch.randn(2, 4, 8, 8)")  # 4 channels, conv wants 3
    write_project(tmp_path, {"pkg/__init__.py": "", "pkg/layers.py": LAYERS, "pkg/train.py": broken_train})
    with pytest.raises(RuntimeError):  # real torch agrees that this fails
        cpu_run(LAYERS + "\nimport torch\nBlock(3)(torch.randn(2, 4, 8, 8))\n")
    reports = run_spec_in_process(spec_for(tmp_path, "pkg/train.py", ["pkg/layers.py"]))
    train, layers = reports[str(tmp_path / "pkg/train.py")], reports[str(tmp_path / "pkg/layers.py")]
    model_lines = textwrap.dedent(LAYERS).lstrip("\n").splitlines()
    train_lines = broken_train.lstrip("\n").splitlines()
    [inner] = layers.errors
    assert inner.range.line == model_lines.index("        y = self.conv(x)") and inner.code.startswith("TL2")
    assert [(r.path, r.range.line) for r in inner.related] == [(str(tmp_path / "pkg/train.py"), train_lines.index("out = model(batch)"))]
    [outer] = train.errors
    assert outer.range.line == train_lines.index("out = model(batch)") and outer.message == inner.message
    assert [(r.path, r.range.line) for r in outer.related] == [(str(tmp_path / "pkg/layers.py"), inner.range.line)]


def test_imported_project_modules_get_the_plan_transform_and_nothing_is_cached_to_disk(tmp_path, run_spec_in_process):
    write_project(tmp_path, {
        "helpers.py": """
            import torch
            state = torch.load("checkpoint-that-does-not-exist.pt")
            def make():
                return torch.nn.Linear(4, 2)
        """,
        "train.py": """
            import torch
            from helpers import make
            out = make()(torch.randn(3, 4))
        """,
    })
    reports = run_spec_in_process(spec_for(tmp_path, "train.py", []))
    train = reports[str(tmp_path / "train.py")]
    assert train.stopped is None, train.stopped
    assert values(train, "out") == [(3, 2)]
    assert not list(tmp_path.rglob("__pycache__"))


def test_an_in_process_run_leaves_no_project_module_behind(tmp_path, run_spec_in_process):
    import sys

    write_project(tmp_path, {"pkg/__init__.py": "", "pkg/layers.py": LAYERS, "pkg/train.py": TRAIN})
    run_spec_in_process(spec_for(tmp_path, "pkg/train.py", ["pkg/layers.py"]))
    assert "pkg" not in sys.modules and "pkg.layers" not in sys.modules
    assert getattr(sys.modules["__main__"], "__file__", None) != str(tmp_path / "pkg/train.py")
    assert not [name for name in sys.modules if "torch-lsp" in name]  # the job's import mark is gone


def test_what_a_job_imported_is_read_back_to_its_mark_and_installed_modules_stay(tmp_path, run_spec_in_process):
    import sys

    from torch_lsp.shapes import job

    sys.modules.pop("this", None)  # the standard library's Zen: installed code, imported by the job
    write_project(tmp_path, {"helper.py": "WIDTH = 3\n", "train.py": (
        "import contextlib, io\nwith contextlib.redirect_stdout(io.StringIO()):\n    import this\n"
        "import torch\nimport helper\nout = torch.randn(2, helper.WIDTH)\n")})
    train = run_spec_in_process(spec_for(tmp_path, "train.py", []))[str(tmp_path / "train.py")]
    assert train.stopped is None and values(train, "out") == [(2, 3)]
    assert "helper" not in sys.modules and "this" in sys.modules

    mark = job._mark_imports()
    sys.modules["torch_lsp_test_new_module"] = sys.modules["this"]
    assert job._imported_since(mark) == ["torch_lsp_test_new_module"] and mark not in sys.modules
    del sys.modules["torch_lsp_test_new_module"]
    mark = job._mark_imports()
    del sys.modules[mark]  # the user's code took it out: nothing is known
    assert job._imported_since(mark) == []


def test_a_project_file_created_since_the_last_job_is_found_even_where_the_folders_mtime_did_not_move(
        tmp_path, run_spec_in_process):
    # A file system with coarse timestamps: the folder's mtime reads the same after a file is
    # added, so Python's cached listing of it would not be made again. Each job forgets the
    # project's folders' listings (and only theirs: a listing of site-packages stays).
    write_project(tmp_path, {"layers.py": LAYERS, "train.py": "import layers\nfrom layers import Block\n"})
    first = run_spec_in_process(spec_for(tmp_path, "train.py", []))[str(tmp_path / "train.py")]
    assert first.stopped is None and not first.errors, (first.stopped, first.errors)
    listed = (tmp_path.stat().st_atime_ns, tmp_path.stat().st_mtime_ns)
    write_project(tmp_path, {"extra.py": "import torch\nWIDTH = 5\n",
                             "train.py": "import torch\nimport extra\nout = torch.nn.Linear(3, extra.WIDTH)(torch.randn(2, 3))\n"})
    os.utime(tmp_path, ns=listed)
    library_finder = sys.path_importer_cache[os.path.dirname(os.path.dirname(torch.__file__))]
    library_finder.find_spec("torch_lsp_surely_not_a_module")  # lists site-packages now
    listing = library_finder._path_mtime
    second = run_spec_in_process(spec_for(tmp_path, "train.py", []))[str(tmp_path / "train.py")]
    assert second.stopped is None and not second.errors, (second.stopped, second.errors)
    assert values(second, "out") == [shape_of(cpu_run("import torch\nout = torch.nn.Linear(3, 5)(torch.randn(2, 3))\n")["out"])]
    assert library_finder._path_mtime == listing != -1  # not forgotten: the next import need not list it again
