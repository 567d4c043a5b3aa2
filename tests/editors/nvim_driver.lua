-- Headless Neovim (Debian 0.7.2 and later) driving torch-lsp through the plugin in
-- editors/neovim. It records what the editor saw in a JSON file; test_neovim.py asserts on it.
-- Environment: TORCH_LSP_SERVER (JSON command), TORCH_LSP_RESULT (output path),
-- TORCH_LSP_FIXTURE (file with TL101), TORCH_LSP_POOLED + TORCH_LSP_EXPECTED_HOVER (optional),
-- TORCH_LSP_HOVER_FIRST=1: open the hover fixture first, as `nvim pooled.py` does at startup.

local result = { steps = {} }

local function finish()
  local file = assert(io.open(os.getenv('TORCH_LSP_RESULT'), 'w'))
  file:write(vim.fn.json_encode(result))
  file:close()
  vim.cmd('qall!')
end

local function step(name, fn)
  local ok, err = pcall(fn)
  table.insert(result.steps, name)
  if not ok then
    result.error = name .. ': ' .. tostring(err)
    finish()
  end
end

local function wait(ms, what, predicate)
  if not vim.wait(ms, predicate, 50) then
    error('timed out waiting for ' .. what)
  end
end

local torch_lsp = require('torch_lsp')
local bufnr, client

local function tl101_diagnostics()
  return vim.tbl_filter(function(d)
    return d.code == 'TL101'
  end, vim.diagnostic.get(bufnr))
end

step('setup', function()
  vim.cmd('filetype on')
  -- Training runs go where the test says (TORCH_LSP_RUNS_DIR), never into the checkout.
  torch_lsp.setup({ cmd = vim.fn.json_decode(os.getenv('TORCH_LSP_SERVER')),
                    settings = { debounceMs = 50, training = { runsDir = os.getenv('TORCH_LSP_RUNS_DIR') } } })
end)

local function fixture_steps()
  step('attach', function()
    result.opened_at = vim.loop.hrtime()
    vim.cmd('edit ' .. vim.fn.fnameescape(os.getenv('TORCH_LSP_FIXTURE')))
    bufnr = vim.api.nvim_get_current_buf()
    wait(30000, 'the client to initialize', function()
      client = torch_lsp.client(bufnr)
      return client ~= nil and client.initialized == true
    end)
    result.initialized_ms = (vim.loop.hrtime() - result.opened_at) / 1e6
    result.root_dir = client.config.root_dir
    result.nvim = tostring(vim.version().major) .. '.' .. vim.version().minor .. '.' .. vim.version().patch
  end)

  step('diagnostics', function()
    wait(20000, 'TL101', function()
      return #tl101_diagnostics() > 0
    end)
    result.diagnostics_ms = (vim.loop.hrtime() - result.opened_at) / 1e6
    result.diagnostics = vim.tbl_map(function(d)
      return { code = d.code, line = d.lnum, col = d.col, source = d.source, message = d.message }
    end, vim.diagnostic.get(bufnr))
  end)

  step('quick fix', function()
    local d = tl101_diagnostics()[1]
    local range = { start = { line = d.lnum, character = d.col }, ['end'] = { line = d.end_lnum, character = d.end_col } }
    local params = {
      textDocument = { uri = vim.uri_from_bufnr(bufnr) },
      range = range,
      context = { diagnostics = { { range = range, code = d.code, source = d.source, message = d.message, severity = d.severity } } },
    }
    local responses = vim.lsp.buf_request_sync(bufnr, 'textDocument/codeAction', params, 10000) or {}
    result.actions = {}
    local preferred
    for _, response in pairs(responses) do
      for _, action in ipairs(response.result or {}) do
        table.insert(result.actions, action.title)
        if action.isPreferred then
          preferred = action
        end
      end
    end
    assert(preferred, 'no preferred quick fix')
    vim.lsp.util.apply_workspace_edit(preferred.edit, client.offset_encoding or 'utf-16')
    result.fixed_text = table.concat(vim.api.nvim_buf_get_lines(bufnr, 0, -1, false), '\n')
  end)

  step('diagnostics after the fix', function()
    -- Neovim sent didChange for the edit; the server re-analyses the new version.
    wait(20000, 'TL101 to disappear', function()
      return #tl101_diagnostics() == 0
    end)
  end)

  step('command', function()
    local done = false
    torch_lsp.execute('torch-lsp.serverInfo', {}, function(err, info)
      result.command_error = err and (err.message or vim.inspect(err)) or nil
      result.server_info = info
      done = true
    end, bufnr)
    wait(10000, 'torch-lsp.serverInfo', function()
      return done
    end)
  end)
end

local function offers(command)
  local provider = client.server_capabilities.executeCommandProvider
  return provider ~= nil and vim.tbl_contains(provider.commands or {}, command)
end

-- :TorchLspTrain then :TorchLspMetrics, the user's way, when the server has them.
local function training_steps()
  result.train_offered = offers('torch-lsp.train') and offers('torch-lsp.metrics')
  if not result.train_offered then
    return
  end
  step('train', function()
    vim.cmd('edit ' .. vim.fn.fnameescape(os.getenv('TORCH_LSP_TRAIN_SCRIPT')))
    local script = vim.api.nvim_get_current_buf()
    wait(30000, 'the client to attach', function()
      return torch_lsp.client(script) ~= nil
    end)
    vim.cmd('TorchLspTrain')
    wait(20000, 'a run id', function()
      return torch_lsp.latest_run() ~= nil
    end)
    result.run_id = torch_lsp.latest_run()
    local status
    wait(90000, 'the run to finish', function()
      local done = false
      torch_lsp.execute('torch-lsp.metrics', { result.run_id }, function(_, metrics)
        status = metrics and metrics.summary and metrics.summary.status
        done = true
      end, script)
      vim.wait(5000, function()
        return done
      end, 20)
      if status == nil or status == 'running' then
        vim.wait(1000) -- a user asks now and then, not in a tight loop
        return false
      end
      return true
    end)
    result.run_status = status
    vim.cmd('TorchLspMetrics')
    local shown
    wait(10000, 'the metrics split', function()
      shown = vim.fn.bufnr('torch-lsp://metrics')
      return shown > 0
    end)
    result.metrics_filetype = vim.bo[shown].filetype
    result.metrics_text = table.concat(vim.api.nvim_buf_get_lines(shown, 0, -1, false), '\n')
  end)
end

local expected = os.getenv('TORCH_LSP_EXPECTED_HOVER') or ''
local function hover_steps()
  step('hover', function()
    vim.cmd('edit ' .. vim.fn.fnameescape(os.getenv('TORCH_LSP_POOLED')))
    local pooled = vim.api.nvim_get_current_buf()
    wait(30000, 'the client to attach', function()
      return torch_lsp.client(pooled) ~= nil
    end)
    local params = { textDocument = { uri = vim.uri_from_bufnr(pooled) }, position = { line = 6, character = 2 } }
    local text = ''
    vim.wait(30000, function()
      local responses = vim.lsp.buf_request_sync(pooled, 'textDocument/hover', params, 5000) or {}
      for _, response in pairs(responses) do
        local contents = response.result and response.result.contents
        if contents then
          text = type(contents) == 'table' and (contents.value or vim.fn.json_encode(contents)) or tostring(contents)
        end
      end
      return text:find(expected, 1, true) ~= nil
    end, 200)
    result.hover = text
  end)
end

if os.getenv('TORCH_LSP_HOVER_FIRST') == '1' then
  hover_steps()
else
  fixture_steps()
  training_steps()
  if expected ~= '' then
    hover_steps()
  end
end
finish()
