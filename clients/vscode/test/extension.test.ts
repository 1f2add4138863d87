/**
 * The editor layer in plain Node, with a stand-in `vscode` module and a real daemon: the commands
 * it registers are the ones package.json contributes, the status bar follows the Events stream,
 * and the daemon's error messages are shown as they are.
 */

import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { Daemon, nbdBin, seedSession, tempDir } from "./daemon";
import { installVscodeStub, recorded } from "./vscodeStub";

installVscodeStub();
// eslint-disable-next-line @typescript-eslint/no-require-imports
const extension = require("../src/extension") as typeof import("../src/extension");

const packageJson = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "..", "package.json"), "utf8")) as {
  main: string;
  contributes: { commands: Array<{ command: string }> };
};

async function until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    assert.ok(Date.now() < end, `timed out waiting for ${what}; status: ${recorded.status.text}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const BIN = nbdBin();
const subscriptions: Array<{ dispose(): unknown }> = [];
let daemon: Daemon | undefined;
const workspace = tempDir("nbdws-");

before(async () => {
  if (BIN === undefined) return;
  daemon = await Daemon.start(BIN, {
    args: ["--capabilities", "none"],
    seed: (dir) =>
      seedSession(dir, {
        name: "ws",
        namespace: "default",
        context: "kubesim",
        directory: workspace.path,
        phase: "READY",
        url: "http://127.0.0.1:8891/?token=t0k",
        sync: { state: "WATCHING", conflicts: [{ path: "a.py", copy_path: "a.conflict-remote-1.py" }] },
      }),
  });
  recorded.settings = { socketPath: daemon.socket, autoStart: false };
  recorded.folders = [workspace.path];
  extension.activate({ subscriptions } as never);
});

after(async () => {
  for (const s of subscriptions) s.dispose();
  await new Promise((resolve) => setTimeout(resolve, 50));
  await daemon?.stop();
  workspace.remove();
});

test("package.json's main is the compiled extension", () => {
  assert.equal(path.resolve(__dirname, "..", "..", packageJson.main), path.resolve(__dirname, "..", "src", "extension.js"));
});

test("the registered commands are exactly the contributed ones", { skip: BIN === undefined && "no nbd executable" }, () => {
  const contributed = packageJson.contributes.commands.map((c) => c.command).sort();
  assert.deepEqual([...recorded.commands.keys()].sort(), contributed);
});

test("the status bar shows the workspace's session, its conflict highlighted", { skip: BIN === undefined && "no nbd executable" }, async () => {
  await until("the session's status", () => recorded.status.text.includes("ws: Ready"));
  assert.equal(recorded.status.text, "$(notebook) ws: Ready  $(sync) watching  $(warning) 1 conflict");
  assert.equal((recorded.status.backgroundColor as { id: string }).id, "statusBarItem.warningBackground");
  assert.ok(!String(recorded.status.tooltip).includes("t0k"));
  assert.equal((recorded.status as unknown as { command?: string }).command, "nbd.openInBrowser");
});

test("Open in browser opens the session's URL", { skip: BIN === undefined && "no nbd executable" }, async () => {
  await recorded.commands.get("nbd.openInBrowser")!();
  assert.deepEqual(recorded.opened, ["http://127.0.0.1:8891/?token=t0k"]);
});

test("Launch shows the daemon's error message as it is", { skip: BIN === undefined && "no nbd executable" }, async () => {
  recorded.errors.length = 0;
  await recorded.commands.get("nbd.launch")!();
  assert.equal(recorded.errors.length, 1);
  assert.equal(recorded.errors[0], "launch is not available in this daemon build: the launch capability is not installed");
  assert.ok(recorded.output.includes(`Error (UNIMPLEMENTED): ${recorded.errors[0]}`), recorded.output.join("\n"));
});

test("Sync pause shows the daemon's error message as it is", { skip: BIN === undefined && "no nbd executable" }, async () => {
  recorded.errors.length = 0;
  await recorded.commands.get("nbd.syncPause")!();
  assert.equal(recorded.errors.length, 1);
  assert.match(recorded.errors[0]!, /^sync is not available in this daemon build/);
});

test("Launch with no folder open names what to do", { skip: BIN === undefined && "no nbd executable" }, async () => {
  recorded.errors.length = 0;
  const folders = recorded.folders;
  recorded.folders = [];
  try {
    await recorded.commands.get("nbd.launch")!();
  } finally {
    recorded.folders = folders;
  }
  assert.deepEqual(recorded.errors, ["nbd: open a folder first; its contents are what the notebook runs."]);
});

test("an empty daemon shows the idle status, not a disconnected one", { skip: BIN === undefined && "no nbd executable" }, async () => {
  const empty = await Daemon.start(BIN!, { args: ["--capabilities", "none"] });
  const socket = recorded.settings.socketPath;
  try {
    recorded.settings = { ...recorded.settings, socketPath: empty.socket };
    // What the configuration listener does when nbd.socketPath changes.
    recorded.configListeners.forEach((listener) => listener({ affectsConfiguration: (key: string) => key === "nbd.socketPath" }));
    await until("the idle status", () => recorded.status.text === "$(notebook) nbd");
    assert.equal((recorded.status as unknown as { command?: string }).command, "nbd.launch");
  } finally {
    recorded.settings = { ...recorded.settings, socketPath: socket };
    recorded.configListeners.forEach((listener) => listener({ affectsConfiguration: (key: string) => key === "nbd.socketPath" }));
    await empty.stop();
  }
  await until("the session's status again", () => recorded.status.text.includes("ws: Ready"));
});

test("the status bar reports the daemon down once it stops", { skip: BIN === undefined && "no nbd executable" }, async () => {
  const { NbdClient } = await import("../src/client");
  const client = new NbdClient(daemon!.socket);
  await client.shutdown(1);
  client.close();
  await until("the disconnected status", () => recorded.status.text === "$(debug-disconnect) nbd");
  assert.match(String(recorded.status.tooltip), /nbd: .*(daemon|socket)/);
});
