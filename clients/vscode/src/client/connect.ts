/**
 * Finding the daemon, and starting it through nbctl when its socket does not answer.
 *
 * Why this module exists: a client never runs the daemon itself; `nbctl daemon start` owns how the
 * daemon is started (its lock, its log, detaching). This module only decides when to ask for it and
 * waits, with a deadline, until the daemon answers its health check.
 */

import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import { status as Status } from "@grpc/grpc-js";
import { NbdClient } from "./client";
import { socketLocation, socketProblem, type Env, type SocketLocation } from "./discovery";
import { NbdError } from "./errors";

export interface ConnectOptions {
  /** An explicit socket path (an editor setting); empty follows the discovery rules. */
  socketPath?: string;
  /** The environment for discovery and for nbctl; default `process.env`. */
  env?: Env;
  /** Home directory for discovery; default `os.homedir()`. */
  home?: string;
  /** Start the daemon through nbctl when the socket does not answer; default true. */
  autoStart?: boolean;
  /** The nbctl executable; default "nbctl" (looked up on PATH). */
  nbctlPath?: string;
  /** How long to wait for a started daemon to answer, in milliseconds; default 20 s. */
  startTimeoutMs?: number;
  /** Receives one line per step (for an output channel). */
  log?: (line: string) => void;
}

export interface Connection {
  client: NbdClient;
  location: SocketLocation;
  /** True when this call started the daemon. */
  started: boolean;
}

/**
 * Why the socket must not be used, when it belongs to another user (as nbdclient refuses it too):
 * talking to someone else's daemon would launch notebooks with their kubeconfig.
 */
export function socketOwnerProblem(socketPath: string, uid: number | undefined = process.getuid?.()): string | undefined {
  if (uid === undefined) {
    return undefined;
  }
  let owner: number;
  try {
    owner = fs.statSync(socketPath).uid;
  } catch {
    return undefined;
  }
  return owner !== uid
    ? `the socket ${socketPath} belongs to another user (uid ${owner}); use your own with NBD_SOCKET or the nbd.socketPath setting`
    : undefined;
}

/** One health check on a private channel, so a failed probe's reconnect backoff never delays the next. */
export async function probe(socketPath: string, deadlineMs = 1000): Promise<boolean> {
  const client = new NbdClient(socketPath, { "grpc.use_local_subchannel_pool": 1 });
  try {
    return (await client.healthCheck({ deadlineMs })) === "SERVING";
  } catch {
    return false;
  } finally {
    client.close();
  }
}

/** Polls the health check until it answers SERVING or `deadlineMs` passes. */
export async function waitForHealth(socketPath: string, deadlineMs: number, intervalMs = 100): Promise<boolean> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const left = end - Date.now();
    if (left <= 0) {
      return false;
    }
    if (await probe(socketPath, Math.max(50, Math.min(1000, left)))) {
      return true;
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(intervalMs, Math.max(0, end - Date.now()))));
  }
}

interface NbctlResult {
  code: number | null;
  output: string;
}

/** Runs `nbctl daemon start` to completion; rejects with NbdError when nbctl cannot run. */
export function runNbctlStart(nbctlPath: string, env: Env, socketPath: string, timeoutMs: number): Promise<NbctlResult> {
  return new Promise((resolve, reject) => {
    // NBD_SOCKET makes nbctl start the daemon on the socket this client will dial, even when the
    // path came from an editor setting rather than from the shared discovery rules.
    const child = spawn(nbctlPath, ["daemon", "start"], {
      env: { ...env, NBD_SOCKET: socketPath },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    const collect = (chunk: Buffer): void => {
      output += chunk.toString("utf8");
    };
    child.stdout.on("data", collect);
    child.stderr.on("data", collect);
    const timer = setTimeout(() => child.kill("SIGTERM"), timeoutMs);
    child.on("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      const message =
        err.code === "ENOENT"
          ? `Cannot start the nbd daemon: \`${nbctlPath}\` was not found; install nbd or set nbd.nbctlPath.`
          : `Cannot start the nbd daemon: running \`${nbctlPath} daemon start\` failed: ${err.message}.`;
      reject(new NbdError(Status.UNAVAILABLE, message, { cause: err }));
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

/**
 * A client of the user's daemon, started through nbctl when the socket does not answer.
 *
 * Throws NbdError UNAVAILABLE when the daemon cannot be reached or started, DEADLINE_EXCEEDED when
 * a started daemon does not answer in time.
 */
export async function connect(options: ConnectOptions = {}): Promise<Connection> {
  const env = options.env ?? process.env;
  const location = socketLocation(env, options.home ?? os.homedir(), options.socketPath);
  const log = options.log ?? ((): void => undefined);
  const problem = socketProblem(location.path);
  if (problem !== undefined) {
    throw new NbdError(Status.INVALID_ARGUMENT, `Cannot reach the nbd daemon: ${problem}.`);
  }
  const owner = socketOwnerProblem(location.path);
  if (owner !== undefined) {
    throw new NbdError(Status.PERMISSION_DENIED, owner, { reason: "SocketOwnedByOther" });
  }
  if (await probe(location.path)) {
    return { client: new NbdClient(location.path), location, started: false };
  }
  if (options.autoStart === false) {
    throw new NbdError(
      Status.UNAVAILABLE,
      `The nbd daemon does not answer on ${location.path} (from ${location.source}); start it with \`nbctl daemon start\`.`,
    );
  }
  const nbctl = options.nbctlPath !== undefined && options.nbctlPath !== "" ? options.nbctlPath : "nbctl";
  const timeoutMs = options.startTimeoutMs ?? 20_000;
  const started = Date.now();
  log(`nbd: no daemon on ${location.path}; running \`${nbctl} daemon start\``);
  const result = await runNbctlStart(nbctl, env, location.path, timeoutMs);
  const output = result.output.trim();
  if (output !== "") {
    for (const line of output.split("\n")) {
      log(line);
    }
  }
  if (result.code !== 0) {
    const detail = output.split("\n").filter((line) => line.trim() !== "").pop() ?? `exit code ${String(result.code)}`;
    throw new NbdError(Status.UNAVAILABLE, `\`${nbctl} daemon start\` failed: ${detail}`);
  }
  const left = Math.max(0, timeoutMs - (Date.now() - started));
  if (!(await waitForHealth(location.path, left))) {
    throw new NbdError(
      Status.DEADLINE_EXCEEDED,
      `The nbd daemon started by \`${nbctl} daemon start\` did not answer on ${location.path} within ` +
        `${Math.round(timeoutMs / 1000)} s; see \`nbctl daemon logs\`.`,
    );
  }
  log(`nbd: daemon answers on ${location.path}`);
  return { client: new NbdClient(location.path), location, started: true };
}
