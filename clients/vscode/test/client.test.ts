/**
 * The client against a real `nbd` daemon: every RPC the daemon serves today, errors mapped to
 * NbdError with the daemon's message verbatim, the Events stream and Shutdown.
 *
 * The daemon runs with `--capabilities none`, so Launch, Stop, Logs and Sync answer UNIMPLEMENTED
 * whatever capabilities the repository holds: that is the error path these tests pin. The launch
 * against kubesim is a separate test (launch.test.ts).
 */

import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import { after, before, describe, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { NbdClient, NbdError, type SessionEvent } from "../src/client";
import { Daemon, nbdBin, seedSession } from "./daemon";

const BIN = nbdBin();
const SKIP = BIN === undefined ? "no nbd executable (set NBD_BIN or create the repository venv)" : false;

async function rejectsWith(promise: Promise<unknown>, code: number): Promise<NbdError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof NbdError, `expected NbdError, got ${String(err)}`);
    assert.equal(err.code, code, `expected ${code}, got ${err.code} ${err.codeName}: ${err.message}`);
    return err;
  }
  assert.fail("the call succeeded");
}

async function drain<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const items: T[] = [];
  for await (const item of stream) {
    items.push(item);
  }
  return items;
}

describe("a daemon with no sessions", { skip: SKIP }, () => {
  let daemon: Daemon;
  let client: NbdClient;
  before(async () => {
    daemon = await Daemon.start(BIN!, { args: ["--capabilities", "none"] });
    client = new NbdClient(daemon.socket);
  });
  after(async () => {
    client?.close();
    await daemon?.stop();
  });

  test("health answers SERVING", async () => {
    assert.equal(await client.healthCheck(), "SERVING");
  });

  test("Version tells the daemon's identity", async () => {
    const version = await client.version("0.1.0");
    assert.match(version.version, /^\d+\.\d+\.\d+/);
    assert.equal(version.apiVersion, "v1");
    assert.equal(version.pid, daemon.child.pid);
    assert.equal(version.socket, fs.realpathSync(daemon.socket));
    assert.equal(version.stateDir, fs.realpathSync(daemon.dir));
    assert.ok(version.started !== null && version.started.seconds > 0);
  });

  test("List is empty", async () => {
    assert.deepEqual(await client.list(), []);
  });

  test("Events with initial snapshots sends none and stays open until cancelled", async () => {
    const abort = new AbortController();
    const received: SessionEvent[] = [];
    const timer = setTimeout(() => abort.abort(), 300);
    const err = await rejectsWith(
      (async () => {
        for await (const event of client.events({ initial: true }, { signal: abort.signal })) {
          received.push(event);
        }
      })(),
      status.CANCELLED,
    );
    clearTimeout(timer);
    assert.equal(err.fromDaemon, false);
    assert.deepEqual(received, []);
    // The cancelled stream left the daemon serving.
    assert.equal(await client.healthCheck(), "SERVING");
  });

  test("Launch answers UNIMPLEMENTED as an NbdError with the daemon's message verbatim", async () => {
    const err = await rejectsWith(drain(client.launch({ directory: daemon.dir })), status.UNIMPLEMENTED);
    assert.equal(err.codeName, "UNIMPLEMENTED");
    assert.equal(err.fromDaemon, true);
    assert.equal(err.reason, "CapabilityMissing");
    assert.match(err.message, /launch/);
    // Verbatim: no status prefix of the gRPC library ("12 UNIMPLEMENTED: ...").
    assert.doesNotMatch(err.message, /^\d+ UNIMPLEMENTED/);
  });

  test("Get of an unknown session answers NOT_FOUND with the daemon's message", async () => {
    const err = await rejectsWith(client.get("nope"), status.NOT_FOUND);
    assert.equal(err.message, "no session nope; see `nbctl list`");
    assert.equal(err.reason, "NotFound");
  });

  test("an already-aborted signal cancels before calling", async () => {
    const abort = new AbortController();
    abort.abort();
    await rejectsWith(client.list({ signal: abort.signal }), status.CANCELLED);
    await rejectsWith(drain(client.events({}, { signal: abort.signal })), status.CANCELLED);
  });
});

