/**
 * VS Code glue: start `torch-lsp serve`, feed it settings (code execution off in untrusted
 * workspaces), and expose the server's commands in the command palette. The decisions live in
 * settings.ts, which is tested without VS Code.
 */

import * as vscode from 'vscode';
import { LanguageClient, LanguageClientOptions, ServerOptions } from 'vscode-languageclient/node';
import {
  DOCUMENT_SELECTOR, PALETTE_COMMANDS, PaletteCommand, SECTION, ServerLaunchSettings, commandArguments, resultMarkdown,
  runIdOf, serverExecutable, serverSettings,
} from './settings';

let client: LanguageClient | undefined;
let output: vscode.LogOutputChannel;
let latestRunId: string | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel('torch-lsp', { log: true });
  context.subscriptions.push(
    output,
    vscode.commands.registerCommand('torchLsp.restartServer', () => restart(context)),
    ...PALETTE_COMMANDS.map((command) => vscode.commands.registerCommand(command.id, () => runPaletteCommand(command))),
    // Trust lifts the execution veto and lets workspace values of the server path apply.
    vscode.workspace.onDidGrantWorkspaceTrust(() => restart(context)),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration(`${SECTION}.server`)) void restart(context);
    }),
  );
  await watchPythonInterpreter(context);
  await start(context);
}

export async function deactivate(): Promise<void> {
  await client?.stop();
  client = undefined;
}

async function start(context: vscode.ExtensionContext): Promise<void> {
  const launch = vscode.workspace.getConfiguration(SECTION).get<ServerLaunchSettings>('server') ?? {};
  const executable = serverExecutable(launch, await pythonFromExtension());
  output.info(`Starting ${executable.command} ${executable.args.join(' ')} (from ${executable.source}); ` +
                    `workspace ${vscode.workspace.isTrusted ? 'trusted' : 'untrusted: code execution off'}`);
  const serverOptions: ServerOptions = { command: executable.command, args: executable.args };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [...DOCUMENT_SELECTOR],
    outputChannel: output,
    initializationOptions: () => serverSettings(vscode.workspace.getConfiguration(SECTION), vscode.workspace.isTrusted),
    synchronize: { configurationSection: SECTION },
    middleware: {
      workspace: {
        // The server pulls `torchLsp` with workspace/configuration; answer with the same mapping.
        configuration: async (params, token, next) => {
          const answers = await next(params, token);
          if (!Array.isArray(answers)) return answers;
          return answers.map((answer, index) => params.items[index]?.section === SECTION
            ? serverSettings(answer, vscode.workspace.isTrusted) : answer);
        },
      },
    },
  };
  client = new LanguageClient(SECTION, 'torch-lsp', serverOptions, clientOptions);
  try {
    await client.start();
  } catch (error) {
    void vscode.window.showErrorMessage(`torch-lsp could not start \`${executable.command}\` (from ${executable.source}): ${error}. ` +
      'Install it with `pip install torch-lsp` in that interpreter, or set torchLsp.server.path.');
  }
  context.subscriptions.push({ dispose: () => void client?.stop() });
}

async function restart(context: vscode.ExtensionContext): Promise<void> {
  await client?.stop();
  client = undefined;
  await start(context);
}

async function runPaletteCommand(command: PaletteCommand): Promise<void> {
  if (!client?.isRunning()) {
    void vscode.window.showWarningMessage('torch-lsp is not running: see the torch-lsp output channel.');
    return;
  }
  const editor = vscode.window.activeTextEditor;
  const fileUri = editor?.document.languageId === 'python' ? editor.document.uri.toString() : undefined;
  const args = commandArguments(command, { fileUri, runId: latestRunId });
  if (args === undefined) {
    void vscode.window.showWarningMessage('Open the Python file to run this on first.');
    return;
  }
  if (fileUri && editor?.document.isDirty) await editor.document.save(); // training runs the file on disk
  try {
    const result = await client.sendRequest('workspace/executeCommand', { command: command.server, arguments: args });
    await showResult(command, result);
  } catch (error) {
    void vscode.window.showErrorMessage(`${command.server} failed: ${error}`);
  }
}

async function showResult(command: PaletteCommand, result: unknown): Promise<void> {
  if (command.server === 'torch-lsp.train') {
    latestRunId = runIdOf(result) ?? latestRunId;
    void vscode.window.showInformationMessage(`Training started${latestRunId ? ` (run ${latestRunId})` : ''}: progress shows in the status bar.`);
    return;
  }
  if (command.server === 'torch-lsp.stopTraining') {
    void vscode.window.showInformationMessage('Training stopped.');
    return;
  }
  const document = await vscode.workspace.openTextDocument({ language: 'markdown', content: resultMarkdown(command.server, result) });
  await vscode.window.showTextDocument(document, { preview: true, viewColumn: vscode.ViewColumn.Beside });
}

interface PythonExtensionApi {
  environments?: {
    getActiveEnvironmentPath?(resource?: vscode.Uri): { path?: string } | undefined;
    onDidChangeActiveEnvironmentPath?: vscode.Event<unknown>;
  };
  settings?: { getExecutionDetails?(resource?: vscode.Uri): { execCommand?: string[] } | undefined };
}

async function pythonApi(): Promise<PythonExtensionApi | undefined> {
  const extension = vscode.extensions.getExtension<PythonExtensionApi>('ms-python.python');
  if (!extension) return undefined;
  try {
    return extension.isActive ? extension.exports : await extension.activate();
  } catch {
    return undefined; // a broken Python extension must not keep torch-lsp from starting
  }
}

/** The interpreter selected in the Python extension, when it is installed. */
async function pythonFromExtension(): Promise<string | undefined> {
  const api = await pythonApi();
  const resource = vscode.workspace.workspaceFolders?.[0]?.uri;
  return api?.environments?.getActiveEnvironmentPath?.(resource)?.path
    ?? api?.settings?.getExecutionDetails?.(resource)?.execCommand?.[0];
}

async function watchPythonInterpreter(context: vscode.ExtensionContext): Promise<void> {
  const event = (await pythonApi())?.environments?.onDidChangeActiveEnvironmentPath;
  if (event) context.subscriptions.push(event(() => void restart(context)));
}
