/**
 * Launch through the client against kubesim: the part of the client that needs the daemon's launch
 * capability. Each test is skipped while the daemon answers Launch with UNIMPLEMENTED (the
 * capability has not landed); the full launch is also skipped, saying why, when no cluster with the
 * controller can be had (NBD_E2E_KUBECONFIG unset and `python -m devstack up` failing).
 *
 * - Without the Notebook CRD installed, a launch must end in one clear failure (a `failed` event
 *   or an error status with the daemon's message), never hang.
 * - On a cluster where the nbd controller runs (NBD_E2E_KUBECONFIG, else the repository's local
 *   cluster brought up with `python -m devstack up` in a temporary state dir), examples/hello
 *   is launched to Ready, found through Events, and stopped.
 */

import { strict as assert } from "node:assert";
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { test, type TestContext } from "node:test";
import { status } from "@grpc/grpc-js";
import { NbdClient, NbdError, type LaunchEvent } from "../src/client";
import { LaunchRenderer } from "../src/view/launchLog";
import { Daemon, nbdBin, repoPython, repoRoot, tempDir } from "./daemon";

const BIN = nbdBin();
const PYTHON = repoPython();
const LAUNCH_DEADLINE_MS = 240_000;

interface Kubesim {
  kubeconfig: string;
  stop(): Promise<void>;
}

/** Runs `python -m kubesim serve` until its "kubesim serving URL kubeconfig=PATH" line. */
async function startKubesim(stateDir: string): Promise<Kubesim> {
  const child: ChildProcess = spawn(PYTHON!, ["-m", "kubesim", "serve", "--state-dir", stateDir, "--gpus", "1"], {
    cwd: repoRoot(),
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    }
  };
  const kubeconfig = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`kubesim did not start within 60 s:\n${output}`)), 60_000);
    child.stderr!.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stdout!.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const match = /kubesim serving \S+ kubeconfig=(\S+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`kubesim exited with ${String(code)}:\n${output}`));
    });
  }).catch(async (err: unknown) => {
    await stop();
    throw err;
  });
  return { kubeconfig, stop };
}

/** Skips the test when the daemon has no launch capability; returns true when skipped. */
async function skipWithoutLaunch(t: TestContext, client: NbdClient, dir: string): Promise<boolean> {
  try {
    for await (const _ of client.launch({ directory: path.join(dir, "no-such-directory") })) {
      break;
    }
  } catch (err) {
    if (err instanceof NbdError && err.code === status.UNIMPLEMENTED) {
      t.skip(`the daemon answers Launch with UNIMPLEMENTED: ${err.message}`);
      return true;
    }
  }
  return false;
}

interface Outcome {
  events: LaunchEvent[];
  lines: string[];
  error?: NbdError;
}

/** Follows a launch to its end (or the deadline, which is a failure: a launch must never hang). */
async function follow(client: NbdClient, request: Parameters<NbdClient["launch"]>[0]): Promise<Outcome> {
  const renderer = new LaunchRenderer();
  const outcome: Outcome = { events: [], lines: [] };
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), LAUNCH_DEADLINE_MS);
  try {
    for await (const event of client.launch(request, { signal: abort.signal })) {
      outcome.events.push(event);
      outcome.lines.push(...renderer.render(event));
    }
  } catch (err) {
    assert.ok(err instanceof NbdError);
    assert.ok(!abort.signal.aborted, `the launch did not end within ${LAUNCH_DEADLINE_MS / 1000} s:\n${outcome.lines.join("\n")}`);
    outcome.error = err;
  } finally {
    clearTimeout(timer);
  }
  return outcome;
}

function copyExample(into: string): string {
  const target = path.join(into, "hello");
  fs.cpSync(path.join(repoRoot(), "examples", "hello"), target, { recursive: true });
  return target;
}

const SKIP_NO_TOOLS = BIN === undefined || PYTHON === undefined ? "no repository venv (nbd, python)" : false;

test("launch against kubesim without the Notebook CRD ends in one clear failure", { skip: SKIP_NO_TOOLS, timeout: 300_000 }, async (t) => {
  const tmp = tempDir();
  const daemon = await Daemon.start(BIN!);
  const client = new NbdClient(daemon.socket);
  let kubesim: Kubesim | undefined;
  try {
    if (await skipWithoutLaunch(t, client, tmp.path)) return;
    kubesim = await startKubesim(path.join(tmp.path, "kubesim"));
    const outcome = await follow(client, { directory: copyExample(tmp.path), kubeconfig: kubesim.kubeconfig, noSync: true });
    const failed = outcome.events.find((e) => e.event === "failed")?.failed;
    const message = failed?.message ?? outcome.error?.message ?? "";
    assert.ok(message !== "", `no failure was reported:\n${outcome.lines.join("\n")}`);
    assert.ok(!outcome.events.some((e) => e.event === "ready"), "a launch without the CRD cannot be ready");
    if (outcome.error !== undefined) {
      assert.equal(outcome.error.fromDaemon, true);
      assert.notEqual(outcome.error.code, status.INTERNAL, outcome.error.message);
    }
  } finally {
    client.close();
    await kubesim?.stop();
    await daemon.stop();
    tmp.remove();
  }
});

