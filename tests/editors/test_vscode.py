"""VS Code extension: settings generated from the server's, Node tests through
vscode-languageserver-protocol (npm test), and packaging into a .vsix."""

from __future__ import annotations

import json
import re
import sys
import zipfile
from pathlib import Path

import pytest

from tests.editors.conftest import EDITORS, HOVER_SKIP_REASON, editor_env, hover_available, require, run_editor

VSCODE = EDITORS / "vscode"
sys.path.insert(0, str(VSCODE))
import sync_settings  # noqa: E402  (editors/vscode is not a package)


def test_package_json_contributes_every_server_setting_as_generated():
    package = json.loads(sync_settings.PACKAGE_JSON.read_text())
    assert package == sync_settings.updated(package), "run: python editors/vscode/sync_settings.py"
    assert sync_settings.main(["--check"]) == 0


def test_generation_fails_the_check_when_a_setting_is_missing(monkeypatch, tmp_path):
    stale = json.loads(sync_settings.PACKAGE_JSON.read_text())
    del stale["contributes"]["configuration"]["properties"]["torchLsp.execution.enabled"]
    path = tmp_path / "package.json"
    path.write_text(sync_settings.render(stale))
    monkeypatch.setattr(sync_settings, "PACKAGE_JSON", path)
    assert sync_settings.main(["--check"]) == 1


def test_every_setting_has_a_description_and_a_default():
    properties = json.loads(sync_settings.PACKAGE_JSON.read_text())["contributes"]["configuration"]["properties"]
    assert len(properties) >= 14
    for key, prop in properties.items():
        assert prop["markdownDescription"], key
        assert "default" in prop, key


def _npm_ready() -> None:
    require("node", "Node.js 20+")
    require("npm", "npm")
    if not (VSCODE / "node_modules" / "vscode-languageserver-protocol").is_dir():
        pytest.skip("editors/vscode has no node_modules: run `npm ci` there (CI does)")


def _node_test(runs_dir: Path, *options: str):
    """Compile, then run the Node tests (TAP output) with this interpreter's server."""
    _npm_ready()
    assert run_editor(["npm", "run", "compile"], editor_env(), cwd=VSCODE).returncode == 0
    return run_editor(["node", "--test", "--test-reporter=tap", *options, "out/test/"],
                      editor_env(TORCH_LSP_PYTHON=sys.executable, TORCH_LSP_RUNS_DIR=str(runs_dir)), timeout=180,
                      cwd=VSCODE)


@pytest.mark.slow
def test_node_tests_pass(tmp_path):
    """`npm test`: settings mapping units + the protocol-level test of the real server."""
    run = _node_test(tmp_path / "runs")
    assert run.returncode == 0
    assert re.search(r"^# fail 0$", run.stdout, re.M)
    passed = int(re.search(r"^# pass (\d+)$", run.stdout, re.M).group(1))
    assert passed >= 11  # 7 mapping tests + 4 server tests; skips are reported by the next test


def test_vscode_hover_shows_the_shape(tmp_path):
    if not hover_available():
        pytest.skip(HOVER_SKIP_REASON)
    run = _node_test(tmp_path / "runs", "--test-name-pattern=hover")
    assert run.returncode == 0
    hover_line = next(line for line in run.stdout.splitlines() if "hover shows the shape" in line and line.startswith("ok"))
    assert "# SKIP" not in hover_line


@pytest.mark.slow
def test_vsix_packages_with_the_compiled_extension(tmp_path):
    _npm_ready()
    vsix = tmp_path / "torch-lsp.vsix"
    run = run_editor(["npx", "vsce", "package", "--out", str(vsix)], editor_env(), cwd=VSCODE)
    assert run.returncode == 0
    names = set(zipfile.ZipFile(vsix).namelist())
    assert "extension/out/src/extension.js" in names
    assert "extension/node_modules/vscode-languageclient/package.json" in names
    manifest = json.loads(zipfile.ZipFile(vsix).read("extension/package.json"))
    assert manifest["contributes"]["configuration"]["properties"]["torchLsp.execution.enabled"]["default"] is True
