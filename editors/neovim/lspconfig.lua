-- torch-lsp through nvim-lspconfig (instead of require('torch_lsp').setup()).
-- torch-lsp runs alongside your usual Python server (pyright, basedpyright, pylsp, jedi).

local configs = require('lspconfig.configs')
local util = require('lspconfig.util')

if not configs.torch_lsp then
  configs.torch_lsp = {
    default_config = {
      cmd = { 'torch-lsp', 'serve' },
      filetypes = { 'python' },
      root_dir = util.root_pattern('pyproject.toml', '.git'),
      single_file_support = true,
      settings = { torchLsp = vim.empty_dict() },
    },
    docs = { description = 'torch-lsp: tensor shapes, PyTorch diagnostics and training commands' },
  }
end

require('lspconfig').torch_lsp.setup({
  settings = {
    torchLsp = {
      execution = { enabled = true, device = 'meta' },
      rules = { ignore = {} },
    },
  },
})

-- Neovim >= 0.11 without nvim-lspconfig's registry:
--   vim.lsp.config('torch_lsp', { cmd = { 'torch-lsp', 'serve' }, filetypes = { 'python' },
--                                 root_markers = { 'pyproject.toml', '.git' } })
--   vim.lsp.enable('torch_lsp')