interface Cluster {
  kubeconfig: string;
  down(): Promise<void>;
}

/** Runs `python -m devstack ARGS` (the repository's local cluster) to completion. */
function devstack(args: string[], timeoutMs: number): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(PYTHON!, ["-m", "devstack", ...args], { cwd: repoRoot(), stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill("SIGTERM"), timeoutMs);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/**
 * A cluster where the nbd controller runs: NBD_E2E_KUBECONFIG when set, else the repository's
 * local cluster (`python -m devstack up`) in a temporary state dir, taken down afterwards.
 */
async function fullCluster(stateDir: string): Promise<Cluster | string> {
  const given = process.env.NBD_E2E_KUBECONFIG;
  if (given !== undefined && given !== "") {
    return { kubeconfig: given, down: async () => undefined };
  }
  const down = async (): Promise<void> => {
    await devstack(["down", "--state-dir", stateDir], 60_000);
  };
  const up = await devstack(["up", "--state-dir", stateDir, "--gpus", "1", "--output", "json"], 180_000);
  if (up.code !== 0) {
    // The local cluster's own tests cover its start; here it is only the ground the launch runs on.
    const log = (() => {
      try {
        return fs.readFileSync(path.join(stateDir, "kubesim.log"), "utf8").trim().split("\n").slice(-3).join(" | ");
      } catch {
        return "";
      }
    })();
    await down();
    return `the local cluster did not start (python -m devstack up exited ${String(up.code)}): ${up.stderr.trim()} ${log}`;
  }
  const stack = JSON.parse(up.stdout.trim().split("\n").pop() ?? "{}") as { kubeconfig?: string };
  assert.ok(stack.kubeconfig, up.stdout);
  return { kubeconfig: stack.kubeconfig, down };
}

/** Why no full cluster can be had, or false. */
function clusterSkip(): string | false {
  if (SKIP_NO_TOOLS) return SKIP_NO_TOOLS;
  if (process.env.NBD_E2E_KUBECONFIG) return false;
  return fs.existsSync(path.join(repoRoot(), "devstack", "__main__.py"))
    ? false
    : "no cluster with the controller: set NBD_E2E_KUBECONFIG (the repository has no devstack)";
}

test(
  "launch examples/hello to Ready on a cluster with the controller, see it in Events, stop it",
  { skip: clusterSkip(), timeout: 600_000 },
  async (t) => {
    const tmp = tempDir();
    const daemon = await Daemon.start(BIN!);
    const client = new NbdClient(daemon.socket);
    let cluster: Cluster | undefined;
    try {
      if (await skipWithoutLaunch(t, client, tmp.path)) return;
      const got = await fullCluster(path.join(tmp.path, "stack"));
      if (typeof got === "string") {
        t.skip(got);
        return;
      }
      cluster = got;
      const directory = copyExample(tmp.path);
      const outcome = await follow(client, { directory, kubeconfig: cluster.kubeconfig, name: "vscode-hello", noSync: true });
      assert.equal(outcome.error, undefined, `${outcome.error?.message ?? ""}\n${outcome.lines.join("\n")}`);
      const ready = outcome.events.find((e) => e.event === "ready")?.ready;
      assert.ok(ready, outcome.lines.join("\n"));
      assert.match(ready.url, /^http:\/\/127\.0\.0\.1:\d+\//);
      const token = new URL(ready.url).searchParams.get("token");
      if (token) {
        assert.ok(!outcome.lines.join("\n").includes(token), "the token was rendered");
      }

      let seen = false;
      for await (const event of client.events({ initial: true })) {
        if (event.session?.directory === directory) {
          assert.equal(event.session.phase, "PHASE_READY");
          seen = true;
          break;
        }
      }
      assert.ok(seen, "Events has no session for the launched directory");
      const ref = outcome.events[outcome.events.length - 1]!.session;
      const stopped = await client.stop(ref);
      assert.ok(stopped && ["PHASE_STOPPED", "PHASE_STOPPING"].includes(stopped.phase), stopped?.phase);
    } finally {
      client.close();
      await daemon.stop();
      await cluster?.down();
      tmp.remove();
    }
  },
);
