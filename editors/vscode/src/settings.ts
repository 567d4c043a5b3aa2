/**
 * The pure half of the extension: which program starts the server, what the server receives as
 * settings, and which arguments each palette command sends. No `vscode` import here, so all of it
 * is unit-tested under plain Node (test/settings.test.ts).
 */

export const SECTION = 'torchLsp';

/**
 * The documents the client serves: Python files (saved or not) and the Python cells of Jupyter
 * notebooks. Cells are synced as notebooks (the server declares `notebookDocumentSync` and
 * analyses a notebook as one program); this selector is what routes hover, inlay hints and code
 * actions of a cell to the server.
 */
export const DOCUMENT_SELECTOR = [
  { scheme: 'file', language: 'python' },
  { scheme: 'untitled', language: 'python' },
  { notebook: 'jupyter-notebook', language: 'python' },
] as const;

/** Top-level sections read by the extension itself; the server rejects unknown keys. */
export const CLIENT_ONLY_SECTIONS: readonly string[] = ['server', 'trace'];

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * What the server receives (initializationOptions and each workspace/configuration answer): the
 * user's `torchLsp` section without the client-only keys. In an untrusted workspace code execution
 * is off whatever the settings say: shape inference runs the user's code.
 */
export function serverSettings(section: unknown, trusted: boolean): JsonObject {
  const result: JsonObject = {};
  // JSON round trip: VS Code's WorkspaceConfiguration carries methods (get, has, update, inspect).
  const plain: unknown = section === undefined ? {} : JSON.parse(JSON.stringify(section));
  if (isObject(plain)) {
    for (const [key, value] of Object.entries(plain)) {
      if (!CLIENT_ONLY_SECTIONS.includes(key)) result[key] = value;
    }
  }
  if (!trusted) {
    const execution = isObject(result.execution) ? result.execution : {};
    result.execution = { ...execution, enabled: false };
  }
  return result;
}

/** `{"a.b": 1, "a.c": 2}` -> `{a: {b: 1, c: 2}}`: how VS Code nests dotted setting keys. */
export function nest(flat: Record<string, Json>): JsonObject {
  const root: JsonObject = {};
  for (const [dotted, value] of Object.entries(flat)) {
    const parts = dotted.split('.');
    let node = root;
    for (const part of parts.slice(0, -1)) {
      if (!isObject(node[part])) node[part] = {};
      node = node[part] as JsonObject;
    }
    node[parts[parts.length - 1]] = value;
  }
  return root;
}

/** Defaults of every `torchLsp.*` property contributed in package.json, nested like VS Code does. */
export function contributedDefaults(packageJson: { contributes: { configuration: { properties: Record<string, { default?: Json }> } } }): JsonObject {
  const flat: Record<string, Json> = {};
  for (const [key, property] of Object.entries(packageJson.contributes.configuration.properties)) {
    if (key.startsWith(`${SECTION}.`)) flat[key.slice(SECTION.length + 1)] = property.default ?? null;
  }
  return nest(flat);
}

export interface ServerLaunchSettings {
  path?: string | null;
  python?: string | null;
  args?: string[] | null;
}

export interface Executable {
  command: string;
  args: string[];
  /** Where the choice came from, for the output channel (people ask "which python is it using?"). */
  source: string;
}

/**
 * How to start the server: an explicit executable, else `python -m torch_lsp serve` with the
 * configured interpreter or the Python extension's, else `torch-lsp` from PATH.
 */
export function serverExecutable(settings: ServerLaunchSettings, pythonFromExtension?: string): Executable {
  const extra = settings.args ?? [];
  if (settings.path) return { command: settings.path, args: ['serve', ...extra], source: `${SECTION}.server.path` };
  const python = settings.python || pythonFromExtension;
  if (python) {
    const source = settings.python ? `${SECTION}.server.python` : 'the Python extension';
    return { command: python, args: ['-m', 'torch_lsp', 'serve', ...extra], source };
  }
  return { command: 'torch-lsp', args: ['serve', ...extra], source: 'PATH' };
}

export interface PaletteCommand {
  /** The VS Code command id (distinct from the server's: vscode-languageclient registers those). */
  id: string;
  /** The server command run through workspace/executeCommand. */
  server: string;
  /** What the command needs: the active Python file, or the latest run (optional). */
  argument: 'file' | 'run' | 'none';
}

export const PALETTE_COMMANDS: readonly PaletteCommand[] = [
  { id: 'torchLsp.train', server: 'torch-lsp.train', argument: 'file' },
  { id: 'torchLsp.stopTraining', server: 'torch-lsp.stopTraining', argument: 'run' },
  { id: 'torchLsp.showMetrics', server: 'torch-lsp.metrics', argument: 'run' },
  { id: 'torchLsp.modelSummary', server: 'torch-lsp.summary', argument: 'file' },
  { id: 'torchLsp.stepMemory', server: 'torch-lsp.memory', argument: 'file' },
  { id: 'torchLsp.serverInfo', server: 'torch-lsp.serverInfo', argument: 'none' },
];

/** Positional arguments of the server command: the script's URI, or the run id when one is known. */
export function commandArguments(command: PaletteCommand, context: { fileUri?: string; runId?: string }): Json[] | undefined {
  switch (command.argument) {
    case 'file':
      return context.fileUri ? [context.fileUri] : undefined; // undefined: nothing to run it on
    case 'run':
      return context.runId ? [context.runId] : []; // the server defaults to the latest run
    default:
      return [];
  }
}

/** A run id in a `torch-lsp.train` result: the bare id, or `{runId}` / `{id}`. */
export function runIdOf(result: unknown): string | undefined {
  if (typeof result === 'string') return result;
  if (isObject(result)) {
    const id = result.runId ?? result.run_id ?? result.id;
    if (typeof id === 'string') return id;
  }
  return undefined;
}

/** Markdown for a command result: the server's own rendering when it sends one, else the JSON. */
export function resultMarkdown(title: string, result: unknown): string {
  if (isObject(result) && typeof result.markdown === 'string') return result.markdown;
  if (typeof result === 'string') return result;
  return `# ${title}\n\n\`\`\`json\n${JSON.stringify(result, null, 2)}\n\`\`\`\n`;
}
