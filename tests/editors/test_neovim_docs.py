"""The Neovim 0.7 setup of docs/editors.md, exactly as printed there, in a real headless nvim:
a Python buffer gets torch-lsp's diagnostics, one client per project."""

from __future__ import annotations

import json
import re
import sys

from tests.conftest import FIXTURES, ROOT
from tests.editors.conftest import MISSING_ZERO_GRAD, editor_env, require, run_editor

DOC = ROOT / "docs" / "editors.md"

DRIVER = r"""
local result = {}
local ok, err = pcall(function()
  vim.cmd('edit ' .. vim.fn.fnameescape(os.getenv('FIXTURE')))
  local bufnr = vim.api.nvim_get_current_buf()
  result.tl101 = vim.wait(90000, function()
    for _, d in ipairs(vim.diagnostic.get(bufnr)) do
      if d.code == 'TL101' then return true end
    end
    return false
  end, 100)
  vim.cmd('edit ' .. vim.fn.fnameescape(os.getenv('SECOND')))
  vim.wait(5000, function() return #vim.lsp.buf_get_clients(0) > 0 end, 50)
  result.second_attached = #vim.lsp.buf_get_clients(0)
  local clients = vim.lsp.get_active_clients()
  result.clients = #clients
  result.name = clients[1] and clients[1].name
  result.root = clients[1] and clients[1].config.root_dir
end)
if not ok then result.error = tostring(err) end
local file = assert(io.open(os.getenv('RESULT'), 'w'))
file:write(vim.fn.json_encode(result))
file:close()
vim.cmd('qall!')
"""


def documented_snippet() -> str:
    match = re.search(r"<!-- snippet: neovim-0\.7 -->\s*```lua\n(.*?)```", DOC.read_text(), re.S)
    assert match, "docs/editors.md lost its Neovim 0.7 snippet"
    return match.group(1)


def test_the_documented_neovim_07_setup_works(tmp_path):
    nvim = require("nvim", "apt-get install neovim")
    (tmp_path / "init.lua").write_text(documented_snippet())
    (tmp_path / "driver.lua").write_text(DRIVER)
    bin_dir = tmp_path / "bin"  # the snippet runs `torch-lsp` from PATH: this checkout's
    bin_dir.mkdir()
    (bin_dir / "torch-lsp").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m torch_lsp "$@"\n')
    (bin_dir / "torch-lsp").chmod(0o755)
    env = editor_env(RESULT=str(tmp_path / "result.json"), FIXTURE=str(MISSING_ZERO_GRAD),
                     SECOND=str(FIXTURES / "train_crash.py"),
                     PATH=f"{bin_dir}:{editor_env()['PATH']}", XDG_STATE_HOME=str(tmp_path),
                     XDG_CACHE_HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    run_editor([nvim, "--headless", "-u", str(tmp_path / "init.lua"), "-i", "NONE",
                "-c", f"luafile {tmp_path / 'driver.lua'}"], env, timeout=150)
    result = json.loads((tmp_path / "result.json").read_text())
    assert "error" not in result, result
    assert result["tl101"] is True
    assert (result["name"], result["root"]) == ("torch-lsp", str(ROOT))  # pyproject.toml above fixtures/
    assert result["clients"] == 1 and result["second_attached"] == 1  # one client for the project
