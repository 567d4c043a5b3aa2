"""torch-lsp's helper processes never import a workspace's files in place of the standard
library's (torch_lsp/own_python.py): the server's working directory is usually the workspace."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from torch_lsp import own_python
from torch_lsp.server.api_docs import ApiDocs

WAIT_S = 120  # a ceiling, never reached when the code works


def shadowing_workspace(tmp_path):
    """A workspace whose `json.py` leaves a mark when imported."""
    workspace, mark = tmp_path / "workspace", tmp_path / "imported"
    workspace.mkdir()
    (workspace / "json.py").write_text(f"open({str(mark)!r}, 'a').write('json.py ran')\nfrom stdlib_json import *\n")
    return workspace, mark


@pytest.mark.parametrize("python_3_10", [False, True])
def test_a_module_runs_without_the_working_directory_on_its_path(tmp_path, monkeypatch, python_3_10):
    workspace, mark = shadowing_workspace(tmp_path)
    if python_3_10:  # no -P there: the child drops the working directory itself
        monkeypatch.setattr(sys, "version_info", (3, 10, 14, "final", 0))
    command = own_python.module_command("json.tool", "--compact")
    monkeypatch.undo()
    assert ("-P" in command) is not python_3_10
    done = subprocess.run(command, input='{"a": [1, 2]}', capture_output=True, text=True, cwd=workspace, timeout=WAIT_S)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == '{"a":[1,2]}'
    assert not mark.exists()
    # The same command with a plain -m imports the workspace's json.py: the test can tell.
    plain = [sys.executable, "-m", "json.tool"]
    subprocess.run(plain, input="{}", capture_output=True, text=True, cwd=workspace, timeout=WAIT_S)
    assert mark.exists()


def test_the_api_docs_helper_started_in_a_workspace_imports_none_of_its_files(tmp_path, monkeypatch):
    workspace, mark = shadowing_workspace(tmp_path)
    monkeypatch.chdir(workspace)
    docs = ApiDocs()
    source = "import torch\ntorch.zeros(2)\n"
    deadline = time.monotonic() + WAIT_S
    doc = None
    while doc is None and time.monotonic() < deadline and not mark.exists():
        doc = docs.lookup(source, None, 1, 7, "torch.zeros")
        time.sleep(0.05)  # the helper answers in its own thread
    assert doc is not None and "zeros" in doc.markdown()
    assert not mark.exists()
