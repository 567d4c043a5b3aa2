"""Neovim: the plugin in editors/neovim driven by a real headless nvim (Debian's 0.7.2 in CI)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT
from tests.editors.conftest import (EDITORS, HOVER_SKIP_REASON, MISSING_ZERO_GRAD, POOLED, TINY_TRAIN, editor_env,
                                    expected_pooled_shape, hover_available, require, run_editor)

DRIVER = ROOT / "tests" / "editors" / "nvim_driver.lua"


def run_nvim(tmp_path, expected_hover: str = "", hover_first: bool = False) -> dict:
    nvim = require("nvim", "apt-get install neovim")
    output = tmp_path / "nvim-result.json"
    env = editor_env(TORCH_LSP_RESULT=str(output), TORCH_LSP_FIXTURE=str(MISSING_ZERO_GRAD),
                     TORCH_LSP_POOLED=str(POOLED), TORCH_LSP_EXPECTED_HOVER=expected_hover,
                     TORCH_LSP_HOVER_FIRST="1" if hover_first else "0", TORCH_LSP_TRAIN_SCRIPT=str(TINY_TRAIN),
                     XDG_STATE_HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path),  # lsp.log, swap files
                     XDG_DATA_HOME=str(tmp_path), TORCH_LSP_RUNS_DIR=str(tmp_path / "runs"))
    run_editor([nvim, "--headless", "-u", "NONE", "-i", "NONE", "--cmd", f"set rtp^={EDITORS / 'neovim'}",
                "-c", f"luafile {DRIVER}"], env, timeout=150)
    assert output.exists(), "nvim wrote no result"
    result = json.loads(output.read_text())
    assert "error" not in result, result
    return result


@pytest.mark.slow  # a real editor, server and shape worker
def test_nvim_gets_diagnostics_applies_the_quick_fix_and_runs_a_command(tmp_path):
    result = run_nvim(tmp_path)
    print(f"nvim {result['nvim']}: initialized {result['initialized_ms']:.0f} ms, "
          f"TL101 shown {result['diagnostics_ms']:.0f} ms after :edit")
    assert result["root_dir"] == str(ROOT)  # pyproject.toml / .git found above fixtures/
    [tl101] = [d for d in result["diagnostics"] if d["code"] == "TL101"]
    assert (tl101["line"], tl101["source"]) == (24, "torch-lsp")
    original = MISSING_ZERO_GRAD.read_text()
    assert result["fixed_text"] + "\n" == original.replace(
        "        loss = loss_fn", "        optimizer.zero_grad()\n        loss = loss_fn", 1)
    assert "Suppress TL101 on this line" in result["actions"]
    info = result["server_info"]
    assert info["settings"]["debounceMs"] == 50  # the plugin's settings reached the server
    assert info["torchImported"] is False


@pytest.mark.slow  # a real editor, server and shape worker
def test_nvim_train_and_metrics_commands(tmp_path):
    result = run_nvim(tmp_path)
    if not result["train_offered"]:
        pytest.skip("the training commands (torch-lsp.train, torch-lsp.metrics) are not on this branch yet")
    assert result["run_status"] == "completed"
    assert result["metrics_filetype"] == "markdown"
    assert f"Run `{result['run_id']}`" in result["metrics_text"] and "tiny_train.py" in result["metrics_text"]


@pytest.mark.slow  # a real editor, server and shape worker
def test_nvim_hover_shows_the_shape(tmp_path):
    if not hover_available():
        pytest.skip(HOVER_SKIP_REASON)
    expected = expected_pooled_shape()
    result = run_nvim(tmp_path, expected)
    assert expected in result["hover"]


def test_lspconfig_snippet_and_plugin_parse():
    nvim = require("nvim", "apt-get install neovim")
    for path in [EDITORS / "neovim" / "lspconfig.lua", EDITORS / "neovim" / "lua" / "torch_lsp" / "init.lua"]:
        run = run_editor([nvim, "--headless", "-u", "NONE", "-i", "NONE", "-c",
                          f"lua assert(loadfile('{path}'))", "-c", "qall!"], editor_env(), timeout=30)
        assert run.returncode == 0 and not run.stderr.strip(), path


def test_nvim_settings_can_be_chosen_per_project(tmp_path):
    """docs/editors.md: code execution only in projects you trust, with `settings = function(root)`."""
    nvim = require("nvim", "apt-get install neovim")
    for name in ("trusted", "other"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "pyproject.toml").write_text("")
    output = tmp_path / "configs.json"
    script = tmp_path / "per_project.lua"
    script.write_text(f"""
local torch_lsp = require('torch_lsp')
torch_lsp.setup({{ settings = function(root)
  return {{ execution = {{ enabled = root == '{tmp_path / "trusted"}' }} }}
end }})
local seen = {{}}
for _, name in ipairs({{ 'trusted', 'other' }}) do
  vim.cmd('edit {tmp_path}/' .. name .. '/model.py')
  local config = torch_lsp.client_config(0)
  seen[name] = {{ init = config.init_options, live = config.settings.torchLsp }}
end
vim.fn.writefile({{ vim.fn.json_encode(seen) }}, '{output}')
vim.cmd('qa!')
""")
    run_editor([nvim, "--headless", "-u", "NONE", "-i", "NONE", "--cmd", f"set rtp^={EDITORS / 'neovim'}",
                "-c", f"luafile {script}"], editor_env(XDG_STATE_HOME=str(tmp_path)), timeout=60)
    seen = json.loads(output.read_text())
    assert seen["trusted"]["init"] == seen["trusted"]["live"] == {"execution": {"enabled": True}}
    assert seen["other"]["init"] == seen["other"]["live"] == {"execution": {"enabled": False}}