describe("a daemon with persisted sessions", { skip: SKIP }, () => {
  let daemon: Daemon;
  let client: NbdClient;
  before(async () => {
    daemon = await Daemon.start(BIN!, {
      args: ["--capabilities", "none"],
      seed: (dir) => {
        seedSession(dir, {
          name: "hello",
          namespace: "default",
          context: "kubesim",
          directory: "/home/u/hello",
          phase: "READY",
          url: "http://127.0.0.1:8890/?token=t0k",
          sync: { state: "WATCHING", conflicts: [{ path: "a.py", copy_path: "a.conflict-remote-1.py" }] },
          forward: { state: "ACTIVE", local_port: 8890, remote_port: 8888 },
        });
        seedSession(dir, { name: "train", namespace: "ml", context: "kubesim", directory: "/home/u/train", phase: "STOPPED" });
        seedSession(dir, { name: "train", namespace: "other", context: "kubesim", directory: "/home/u/train2", phase: "FAILED" });
      },
    });
    client = new NbdClient(daemon.socket);
  });
  after(async () => {
    client?.close();
    await daemon?.stop();
  });

  test("List returns every session with its fields", async () => {
    const sessions = await client.list();
    assert.deepEqual(
      sessions.map((s) => [s.ref, s.phase, s.directory]),
      [
        ["hello", "PHASE_READY", "/home/u/hello"],
        ["ml/train", "PHASE_STOPPED", "/home/u/train"],
        ["other/train", "PHASE_FAILED", "/home/u/train2"],
      ],
    );
    const hello = sessions[0]!;
    assert.equal(hello.sync?.state, "SYNC_STATE_WATCHING");
    assert.deepEqual(hello.sync?.conflicts.map((c) => [c.path, c.copyPath]), [["a.py", "a.conflict-remote-1.py"]]);
    assert.equal(hello.forward?.state, "FORWARD_STATE_ACTIVE");
    assert.equal(hello.forward?.localPort, 8890);
    assert.equal(hello.url, "http://127.0.0.1:8890/?token=t0k");
  });

  test("Get of a malformed reference answers INVALID_ARGUMENT", async () => {
    await rejectsWith(client.get("ns/"), status.INVALID_ARGUMENT);
  });

  test("Get resolves a reference; an ambiguous one is INVALID_ARGUMENT", async () => {
    const session = await client.get("ml/train");
    assert.equal(session.namespace, "ml");
    const err = await rejectsWith(client.get("train"), status.INVALID_ARGUMENT);
    assert.match(err.message, /ambiguous/);
  });

  test("Events sends one SNAPSHOT per session first; a filter narrows them", async () => {
    const abort = new AbortController();
    const snapshots: SessionEvent[] = [];
    for await (const event of client.events({ initial: true }, { signal: abort.signal })) {
      snapshots.push(event);
      if (snapshots.length === 3) {
        break; // Breaking out cancels the call.
      }
    }
    assert.deepEqual(snapshots.map((e) => e.kind), Array(3).fill("SESSION_EVENT_KIND_SNAPSHOT"));
    assert.deepEqual(snapshots.map((e) => e.session?.ref).sort(), ["hello", "ml/train", "other/train"]);

    const filtered: SessionEvent[] = [];
    for await (const event of client.events({ sessions: ["hello"], initial: true })) {
      filtered.push(event);
      break;
    }
    assert.equal(filtered[0]?.session?.name, "hello");
    assert.equal(await client.healthCheck(), "SERVING");
  });

  test("Stop, Logs and Sync of a session answer UNIMPLEMENTED without their capabilities", async () => {
    await rejectsWith(client.stop("hello"), status.UNIMPLEMENTED);
    await rejectsWith(client.sync("hello", "ACTION_PAUSE"), status.UNIMPLEMENTED);
    await rejectsWith(drain(client.logs({ session: "hello", source: "LOG_SOURCE_BUILD" })), status.UNIMPLEMENTED);
  });

  test("Stop of an unknown session answers an error naming it", async () => {
    const err = await client.stop("nope").then(
      () => assert.fail("Stop succeeded"),
      (e: unknown) => e as NbdError,
    );
    assert.ok(err instanceof NbdError);
    assert.ok([status.NOT_FOUND, status.UNIMPLEMENTED].includes(err.code), err.message);
  });
});

describe("Shutdown", { skip: SKIP }, () => {
  test("stops the daemon; the next call is UNAVAILABLE naming the socket and how to start it", async () => {
    const daemon = await Daemon.start(BIN!, { args: ["--capabilities", "none"] });
    const client = new NbdClient(daemon.socket);
    try {
      await client.shutdown(1);
      assert.equal(await daemon.waitExit(15_000), 0, daemon.output());
      const err = await rejectsWith(client.version(), status.UNAVAILABLE);
      assert.equal(err.fromDaemon, false);
      assert.ok(err.message.includes(daemon.socket), err.message);
      assert.match(err.message, /nbctl daemon start/);
    } finally {
      client.close();
      await daemon.stop();
    }
  });
});
