/**
 * Finding and auto-starting the daemon: every error path with stand-in nbctl scripts, the start
 * path with a stand-in that starts the real `nbd`, and the real `nbctl daemon start`.
 */

import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";
import { status } from "@grpc/grpc-js";
import { connect, NbdError, probe, type NbdClient } from "../src/client";
import { socketOwnerProblem } from "../src/client/connect";
import { nbctlBin, nbdBin, tempDir } from "./daemon";

/** A stand-in nbctl: a shell script with the given body. */
function script(dir: string, name: string, body: string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return file;
}

async function connectError(options: Parameters<typeof connect>[0]): Promise<NbdError> {
  try {
    const connection = await connect(options);
    connection.client.close();
  } catch (err) {
    assert.ok(err instanceof NbdError, String(err));
    return err;
  }
  assert.fail("connect succeeded");
}

/** Shuts the daemon down and waits until its process is gone. */
async function shutdownAndWait(client: NbdClient): Promise<void> {
  const { pid } = await client.version();
  await client.shutdown(1);
  client.close();
  const end = Date.now() + 15_000;
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    assert.ok(Date.now() < end, `daemon pid ${pid} still running`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

test("nothing listening and no auto-start: UNAVAILABLE naming the socket and its rule", async () => {
  const tmp = tempDir();
  try {
    const socket = path.join(tmp.path, "nbd.sock");
    const err = await connectError({ env: { NBD_SOCKET: socket }, autoStart: false });
    assert.equal(err.code, status.UNAVAILABLE);
    assert.equal(err.message, `The nbd daemon does not answer on ${socket} (from NBD_SOCKET); start it with \`nbctl daemon start\`.`);
  } finally {
    tmp.remove();
  }
});

test("a socket path too long for Unix sockets: INVALID_ARGUMENT naming NBD_SOCKET", async () => {
  const err = await connectError({ env: { NBD_SOCKET: "/tmp/" + "x".repeat(120) }, autoStart: false });
  assert.equal(err.code, status.INVALID_ARGUMENT);
  assert.match(err.message, /too long .* set NBD_SOCKET/);
});

test("a missing nbctl: UNAVAILABLE naming the setting", async () => {
  const tmp = tempDir();
  try {
    const nbctl = path.join(tmp.path, "no-such-nbctl");
    const err = await connectError({ env: { NBD_SOCKET: path.join(tmp.path, "nbd.sock") }, nbctlPath: nbctl });
    assert.equal(err.code, status.UNAVAILABLE);
    assert.equal(err.message, `Cannot start the nbd daemon: \`${nbctl}\` was not found; install nbd or set nbd.nbctlPath.`);
  } finally {
    tmp.remove();
  }
});

test("nbctl failing: UNAVAILABLE with its last line, every line logged", async () => {
  const tmp = tempDir();
  try {
    const nbctl = script(tmp.path, "nbctl", 'echo "starting" ; echo "nbd: the state dir is not writable" >&2 ; exit 3');
    const logged: string[] = [];
    const err = await connectError({ env: { NBD_SOCKET: path.join(tmp.path, "nbd.sock") }, nbctlPath: nbctl, log: (l) => logged.push(l) });
    assert.equal(err.code, status.UNAVAILABLE);
    assert.equal(err.message, `\`${nbctl} daemon start\` failed: nbd: the state dir is not writable`);
    assert.ok(logged.includes("starting"), logged.join("\n"));
  } finally {
    tmp.remove();
  }
});

test("nbctl succeeding without a daemon: DEADLINE_EXCEEDED after the start timeout", async () => {
  const tmp = tempDir();
  try {
    const nbctl = script(tmp.path, "nbctl", "exit 0");
    const started = Date.now();
    const err = await connectError({ env: { NBD_SOCKET: path.join(tmp.path, "nbd.sock") }, nbctlPath: nbctl, startTimeoutMs: 600 });
    assert.equal(err.code, status.DEADLINE_EXCEEDED);
    assert.match(err.message, /did not answer on .*nbd\.sock within 1 s; see `nbctl daemon logs`/);
    assert.ok(Date.now() - started < 5000);
  } finally {
    tmp.remove();
  }
});

test("nbctl is given the socket this client dials (NBD_SOCKET) and `daemon start`", async () => {
  const tmp = tempDir();
  try {
    const record = path.join(tmp.path, "args");
    const nbctl = script(tmp.path, "nbctl", `echo "$NBD_SOCKET $*" > ${record}; exit 1`);
    const socket = path.join(tmp.path, "from-setting.sock");
    await connectError({ env: {}, socketPath: socket, nbctlPath: nbctl });
    assert.equal(fs.readFileSync(record, "utf8").trim(), `${socket} daemon start`);
  } finally {
    tmp.remove();
  }
});

const NBD = nbdBin();

test("auto-start: a stand-in nbctl that starts nbd in the background; connect waits for health", { skip: NBD === undefined && "no nbd executable" }, async () => {
  const tmp = tempDir();
  try {
    const socket = path.join(tmp.path, "nbd.sock");
    // Detached like the real nbctl: it returns before the daemon answers.
    const nbctl = script(
      tmp.path,
      "nbctl",
      `"${NBD}" --socket "$NBD_SOCKET" --state-dir "${tmp.path}" --capabilities none > "${tmp.path}/out" 2>&1 &\nexit 0`,
    );
    assert.equal(await probe(socket), false);
    const connection = await connect({ env: { ...process.env, NBD_SOCKET: socket }, nbctlPath: nbctl, startTimeoutMs: 30_000 });
    assert.equal(connection.started, true);
    assert.equal(connection.location.path, socket);
    assert.equal(await connection.client.healthCheck(), "SERVING");
    // A second connect finds it running and starts nothing.
    const again = await connect({ env: { NBD_SOCKET: socket }, nbctlPath: "/nonexistent" });
    assert.equal(again.started, false);
    again.client.close();
    await shutdownAndWait(connection.client);
  } finally {
    tmp.remove();
  }
});

const NBCTL = nbctlBin();

/** Why the real nbctl cannot be used here, or false. */
function nbctlSkip(): string | false {
  if (NBCTL === undefined) return "no nbctl executable (set NBCTL_BIN or create the repository venv)";
  const help = spawnSync(NBCTL, ["daemon", "start", "--help"], { encoding: "utf8", timeout: 30_000 });
  if (help.status !== 0) return `\`nbctl daemon start\` is not available yet: ${(help.stderr || help.stdout).trim().split("\n").pop() ?? ""}`;
  return false;
}

test("auto-start through the real `nbctl daemon start`", { skip: nbctlSkip() }, async () => {
  const tmp = tempDir();
  try {
    const socket = path.join(tmp.path, "nbd.sock");
    const env = { ...process.env, NBD_SOCKET: socket, NBD_STATE_DIR: tmp.path, PATH: `${path.dirname(NBCTL!)}:${process.env.PATH ?? ""}` };
    const logged: string[] = [];
    const connection = await connect({ env, nbctlPath: NBCTL!, startTimeoutMs: 30_000, log: (l) => logged.push(l) });
    assert.equal(connection.started, true, logged.join("\n"));
    const version = await connection.client.version();
    assert.equal(version.socket, fs.realpathSync(socket));
    await shutdownAndWait(connection.client);
  } finally {
    tmp.remove();
  }
});


test("a socket owned by another user is refused: PERMISSION_DENIED naming NBD_SOCKET", async () => {
  const tmp = tempDir();
  try {
    const socket = path.join(tmp.path, "nbd.sock");
    fs.writeFileSync(socket, "");
    const mine = fs.statSync(socket).uid;
    assert.equal(socketOwnerProblem(socket, mine), undefined);
    assert.equal(socketOwnerProblem(path.join(tmp.path, "absent.sock"), mine + 1), undefined);
    const problem = socketOwnerProblem(socket, mine + 1);
    assert.equal(problem, `the socket ${socket} belongs to another user (uid ${mine}); use your own with NBD_SOCKET or the nbd.socketPath setting`);
    if (mine === 0) {
      // As root, make the socket someone else's for real.
      fs.chownSync(socket, 4242, 4242);
      const err = await connectError({ env: { NBD_SOCKET: socket }, autoStart: false });
      assert.equal(err.code, status.PERMISSION_DENIED);
      assert.equal(err.reason, "SocketOwnedByOther");
    }
  } finally {
    tmp.remove();
  }
});
