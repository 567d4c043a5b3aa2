"""The workspace's first scan in a child process (shapes/scan_process.py): the same facts as a
scan in the server's thread, no code of the workspace run, a failing child falls back."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from torch_lsp.analysis.workspace import WorkspaceIndex
from torch_lsp.shapes import scan_process

PROJECTS = Path(__file__).resolve().parents[2] / "fixtures" / "projects"


def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "workspace"
    shutil.copytree(PROJECTS, root)
    return root


def test_a_child_scans_the_same_facts_as_the_thread(tmp_path, monkeypatch):
    root = workspace(tmp_path)
    spawned = []
    real = scan_process._scan_in_child
    monkeypatch.setattr(scan_process, "_scan_in_child", lambda *a: spawned.append(a) or real(*a))
    here, there = WorkspaceIndex(root), WorkspaceIndex(root)
    result = here.scan()
    assert scan_process.scan(there, in_process_below=1).files == result.files
    assert spawned  # it did run in a child
    assert there.files.keys() == here.files.keys() and len(here.files) > 20
    assert all(there.files[path] == here.files[path] for path in here.files)
    # The index answers from the adopted facts as from its own.
    model = str((root / "model_train" / "model.py").resolve())
    assert [c.qualname for c in there.classes_in(model)] == [c.qualname for c in here.classes_in(model)] == ["model.Net"]


def test_a_small_workspace_is_scanned_in_the_thread(tmp_path, monkeypatch):
    root = workspace(tmp_path)
    monkeypatch.setattr(scan_process, "_scan_in_child", lambda *a: (_ for _ in ()).throw(AssertionError("spawned")))
    assert scan_process.scan(WorkspaceIndex(root), in_process_below=10_000).files > 20


def test_the_child_runs_no_code_of_the_workspace(tmp_path, monkeypatch):
    """The workspace is the child's working directory and holds a `logging.py` and `pickle.py`
    that would leave a mark if imported: the child imports the standard library's."""
    root = workspace(tmp_path)
    for name in ("logging.py", "pickle.py", "subprocess.py"):
        (root / name).write_text(f"open({str(tmp_path / 'imported')!r}, 'a').write({name!r})\n")
    monkeypatch.chdir(root)
    index = WorkspaceIndex(root)
    assert scan_process.scan(index, in_process_below=1).files > 20
    assert str((root / "logging.py").resolve()) in index.files  # indexed, not run
    assert not (tmp_path / "imported").exists()


def test_a_child_that_fails_leaves_the_scan_to_the_thread(tmp_path, monkeypatch, caplog):
    root = workspace(tmp_path)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
    index = WorkspaceIndex(root)
    assert scan_process.scan(index, in_process_below=1).files > 20
    assert len(index.files) > 20
    assert "scanning here" in caplog.text
