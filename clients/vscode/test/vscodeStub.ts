/**
 * A stand-in for the `vscode` module, enough for the extension's thin layer to run in plain Node:
 * it records what the extension shows (status bar, output lines, messages, opened URLs) and lets a
 * test run the registered commands. Installed with `installVscodeStub()` before the extension is
 * required.
 */

import Module = require("node:module");

export interface Recorded {
  commands: Map<string, (...args: unknown[]) => unknown>;
  output: string[];
  errors: string[];
  warnings: string[];
  infos: string[];
  opened: string[];
  status: { text: string; tooltip: unknown; backgroundColor: unknown; shown: boolean };
  settings: Record<string, unknown>;
  folders: string[];
  configListeners: Array<(event: { affectsConfiguration(key: string): boolean }) => void>;
}

export const recorded: Recorded = {
  commands: new Map(),
  output: [],
  errors: [],
  warnings: [],
  infos: [],
  opened: [],
  status: { text: "", tooltip: "", backgroundColor: undefined, shown: false },
  settings: {},
  folders: [],
  configListeners: [],
};

const disposable = { dispose: (): void => undefined };
const event = (): typeof disposable => disposable;

class ThemeColor {
  constructor(readonly id: string) {}
}

const Uri = {
  parse: (value: string) => ({ toString: () => value, fsPath: value }),
  file: (fsPath: string) => ({ toString: () => `file://${fsPath}`, fsPath }),
};

const vscode = {
  StatusBarAlignment: { Left: 1, Right: 2 },
  ProgressLocation: { SourceControl: 1, Window: 10, Notification: 15 },
  ThemeColor,
  Uri,
  window: {
    createOutputChannel: () => ({
      appendLine: (line: string) => recorded.output.push(line),
      append: (text: string) => recorded.output.push(text),
      show: () => undefined,
      clear: () => undefined,
      dispose: () => undefined,
    }),
    createStatusBarItem: () => {
      const item = recorded.status as Recorded["status"] & { command?: string; show(): void; hide(): void; dispose(): void };
      item.show = () => {
        recorded.status.shown = true;
      };
      item.hide = () => {
        recorded.status.shown = false;
      };
      item.dispose = () => undefined;
      return item;
    },
    showErrorMessage: async (message: string) => {
      recorded.errors.push(message);
      return undefined;
    },
    showWarningMessage: async (message: string) => {
      recorded.warnings.push(message);
      return undefined;
    },
    showInformationMessage: async (message: string) => {
      recorded.infos.push(message);
      return undefined;
    },
    showQuickPick: async () => undefined,
    showWorkspaceFolderPick: async () => undefined,
    withProgress: async (_options: unknown, task: (progress: { report(v: unknown): void }) => Promise<unknown>) =>
      task({ report: () => undefined }),
    onDidChangeActiveTextEditor: event,
    activeTextEditor: undefined,
  },
  workspace: {
    get workspaceFolders() {
      return recorded.folders.map((folder, index) => ({ uri: Uri.file(folder), name: folder, index }));
    },
    getWorkspaceFolder: () => undefined,
    getConfiguration: () => ({
      get: <T>(key: string, fallback: T): T => (key in recorded.settings ? (recorded.settings[key] as T) : fallback),
    }),
    onDidChangeWorkspaceFolders: event,
    onDidChangeConfiguration: (listener: Recorded["configListeners"][number]) => {
      recorded.configListeners.push(listener);
      return disposable;
    },
  },
  commands: {
    registerCommand: (id: string, handler: (...args: unknown[]) => unknown) => {
      recorded.commands.set(id, handler);
      return disposable;
    },
  },
  env: {
    openExternal: async (uri: { toString(): string }) => {
      recorded.opened.push(uri.toString());
      return true;
    },
  },
};

let installed = false;

/** Makes `require("vscode")` return the stand-in. */
export function installVscodeStub(): void {
  if (installed) return;
  installed = true;
  const mod = Module as unknown as { _load: (request: string, ...rest: unknown[]) => unknown };
  const original = mod._load;
  mod._load = function (request: string, ...rest: unknown[]): unknown {
    if (request === "vscode") {
      return vscode;
    }
    return original.call(this, request, ...rest);
  };
}
