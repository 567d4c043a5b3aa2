-- torch-lsp for Neovim >= 0.8: starts `torch-lsp serve` on Python buffers (vim.lsp.start, one
-- client per project root), enables inlay hints on >= 0.10, and adds :TorchLsp* commands.
-- On Neovim 0.7 it falls back to vim.lsp.start_client + buf_attach_client (the headless test
-- runs on Debian's 0.7.2 that way).
--
--   require('torch_lsp').setup({ settings = { execution = { device = 'meta' } } })

local M = {}

M.defaults = {
  cmd = { 'torch-lsp', 'serve' },
  filetypes = { 'python' },
  root_markers = { 'pyproject.toml', '.git' },
  -- The server's `torchLsp` settings section (see docs/configuration.md), camelCase keys;
  -- or a function(root_dir) returning it, to choose per project (e.g. execution only in
  -- projects you trust: docs/editors.md).
  settings = {},
  inlay_hints = true, -- shapes after tensor assignments, on Neovim >= 0.10
  on_attach = nil, -- function(client, bufnr), called after torch-lsp's own setup
}

local options = vim.deepcopy(M.defaults)
local clients_by_root = {} -- Neovim 0.7 only: vim.lsp.start reuses clients by itself

local function has(version)
  return vim.fn.has('nvim-' .. version) == 1
end

--- The nearest folder above `path` holding one of `markers`, or nil.
function M.find_root(path, markers)
  local dir = vim.fn.fnamemodify(path, ':p:h')
  while true do
    for _, marker in ipairs(markers) do
      if vim.loop.fs_stat(dir .. '/' .. marker) then
        return dir
      end
    end
    local parent = vim.fn.fnamemodify(dir, ':h')
    if parent == dir then
      return nil
    end
    dir = parent
  end
end

-- An empty Lua table encodes as a JSON array; the server wants an object.
local function as_object(tbl)
  if tbl == nil or next(tbl) == nil then
    return vim.empty_dict()
  end
  return tbl
end

local function on_attach(client, bufnr)
  local inlay = vim.lsp.inlay_hint
  if options.inlay_hints and has('0.10') and inlay and client.server_capabilities.inlayHintProvider then
    pcall(inlay.enable, true, { bufnr = bufnr })
  end
  if options.on_attach then
    options.on_attach(client, bufnr)
  end
end

--- The client configuration for a buffer (also what the nvim-lspconfig snippet mirrors).
function M.client_config(bufnr)
  local path = vim.api.nvim_buf_get_name(bufnr)
  local root = M.find_root(path, options.root_markers) or vim.fn.fnamemodify(path, ':p:h')
  local settings = options.settings
  if type(settings) == 'function' then
    settings = settings(root) or {}
  end
  return {
    name = 'torch-lsp',
    cmd = options.cmd,
    root_dir = root,
    workspace_folders = { { uri = vim.uri_from_fname(root), name = root } },
    init_options = as_object(vim.deepcopy(settings)),
    -- Neovim answers the server's workspace/configuration request from here.
    settings = { torchLsp = as_object(vim.deepcopy(settings)) },
    on_attach = on_attach,
  }
end

--- Start (or reuse) the client for the buffer's project and attach it; returns the client id.
function M.start(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  if vim.bo[bufnr].buftype ~= '' or vim.api.nvim_buf_get_name(bufnr) == '' then
    return nil
  end
  local config = M.client_config(bufnr)
  if vim.lsp.start then
    return vim.lsp.start(config, { bufnr = bufnr })
  end
  local id = clients_by_root[config.root_dir]
  local client = id and vim.lsp.get_client_by_id(id)
  if not client or client.is_stopped() then
    id = vim.lsp.start_client(config)
    clients_by_root[config.root_dir] = id
  end
  if id then
    vim.lsp.buf_attach_client(bufnr, id)
  end
  return id
end

--- The torch-lsp client attached to a buffer, or nil.
function M.client(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  if has('0.8') then
    local get = vim.lsp.get_clients or vim.lsp.get_active_clients
    return get({ bufnr = bufnr, name = 'torch-lsp' })[1]
  end
  for _, client in pairs(vim.lsp.buf_get_clients(bufnr)) do
    if client.name == 'torch-lsp' then
      return client
    end
  end
  return nil
end

--- Run a server command (workspace/executeCommand); `on_result(err, result)` gets the answer.
function M.execute(command, arguments, on_result, bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  local client = M.client(bufnr)
  if not client then
    vim.notify('torch-lsp is not attached to this buffer', vim.log.levels.WARN)
    return false
  end
  local params = { command = command, arguments = arguments or {} }
  local function handler(err, result)
    on_result(err, result)
  end
  if has('0.11') then
    client:request('workspace/executeCommand', params, handler, bufnr)
  else
    client.request('workspace/executeCommand', params, handler, bufnr)
  end
  return true
end

--- Text to show for a command result: the server's markdown when it sends one, else JSON.
function M.result_text(result)
  if type(result) == 'table' and type(result.markdown) == 'string' then
    return result.markdown
  end
  if type(result) == 'string' then
    return result
  end
  return vim.fn.json_encode(result == nil and vim.NIL or result)
end

local function show(title, result)
  vim.cmd('botright new')
  local buf = vim.api.nvim_get_current_buf()
  vim.bo[buf].buftype = 'nofile'
  vim.bo[buf].bufhidden = 'wipe'
  vim.bo[buf].filetype = 'markdown'
  pcall(vim.api.nvim_buf_set_name, buf, 'torch-lsp://' .. title)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, vim.split(M.result_text(result), '\n', { plain = true }))
end

local latest_run -- the run id the last :TorchLspTrain returned

--- The run id the last :TorchLspTrain returned (nil before the first).
function M.latest_run()
  return latest_run
end

local function run_id_of(result)
  if type(result) == 'string' then
    return result
  end
  if type(result) == 'table' then
    return result.runId or result.run_id or result.id
  end
  return nil
end

local function report(command, then_do)
  return function(err, result)
    if err then
      vim.notify(command .. ' failed: ' .. (err.message or vim.inspect(err)), vim.log.levels.ERROR)
    else
      then_do(result)
    end
  end
end

--- Run the current file with live metrics (progress shows in Neovim's LSP progress).
function M.train()
  vim.cmd('silent! update') -- training runs the file on disk
  local uri = vim.uri_from_bufnr(0)
  M.execute('torch-lsp.train', { uri }, report('torch-lsp.train', function(result)
    latest_run = run_id_of(result) or latest_run
    vim.notify('torch-lsp: training started' .. (latest_run and (' (run ' .. latest_run .. ')') or ''))
  end))
end

local function run_arguments(run)
  run = (run and run ~= '') and run or latest_run
  return run and { run } or {}
end

function M.stop(run)
  M.execute('torch-lsp.stopTraining', run_arguments(run), report('torch-lsp.stopTraining', function()
    vim.notify('torch-lsp: training stopped')
  end))
end

function M.metrics(run)
  M.execute('torch-lsp.metrics', run_arguments(run), report('torch-lsp.metrics', function(result)
    show('metrics', result)
  end))
end

function M.summary()
  M.execute('torch-lsp.summary', { vim.uri_from_bufnr(0) }, report('torch-lsp.summary', function(result)
    show('summary', result)
  end))
end

--- A training step's peak GPU memory and the largest batch that fits (GiB of GPU memory optional).
function M.memory(gpu_memory)
  local options = {}
  local gib = tonumber(gpu_memory or '')
  if gib then options.gpuMemoryGb = gib end
  M.execute('torch-lsp.memory', { vim.uri_from_bufnr(0), options }, report('torch-lsp.memory', function(result)
    show('memory', result)
  end))
end

function M.info()
  M.execute('torch-lsp.serverInfo', {}, report('torch-lsp.serverInfo', function(result)
    show('server-info', result)
  end))
end

local function create_commands()
  local command = vim.api.nvim_create_user_command
  command('TorchLspTrain', M.train, { desc = 'torch-lsp: train (run this script with live metrics)' })
  command('TorchLspStop', function(a) M.stop(a.args) end, { nargs = '?', desc = 'torch-lsp: stop training' })
  command('TorchLspMetrics', function(a) M.metrics(a.args) end, { nargs = '?', desc = 'torch-lsp: show run metrics' })
  command('TorchLspSummary', M.summary, { desc = 'torch-lsp: model summary' })
  command('TorchLspMemory', function(a) M.memory(a.args) end,
    { nargs = '?', desc = 'torch-lsp: training step memory (optional: GPU memory in GiB)' })
  command('TorchLspInfo', M.info, { desc = 'torch-lsp: server info' })
end

function M.setup(opts)
  options = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts or {})
  create_commands()
  local group = vim.api.nvim_create_augroup('torch_lsp', { clear = true })
  vim.api.nvim_create_autocmd('FileType', {
    group = group,
    pattern = options.filetypes,
    callback = function(args)
      M.start(args.buf)
    end,
  })
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do -- buffers opened before setup()
    if vim.api.nvim_buf_is_loaded(bufnr) and vim.tbl_contains(options.filetypes, vim.bo[bufnr].filetype) then
      M.start(bufnr)
    end
  end
end

return M
