/**
 * Where the daemon's socket is, by the same rules as the daemon, nbctl and the Python client
 * library (local/nbdlocal/paths.py).
 *
 * Why this module exists: every client must find the one daemon of the user without being told,
 * and the rules must agree exactly across clients, or an editor would start a second daemon beside
 * the one nbctl talks to. The functions are pure (environment, home and working directory in, paths
 * out) so the rules are tested as a table.
 *
 * Rules, first match wins:
 *   - state dir: `$NBD_STATE_DIR`, `$XDG_STATE_HOME/nbd`, `~/.local/state/nbd` (home: `$HOME`);
 *   - socket: an editor setting, `$NBD_SOCKET`, `$XDG_RUNTIME_DIR/nbd/nbd.sock`, `<state dir>/nbd.sock`.
 * Empty variables count as unset. `~` is expanded in the setting, NBD_SOCKET, NBD_STATE_DIR and
 * XDG_STATE_HOME (not XDG_RUNTIME_DIR, as in paths.py). Invariant: returned paths are absolute.
 */

import * as path from "node:path";

export type Env = Readonly<Record<string, string | undefined>>;

/** Which rule chose the socket path; shown to the user when the daemon cannot be reached. */
export type SocketSource = "setting" | "NBD_SOCKET" | "XDG_RUNTIME_DIR" | "state dir";

export interface SocketLocation {
  path: string;
  source: SocketSource;
}

/** sockaddr_un.sun_path holds 108 bytes including the terminating NUL. */
export const MAX_SOCKET_PATH = 107;

function nonEmpty(value: string | undefined): string | undefined {
  return value !== undefined && value !== "" ? value : undefined;
}

/** The home directory as paths.py sees it: `$HOME` when set, else the account's. */
function homeOf(env: Env, home: string): string {
  return nonEmpty(env.HOME) ?? home;
}

/** `~` and `~/...` expanded (Python's Path.expanduser, without the `~user` form). */
function expandUser(value: string, env: Env, home: string): string {
  if (value === "~") {
    return homeOf(env, home);
  }
  if (value.startsWith("~/")) {
    return path.join(homeOf(env, home), value.slice(2));
  }
  return value;
}

/**
 * The daemon's state directory (sessions, log, and the socket when there is no runtime dir).
 *
 * @param env the environment the client runs in.
 * @param home the account's home directory, used when `$HOME` is unset.
 * @param cwd the directory relative paths are resolved against.
 */
export function stateDir(env: Env, home: string, cwd: string = process.cwd()): string {
  const explicit = nonEmpty(env.NBD_STATE_DIR);
  let dir: string;
  if (explicit !== undefined) {
    dir = expandUser(explicit, env, home);
  } else {
    const xdgState = nonEmpty(env.XDG_STATE_HOME);
    dir = xdgState !== undefined ? path.join(expandUser(xdgState, env, home), "nbd") : path.join(homeOf(env, home), ".local", "state", "nbd");
  }
  return path.resolve(cwd, dir);
}

/**
 * The daemon's socket path.
 *
 * @param env the environment the client runs in.
 * @param home the account's home directory, used when `$HOME` is unset.
 * @param setting an explicit path from the editor's settings; wins over every rule when non-empty.
 * @param cwd the directory relative paths are resolved against.
 */
export function socketLocation(env: Env, home: string, setting?: string, cwd: string = process.cwd()): SocketLocation {
  const fromSetting = nonEmpty(setting);
  if (fromSetting !== undefined) {
    return { path: path.resolve(cwd, expandUser(fromSetting, env, home)), source: "setting" };
  }
  const explicit = nonEmpty(env.NBD_SOCKET);
  if (explicit !== undefined) {
    return { path: path.resolve(cwd, expandUser(explicit, env, home)), source: "NBD_SOCKET" };
  }
  const runtime = nonEmpty(env.XDG_RUNTIME_DIR);
  if (runtime !== undefined) {
    return { path: path.resolve(cwd, runtime, "nbd", "nbd.sock"), source: "XDG_RUNTIME_DIR" };
  }
  return { path: path.join(stateDir(env, home, cwd), "nbd.sock"), source: "state dir" };
}

/** A one-line reason the socket path cannot be used (too long for a Unix socket), or undefined. */
export function socketProblem(socketPath: string): string | undefined {
  const size = Buffer.byteLength(socketPath, "utf8");
  if (size > MAX_SOCKET_PATH) {
    return (
      `the socket path ${socketPath} is too long for a Unix socket (${size} bytes, at most ` +
      `${MAX_SOCKET_PATH}); set NBD_SOCKET to a shorter path`
    );
  }
  return undefined;
}

/** The gRPC target for an absolute Unix socket path (`unix:///abs/path`). */
export function grpcTarget(socketPath: string): string {
  return path.isAbsolute(socketPath) ? `unix://${socketPath}` : `unix:${socketPath}`;
}
