/**
 * The LaunchRequest an editor sends for a workspace folder and the user's settings.
 *
 * Why this module exists: the daemon runs elsewhere (its working directory is `/`), so every path
 * in the request must be absolute where the user is, exactly as nbctl makes them: the directory,
 * and each file of a `KUBECONFIG` list. Pure, so the rules are tested as a table.
 */

import * as path from "node:path";
import type { Env } from "./discovery";
import type { LaunchRequest } from "./types";

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
