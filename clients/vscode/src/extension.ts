/**
 * The editor-facing layer: commands, the status bar item and the output channel.
 *
 * Why this module exists: it wires VS Code to the client (src/client/) and the pure views
 * (src/view/) and holds no logic of its own beyond that wiring. Messages from the daemon are shown
 * as they are; the daemon already wrote them for a user.
 */

import * as vscode from "vscode";
import * as os from "node:os";
import { connect, launchRequest, NbdError, runFileRequest, SessionWatcher, type NbdClient, type Session, type SyncAction } from "./client";
import { LaunchRenderer, renderLogLine } from "./view/launchLog";
import { chooseSession, sessionRef } from "./view/pick";
import { eventNotice, SessionStore } from "./view/sessions";
import { disconnectedStatus, idleStatus, sessionStatus, type StatusView } from "./view/status";
import { phaseWord, syncWord } from "./view/format";
import { RunRenderer, runOutcome } from "./view/runLog";

const EXTENSION_VERSION = "0.1.0";

class NbdExtension implements vscode.Disposable {
  private readonly output = vscode.window.createOutputChannel("nbd");
  private readonly runOutput = vscode.window.createOutputChannel("nbd run");
  private readonly statusItem = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Left, 50);
  private readonly store = new SessionStore();
  private readonly watcher: SessionWatcher;
  private client: NbdClient | undefined;
  private connecting: Promise<NbdClient> | undefined;
  private logFollow: AbortController | undefined;
  private disconnected: string | undefined = "connecting to the nbd daemon…";

  constructor() {
    this.render();
    this.statusItem.show();
    // The watcher never starts the daemon: opening an editor must not start background processes.
    // Commands do start it, then kick the watcher.
    const answering = async (): Promise<NbdClient> => {
      const client = await this.getClient(false);
      await client.healthCheck();
      return client;
    };
    this.watcher = new SessionWatcher(answering, {
      onReset: () => {
        // The daemon answered: an empty daemon sends no snapshot, so this is the only sign of it.
        this.disconnected = undefined;
        this.store.clear();
        this.render();
      },
      onEvent: (event) => {
        this.disconnected = undefined;
        this.store.apply(event);
        const notice = eventNotice(event);
        if (notice !== undefined) {
          this.output.appendLine(notice);
          if (event.kind === "SESSION_EVENT_KIND_CONFLICT") {
            void vscode.window.showWarningMessage(notice);
          }
        }
        this.render();
      },
      onDisconnected: (error) => {
        this.disconnected = error.message;
        this.store.clear();
        // The client is kept: its channel reconnects by itself, and a command in flight keeps it.
        this.render();
      },
    });
    this.watcher.start();
  }

  dispose(): void {
    this.logFollow?.abort();
    void this.watcher.stop();
    this.client?.close();
    this.statusItem.dispose();
    this.output.dispose();
    this.runOutput.dispose();
  }

  private config(): vscode.WorkspaceConfiguration {
    return vscode.workspace.getConfiguration("nbd");
  }

  /** Forgets the connection (the socket setting changed) and reconnects. */
  reconfigure(): void {
    this.client?.close();
    this.client = undefined;
    this.watcher.restart();
  }

  /**
   * The client of the daemon. With `autoStart`, a cached client whose daemon went away is dropped
   * and the daemon is started again through nbctl.
   */
  private async getClient(autoStart = true): Promise<NbdClient> {
    if (this.client !== undefined) {
      if (!autoStart) {
        return this.client;
      }
      try {
        await this.client.healthCheck({ deadlineMs: 1500 });
        return this.client;
      } catch {
        this.client.close();
        this.client = undefined;
      }
    }
    if (this.connecting !== undefined) {
      try {
        return await this.connecting;
      } catch (err) {
        // A connection attempt without auto-start (the watcher's) failed; this one may start it.
        if (!autoStart) throw err;
      }
    }
    this.connecting ??= (async () => {
      const config = this.config();
      const connection = await connect({
        socketPath: config.get<string>("socketPath", ""),
        autoStart: autoStart && config.get<boolean>("autoStart", true),
        nbctlPath: config.get<string>("nbctlPath", "nbctl"),
        startTimeoutMs: 1000 * config.get<number>("startTimeoutSeconds", 20),
        log: (line) => this.output.appendLine(line),
      });
      if (connection.started) {
        this.watcher.kick();
      }
      this.client = connection.client;
      return connection.client;
    })().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private folders(): string[] {
    const folders = (vscode.workspace.workspaceFolders ?? []).map((f) => f.uri.fsPath);
    const active = vscode.window.activeTextEditor?.document.uri;
    const activeFolder = active !== undefined ? vscode.workspace.getWorkspaceFolder(active)?.uri.fsPath : undefined;
    return activeFolder !== undefined ? [activeFolder, ...folders.filter((f) => f !== activeFolder)] : folders;
  }

  render(): void {
    let view: StatusView;
    if (this.disconnected !== undefined) {
      view = disconnectedStatus(this.disconnected);
    } else {
      const folder = this.folders()[0];
      const session = folder !== undefined ? this.store.forDirectory(folder) : undefined;
      view = session !== undefined ? sessionStatus(session) : idleStatus();
    }
    this.statusItem.text = view.text;
    this.statusItem.tooltip = view.tooltip;
    this.statusItem.command = view.command;
    this.statusItem.backgroundColor =
      view.severity === "normal" ? undefined : new vscode.ThemeColor(`statusBarItem.${view.severity}Background`);
  }

  private showError(err: unknown): void {
    const message = err instanceof Error ? err.message : String(err);
    this.output.appendLine(err instanceof NbdError ? `Error (${err.codeName}): ${message}` : `Error: ${message}`);
    void vscode.window.showErrorMessage(message);
  }

  /** Runs a command body, showing any error as it is. */
  private run(body: () => Promise<void>): () => Promise<void> {
    return async () => {
      try {
        await body();
      } catch (err) {
        this.showError(err);
      }
    };
  }

  /** `run` for a command that takes the resource it was invoked on (a menu passes its URI). */
  private runWith<A>(body: (arg?: A) => Promise<void>): (arg?: A) => Promise<void> {
    return async (arg?: A) => {
      try {
        await body(arg);
      } catch (err) {
        this.showError(err);
      }
    };
  }

  /** The session a command acts on: the workspace's, the only one, or the user's pick. */
  private async pickSession(client: NbdClient): Promise<Session | undefined> {
    const choice = chooseSession(await client.list(), this.folders());
    switch (choice.kind) {
      case "one":
        return choice.session;
      case "none":
        throw new Error("nbd: no notebook session; run “nbd: Launch workspace as notebook” first.");
      case "ask": {
        const picked = await vscode.window.showQuickPick(
          choice.sessions.map((s) => ({ label: s.name, description: `${phaseWord(s.phase)} · ${s.directory}`, session: s })),
          { placeHolder: "Which notebook?" },
        );
        return picked?.session;
      }
    }
  }

  async launch(): Promise<void> {
    const folders = vscode.workspace.workspaceFolders ?? [];
    const folder =
      folders.length <= 1 ? folders[0] : await vscode.window.showWorkspaceFolderPick({ placeHolder: "Which folder to launch?" });
    if (folder === undefined) {
      if (folders.length === 0) {
        throw new Error("nbd: open a folder first; its contents are what the notebook runs.");
      }
      return;
    }
    const config = this.config();
    const request = launchRequest(
      folder.uri.fsPath,
      {
        context: config.get<string>("launch.context", ""),
        namespace: config.get<string>("launch.namespace", ""),
        kubeconfig: config.get<string>("launch.kubeconfig", ""),
        noSync: config.get<boolean>("launch.noSync", false),
      },
      process.env,
      folder.uri.fsPath,
      os.homedir(),
    );
    const client = await this.getClient();
    this.output.show(true);
    this.output.appendLine(`Launching ${request.directory}`);
    const renderer = new LaunchRenderer();
    await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Window, title: "nbd: launching" },
      async (progress) => {
        for await (const event of client.launch(request)) {
          for (const line of renderer.render(event)) {
            this.output.appendLine(line);
          }
          if (event.event === "phase" && event.phase) {
            progress.report({ message: phaseWord(event.phase.phase) });
          } else if (event.event === "failed" && event.failed) {
            void vscode.window.showErrorMessage(event.failed.message);
          } else if (event.event === "ready" && event.ready) {
            const url = event.ready.url;
            void vscode.window.showInformationMessage(`nbd: ${event.session} is ready.`, "Open in browser").then((answer) => {
              if (answer !== undefined) {
                void vscode.env.openExternal(vscode.Uri.parse(url));
              }
            });
          }
        }
      },
    );
  }

  /**
   * Runs the active (or right-clicked) file as a job on the cluster, with the folder's content and
   * image, streaming every rank's log to the "nbd run" channel. Cancelling the progress detaches:
   * the run goes on in the cluster.
   */
  async runFile(uri?: vscode.Uri): Promise<void> {
    const target = uri ?? vscode.window.activeTextEditor?.document.uri;
    if (target === undefined || target.scheme !== "file") {
      throw new Error("nbd: open the .py, .sh or .ipynb file to run first.");
    }
    const folder = vscode.workspace.getWorkspaceFolder(target);
    if (folder === undefined) {
      throw new Error(`nbd: ${target.fsPath} is not in an open folder; a run runs the folder's content.`);
    }
    const document = vscode.workspace.textDocuments.find((d) => d.uri.toString() === target.toString());
    if (document?.isDirty === true) {
      // What runs is what is on disk: save first, so the run has the edit the user sees.
      await document.save();
    }
    const config = this.config();
    const request = runFileRequest(
      folder.uri.fsPath,
      target.fsPath,
      {
        context: config.get<string>("launch.context", ""),
        namespace: config.get<string>("launch.namespace", ""),
        kubeconfig: config.get<string>("launch.kubeconfig", ""),
      },
      process.env,
      folder.uri.fsPath,
      os.homedir(),
    );
    const client = await this.getClient();
    this.runOutput.show(true);
    this.runOutput.appendLine(`Running ${request.command.join(" ")} in ${request.directory}`);
    const renderer = new RunRenderer();
    let name = "";
    const detach = new AbortController();
    await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: "nbd: running", cancellable: true },
      async (progress, token) => {
        token.onCancellationRequested(() => detach.abort());
        try {
          for await (const event of client.run(request, { signal: detach.signal })) {
            name = event.run !== "" ? event.run : name;
            for (const line of renderer.render(event)) {
              this.runOutput.appendLine(line);
            }
            if (event.event === "status" && event.status) {
              progress.report({ message: `${name}: ${event.status.phase.replace(/^RUN_PHASE_/, "").toLowerCase()}` });
            } else if (event.event === "failed" && event.failed) {
              void vscode.window.showErrorMessage(event.failed.message);
            }
          }
        } catch (err) {
          if (!detach.signal.aborted) throw err;
          const left = name !== "" ? `Run ${name} goes on in the cluster; \`nbctl logs ${name} -f\` follows it, \`nbctl stop ${name}\` stops it.` : "Run cancelled.";
          this.runOutput.appendLine(left);
          void vscode.window.showInformationMessage(`nbd: ${left}`);
          return;
        }
        const finished = renderer.finished;
        if (finished !== undefined) {
          const outcome = `nbd: ${runOutcome(finished)}`;
          if (finished.phase === "RUN_PHASE_SUCCEEDED") {
            void vscode.window.showInformationMessage(outcome);
          } else {
            void vscode.window.showErrorMessage(outcome);
          }
        }
      },
    );
  }

  async stop(): Promise<void> {
    const client = await this.getClient();
    const session = await this.pickSession(client);
    if (session === undefined) return;
    const stopped = await client.stop(sessionRef(session));
    this.output.appendLine(`Stopped ${sessionRef(session)}${stopped ? ` (${phaseWord(stopped.phase)})` : ""}`);
  }

  async openInBrowser(): Promise<void> {
    const client = await this.getClient();
    const session = await this.pickSession(client);
    if (session === undefined) return;
    if (session.url === "") {
      throw new Error(`nbd: ${session.name} has no URL yet (${phaseWord(session.phase)}); wait until it is ready.`);
    }
    await vscode.env.openExternal(vscode.Uri.parse(session.url));
  }

  async showBuildLog(): Promise<void> {
    const client = await this.getClient();
    const session = await this.pickSession(client);
    if (session === undefined) return;
    this.logFollow?.abort();
    const follow = new AbortController();
    this.logFollow = follow;
    this.output.show(true);
    this.output.appendLine(`Build log of ${sessionRef(session)}:`);
    try {
      for await (const line of client.logs({ session: sessionRef(session), source: "LOG_SOURCE_BUILD", follow: true }, { signal: follow.signal })) {
        this.output.appendLine(`  | ${renderLogLine(line)}`);
      }
    } catch (err) {
      if (follow.signal.aborted) return;
      throw err;
    }
  }

  async sync(action: SyncAction, verb: string): Promise<void> {
    const client = await this.getClient();
    const session = await this.pickSession(client);
    if (session === undefined) return;
    let force = false;
    if (action === "ACTION_RESUME" && session.sync?.state === "SYNC_STATE_HALTED") {
      // A halted sync stopped itself rather than delete most of one side: resuming past that
      // guard is the user's explicit choice.
      const answer = await vscode.window.showWarningMessage(
        `nbd: the sync of ${session.name} halted: ${session.sync.message}`,
        { modal: true },
        "Resume anyway",
      );
      if (answer === undefined) return;
      force = true;
    }
    const status = await client.sync(sessionRef(session), action, { force });
    const state = status !== null ? `; sync is ${syncWord(status.state)}` : "";
    const message = `nbd: ${verb} ${session.name}${state}.`;
    this.output.appendLine(message);
    void vscode.window.showInformationMessage(message);
  }

  /** Every command the extension contributes, by id (package.json lists the same ids). */
  commands(): Record<string, (...args: never[]) => Promise<void>> {
    return {
      "nbd.runFile": this.runWith((uri?: vscode.Uri) => this.runFile(uri)),
      "nbd.launch": this.run(() => this.launch()),
      "nbd.stop": this.run(() => this.stop()),
      "nbd.openInBrowser": this.run(() => this.openInBrowser()),
      "nbd.showBuildLog": this.run(() => this.showBuildLog()),
      "nbd.syncPause": this.run(() => this.sync("ACTION_PAUSE", "paused sync of")),
      "nbd.syncResume": this.run(() => this.sync("ACTION_RESUME", "resumed sync of")),
      "nbd.syncFlush": this.run(() => this.sync("ACTION_FLUSH", "flushed sync of")),
    };
  }

  async checkVersion(): Promise<void> {
    try {
      const version = await (await this.getClient(false)).version(EXTENSION_VERSION);
      if (version.apiVersion !== "" && version.apiVersion !== "v1") {
        void vscode.window.showWarningMessage(
          `nbd: the daemon speaks API ${version.apiVersion}, this extension v1; update the extension or the daemon.`,
        );
      }
    } catch {
      // Not running yet: the status bar says so, and the first command starts it.
    }
  }
}

export function activate(context: vscode.ExtensionContext): void {
  const extension = new NbdExtension();
  context.subscriptions.push(extension);
  for (const [id, handler] of Object.entries(extension.commands())) {
    context.subscriptions.push(vscode.commands.registerCommand(id, handler));
  }
  context.subscriptions.push(
    vscode.window.onDidChangeActiveTextEditor(() => extension.render()),
    vscode.workspace.onDidChangeWorkspaceFolders(() => extension.render()),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration("nbd.socketPath")) {
        extension.reconfigure();
      }
    }),
  );
  void extension.checkVersion();
}

export function deactivate(): void {
  // Everything is disposed through context.subscriptions.
}
