/**
 * The Events follower against real daemons: snapshots, a daemon going away, and a new daemon on
 * the same socket picked up again with a reset first.
 */

import { strict as assert } from "node:assert";
import * as path from "node:path";
import { test } from "node:test";
import { NbdClient, NbdError, SessionWatcher, type SessionEvent } from "../src/client";
import { Daemon, nbdBin, seedSession, tempDir } from "./daemon";

const BIN = nbdBin();

/** Polls `check` until it holds or the deadline passes. */
async function until(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    assert.ok(Date.now() < end, `timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test("SessionWatcher follows Events across a daemon restart", { skip: BIN === undefined && "no nbd executable" }, async () => {
  const sockDir = tempDir();
  const socket = path.join(sockDir.path, "nbd.sock");
  const log: string[] = [];
  const names = new Set<string>();
  const errors: NbdError[] = [];
  let client: NbdClient | undefined;
  const watcher = new SessionWatcher(
    async () => {
      client?.close();
      client = new NbdClient(socket);
      await client.healthCheck();
      return client;
    },
    {
      onReset: () => {
        log.push("reset");
        names.clear();
      },
      onEvent: (event: SessionEvent) => {
        log.push(`${event.kind}:${event.session?.name ?? ""}`);
        if (event.session) names.add(event.session.name);
      },
      onDisconnected: (error) => {
        log.push(`down:${error.codeName}`);
        errors.push(error);
      },
    },
    { minBackoffMs: 50, maxBackoffMs: 200 },
  );
  let first: Daemon | undefined;
  let second: Daemon | undefined;
  try {
    // Started before any daemon: it reports the daemon down and keeps retrying.
    watcher.start();
    await until("a first failure", () => errors.length > 0);
    assert.equal(errors[0]!.code, 14);

    first = await Daemon.start(BIN!, {
      socket,
      args: ["--capabilities", "none"],
      seed: (dir) => seedSession(dir, { name: "one", namespace: "default", context: "kubesim", phase: "READY" }),
    });
    watcher.kick();
    await until("the first daemon's snapshot", () => names.has("one"));

    const client1 = new NbdClient(socket);
    await client1.shutdown(1);
    client1.close();
    assert.equal(await first.waitExit(15_000), 0);
    const downs = errors.length;
    await until("the stream to end", () => errors.length > downs);

    second = await Daemon.start(BIN!, {
      socket,
      args: ["--capabilities", "none"],
      seed: (dir) => seedSession(dir, { name: "two", namespace: "default", context: "kubesim", phase: "STOPPED" }),
    });
    watcher.kick();
    await until("the second daemon's snapshot", () => names.has("two"));
    assert.ok(!names.has("one"), `a reset came before the new snapshots: ${log.join(", ")}`);
    assert.ok(log.lastIndexOf("reset") < log.lastIndexOf("SESSION_EVENT_KIND_SNAPSHOT:two"), log.join(", "));
  } finally {
    await watcher.stop();
    client?.close();
    await first?.stop();
    await second?.stop();
    sockDir.remove();
  }
});
