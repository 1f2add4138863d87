/**
 * The LaunchRequest an editor sends for a workspace folder and the user's settings.
 *
 * Why this module exists: the daemon runs elsewhere (its working directory is `/`), so every path
 * in the request must be absolute where the user is, exactly as nbctl makes them: the directory,
 * and each file of a `KUBECONFIG` list. Pure, so the rules are tested as a table.
 */

import * as path from "node:path";
import type { Env } from "./discovery";
import type { LaunchRequest, RunRequest } from "./types";

export interface LaunchSettings {
  context?: string;
  namespace?: string;
  /** A kubeconfig path or a `KUBECONFIG`-style list; empty uses the environment's KUBECONFIG. */
  kubeconfig?: string;
  noSync?: boolean;
}

function expandUser(value: string, home: string): string {
  if (value === "~") return home;
  if (value.startsWith("~/")) return path.join(home, value.slice(2));
  return value;
}

/** Each file of a KUBECONFIG list made absolute; empty entries dropped (as kubectl does). */
export function absoluteKubeconfig(list: string, cwd: string, home: string): string {
  return list
    .split(path.delimiter)
    .filter((entry) => entry !== "")
    .map((entry) => path.resolve(cwd, expandUser(entry, home)))
    .join(path.delimiter);
}

/**
 * @param directory the workspace folder to launch.
 * @param settings the user's nbd.launch.* settings.
 * @param env the editor's environment (for KUBECONFIG).
 * @param cwd the directory relative paths are resolved against.
 * @param home the user's home directory (for `~`).
 */
export function launchRequest(directory: string, settings: LaunchSettings, env: Env, cwd: string, home: string): LaunchRequest {
  const kubeconfig = settings.kubeconfig !== undefined && settings.kubeconfig !== "" ? settings.kubeconfig : (env.KUBECONFIG ?? "");
  return {
    directory: path.resolve(cwd, directory),
    context: settings.context ?? "",
    namespace: settings.namespace ?? "",
    kubeconfig: absoluteKubeconfig(kubeconfig, cwd, home),
    noSync: settings.noSync ?? false,
  };
}

/**
 * How a file of the workspace is run as a job: a Python script with `python`, a shell script with
 * `bash`, a notebook executed by `jupyter nbconvert` (its executed copy lands in outputs/).
 * Undefined for a file nbd cannot tell how to run.
 */
export function commandForFile(relative: string): string[] | undefined {
  const extension = path.posix.extname(relative).toLowerCase();
  switch (extension) {
    case ".py":
      return ["python", relative];
    case ".sh":
      return ["bash", relative];
    case ".ipynb":
      return ["jupyter", "nbconvert", "--to", "notebook", "--execute", relative, "--output-dir", "outputs"];
    default:
      return undefined;
  }
}

/**
 * The RunRequest that runs `file` (an absolute path inside `directory`) as a job, in /content,
 * with the same cluster settings as a launch.
 */
export function runFileRequest(directory: string, file: string, settings: LaunchSettings, env: Env, cwd: string, home: string): RunRequest {
  const launch = launchRequest(directory, settings, env, cwd, home);
  const relative = path.relative(launch.directory, path.resolve(cwd, file));
  if (relative === "" || relative.startsWith("..") || path.isAbsolute(relative)) {
    throw new Error(`nbd: ${file} is not inside ${launch.directory}; a run runs the folder's content.`);
  }
  const posix = relative.split(path.sep).join("/");
  const command = commandForFile(posix);
  if (command === undefined) {
    throw new Error(`nbd: cannot tell how to run ${posix}; run a .py, .sh or .ipynb file, or use \`nbctl run -- COMMAND\`.`);
  }
  return {
    directory: launch.directory,
    target: { context: launch.context ?? "", namespace: launch.namespace ?? "", kubeconfig: launch.kubeconfig ?? "" },
    command,
  };
}
