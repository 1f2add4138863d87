/**
 * Test support: the repository's executables and a real `nbd` daemon in a temporary directory.
 *
 * The daemon is started exactly as a user's would be (`nbd --socket DIR/nbd.sock --state-dir DIR`)
 * from the repository's venv, or from `NBD_BIN`; every test stops what it started.
 */

import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { waitForHealth } from "../src/client/connect";

/** The repository root: the first folder above this file holding pyproject.toml. */
export function repoRoot(): string {
  let dir = __dirname;
  for (let i = 0; i < 8; i++) {
    if (fs.existsSync(path.join(dir, "pyproject.toml"))) {
      return dir;
    }
    dir = path.dirname(dir);
  }
  throw new Error(`no pyproject.toml above ${__dirname}`);
}

function executable(envName: string, venvName: string): string | undefined {
  const fromEnv = process.env[envName];
  if (fromEnv !== undefined && fromEnv !== "") {
    // A relative path would depend on where the test runner was started from.
    if (!path.isAbsolute(fromEnv)) {
      throw new Error(`${envName}=${fromEnv} must be an absolute path`);
    }
    return fromEnv;
  }
  const candidate = path.join(repoRoot(), ".venv", "bin", venvName);
  return fs.existsSync(candidate) ? candidate : undefined;
}

export function nbdBin(): string | undefined {
  return executable("NBD_BIN", "nbd");
}

export function nbctlBin(): string | undefined {
  return executable("NBCTL_BIN", "nbctl");
}

export function repoPython(): string | undefined {
  return executable("NBD_PYTHON", "python");
}

/** A temporary directory removed by `remove()`; short, so a socket path inside it stays valid. */
export function tempDir(prefix = "nbdvs-"): { path: string; remove(): void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { path: dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

export interface DaemonOptions {
  /** Extra environment (KUBECONFIG for launches, ...). */
  env?: NodeJS.ProcessEnv;
  /** Extra arguments (`--capabilities none`, ...). */
  args?: string[];
  /** The socket path; default DIR/nbd.sock. */
  socket?: string;
  /** Prepares the state dir before the daemon starts (persisted sessions to load). */
  seed?: (stateDir: string) => void;
  startTimeoutMs?: number;
}

/**
 * Writes a persisted session the way the daemon's store does (`<state dir>/sessions/*.json`,
 * `{"format": 1, "session": {...}}`, enum values by their names without the proto prefix), so a
 * daemon started on that state dir serves it.
 */
export function seedSession(stateDir: string, session: Record<string, unknown>): void {
  const dir = path.join(stateDir, "sessions");
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const key = `${String(session.context)}/${String(session.namespace)}/${String(session.name)}`;
  fs.writeFileSync(path.join(dir, `${encodeURIComponent(key)}.json`), JSON.stringify({ format: 1, session }, null, 2));
}

export class Daemon {
  private exited: Promise<number | null>;

  private constructor(
    readonly dir: string,
    readonly socket: string,
    readonly logFile: string,
    readonly child: ChildProcess,
  ) {
    this.exited = new Promise((resolve) => {
      child.on("exit", (code) => resolve(code));
      // A binary that cannot be run (ENOENT) never exits: report it as an exit.
      child.on("error", (err) => {
        fs.appendFileSync(logFile, `cannot run: ${err.message}\n`);
        resolve(null);
      });
    });
  }

  /** Starts `nbd` on DIR/nbd.sock with DIR as its state dir and waits until it is healthy. */
  static async start(bin: string, options: DaemonOptions = {}): Promise<Daemon> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "nbdvs-"));
    options.seed?.(dir);
    const socket = options.socket ?? path.join(dir, "nbd.sock");
    const logFile = path.join(dir, "test-daemon.out");
    const out = fs.openSync(logFile, "w");
    const child = spawn(bin, ["--socket", socket, "--state-dir", dir, ...(options.args ?? [])], {
      env: { ...process.env, ...options.env, NBD_SOCKET: socket, NBD_STATE_DIR: dir },
      stdio: ["ignore", out, out],
    });
    fs.closeSync(out);
    const daemon = new Daemon(dir, socket, logFile, child);
    const early = daemon.exited.then((code) => code);
    const healthy = waitForHealth(socket, options.startTimeoutMs ?? 30_000);
    const outcome = await Promise.race([healthy.then((ok) => ({ ok })), early.then((code) => ({ exited: code }))]);
    if (!("ok" in outcome) || !outcome.ok) {
      const output = daemon.output();
      await daemon.stop();
      const reason = "exited" in outcome ? `exited with ${String(outcome.exited)}` : "did not answer its health check";
      throw new Error(`${bin} ${reason}; its output:\n${output}`);
    }
    return daemon;
  }

  /** The daemon's output so far (for assertion messages). */
  output(): string {
    try {
      return fs.readFileSync(this.logFile, "utf8");
    } catch {
      return "";
    }
  }

  /** Resolves with the exit code once the process has exited. */
  waitExit(timeoutMs: number): Promise<number | null | "timeout"> {
    return Promise.race([
      this.exited,
      new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), timeoutMs).unref()),
    ]);
  }

  /** Stops the daemon (SIGTERM, then SIGKILL) and removes its directory. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill("SIGTERM");
      if ((await this.waitExit(10_000)) === "timeout") {
        this.child.kill("SIGKILL");
        await this.exited;
      }
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
