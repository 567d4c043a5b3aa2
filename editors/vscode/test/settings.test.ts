/** Unit tests of the settings mapping (src/settings.ts) against the contributed package.json. */

import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  CLIENT_ONLY_SECTIONS, DOCUMENT_SELECTOR, PALETTE_COMMANDS, commandArguments, contributedDefaults, nest, resultMarkdown,
  runIdOf, serverExecutable, serverSettings,
} from '../src/settings';

const packageJson = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8'));
const properties: Record<string, { default?: unknown }> = packageJson.contributes.configuration.properties;

test('every contributed property is a server setting or one of the client-only sections', () => {
  const sections = new Set(Object.keys(properties).map((key) => key.split('.')[1]));
  for (const section of CLIENT_ONLY_SECTIONS) assert.ok(sections.has(section), `package.json lacks torchLsp.${section}.*`);
  for (const key of Object.keys(properties)) assert.match(key, /^torchLsp\.[a-zA-Z]+(\.[a-zA-Z]+)*$/);
});

test('the server receives every server setting with its default, and no client-only key', () => {
  const defaults = contributedDefaults(packageJson);
  const sent = serverSettings(defaults, true);
  for (const section of CLIENT_ONLY_SECTIONS) assert.equal(sent[section], undefined);
  for (const [key, property] of Object.entries(properties)) {
    const path = key.split('.').slice(1);
    if (CLIENT_ONLY_SECTIONS.includes(path[0])) continue;
    const value = path.reduce<unknown>((node, part) => (node as Record<string, unknown>)?.[part], sent);
    assert.deepEqual(value, property.default, `${key} not sent with its default`);
  }
});

test('an untrusted workspace turns code execution off and keeps the other execution settings', () => {
  const user = nest({ 'execution.enabled': true, 'execution.device': 'cpu', debounceMs: 100, 'server.python': '/evil' });
  assert.deepEqual(serverSettings(user, false), { execution: { enabled: false, device: 'cpu' }, debounceMs: 100 });
  assert.deepEqual(serverSettings(user, true), { execution: { enabled: true, device: 'cpu' }, debounceMs: 100 });
  assert.deepEqual(serverSettings(undefined, false), { execution: { enabled: false } });
  assert.deepEqual(serverSettings(null, true), {});
});

test('methods of a WorkspaceConfiguration-like object are not sent', () => {
  const configuration = { get: () => 1, has: () => true, rules: { select: ['TL'] } };
  assert.deepEqual(serverSettings(configuration, true), { rules: { select: ['TL'] } });
});

test('server executable: explicit path, then configured python, then the Python extension, then PATH', () => {
  assert.deepEqual(serverExecutable({ path: '/opt/torch-lsp', python: '/usr/bin/python3', args: ['--log-level', 'DEBUG'] }, '/venv/bin/python'),
    { command: '/opt/torch-lsp', args: ['serve', '--log-level', 'DEBUG'], source: 'torchLsp.server.path' });
  assert.deepEqual(serverExecutable({ python: '/usr/bin/python3' }, '/venv/bin/python'),
    { command: '/usr/bin/python3', args: ['-m', 'torch_lsp', 'serve'], source: 'torchLsp.server.python' });
  assert.deepEqual(serverExecutable({ path: null, python: null }, '/venv/bin/python'),
    { command: '/venv/bin/python', args: ['-m', 'torch_lsp', 'serve'], source: 'the Python extension' });
  assert.deepEqual(serverExecutable({}), { command: 'torch-lsp', args: ['serve'], source: 'PATH' });
});

test('palette commands are contributed, and map to the server commands with positional arguments', () => {
  const contributed = new Set(packageJson.contributes.commands.map((c: { command: string }) => c.command));
  for (const command of PALETTE_COMMANDS) assert.ok(contributed.has(command.id), `${command.id} not in package.json`);
  const byServer = Object.fromEntries(PALETTE_COMMANDS.map((c) => [c.server, c]));
  for (const name of ['torch-lsp.train', 'torch-lsp.stopTraining', 'torch-lsp.metrics', 'torch-lsp.summary']) {
    assert.ok(byServer[name], `no palette command for ${name}`);
  }
  const uri = 'file:///w/train.py';
  assert.deepEqual(commandArguments(byServer['torch-lsp.train'], { fileUri: uri }), [uri]);
  assert.equal(commandArguments(byServer['torch-lsp.summary'], {}), undefined);
  assert.deepEqual(commandArguments(byServer['torch-lsp.metrics'], { runId: 'r1' }), ['r1']);
  assert.deepEqual(commandArguments(byServer['torch-lsp.stopTraining'], {}), []);
});

test('run ids and results are read leniently', () => {
  assert.equal(runIdOf('2026-01-01T00-00-00'), '2026-01-01T00-00-00');
  assert.equal(runIdOf({ runId: 'a' }), 'a');
  assert.equal(runIdOf({ id: 'b' }), 'b');
  assert.equal(runIdOf(null), undefined);
  assert.equal(resultMarkdown('x', { markdown: '# Run' }), '# Run');
  assert.match(resultMarkdown('torch-lsp.serverInfo', { version: '0.1.0' }), /"version": "0.1.0"/);
});

test('the client serves Python files and the Python cells of Jupyter notebooks', () => {
  assert.deepEqual(DOCUMENT_SELECTOR.filter((filter) => 'notebook' in filter),
    [{ notebook: 'jupyter-notebook', language: 'python' }]);
  assert.ok(DOCUMENT_SELECTOR.some((filter) => 'scheme' in filter && filter.scheme === 'file' && filter.language === 'python'));
  assert.ok(packageJson.activationEvents.includes('onNotebook:jupyter-notebook'));
});
