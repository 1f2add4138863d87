/**
 * The status bar's text, tooltip and severity for the workspace's notebook session.
 *
 * Why this module exists: the editor layer only copies these strings into its status bar item, so
 * what a user sees for every phase, sync state and conflict count is decided and tested here.
 * Text may hold VS Code codicons (`$(name)`); the severity picks the item's background.
 */

import type { Session } from "../client/types";
import { forwardWord, notebookWord, phaseWord, plural, redactUrl, syncWord } from "./format";

export type Severity = "normal" | "warning" | "error";

export interface StatusView {
  text: string;
  tooltip: string;
  severity: Severity;
  /** The command a click runs: open a ready notebook, follow a build, launch when idle. */
  command?: string;
}

const PHASE_ICONS: Record<string, string> = {
  PHASE_PACKAGING: "$(package)",
  PHASE_UPLOADING: "$(cloud-upload)",
  PHASE_BUILDING: "$(tools)",
  PHASE_STARTING: "$(loading~spin)",
  PHASE_READY: "$(notebook)",
  PHASE_FAILED: "$(error)",
  PHASE_STOPPED: "$(debug-stop)",
  PHASE_STOPPING: "$(loading~spin)",
  PHASE_GONE: "$(trash)",
  PHASE_SUSPENDED: "$(debug-pause)",
};

/** The view when the daemon cannot be reached. */
export function disconnectedStatus(message: string): StatusView {
  return { text: "$(debug-disconnect) nbd", tooltip: `nbd: ${message}`, severity: "warning" };
}

/** The view when the daemon answers but no session belongs to the workspace. */
export function idleStatus(): StatusView {
  return {
    text: "$(notebook) nbd",
    tooltip: "nbd: no notebook for this workspace; click to launch it.",
    severity: "normal",
    command: "nbd.launch",
  };
}

/** The view of one session: phase, then sync state, conflicts highlighted. */
export function sessionStatus(session: Session): StatusView {
  const phase = phaseWord(session.phase);
  const icon = PHASE_ICONS[session.phase] ?? "$(notebook)";
  const parts = [`${icon} ${session.name}: ${phase}`];
  const sync = session.sync;
  const conflicts = sync?.conflicts.length ?? 0;
  const problems = sync?.problems.length ?? 0;
  const syncState = sync?.state ?? "SYNC_STATE_UNSPECIFIED";
  const syncShown = sync !== null && syncState !== "SYNC_STATE_UNSPECIFIED" && syncState !== "SYNC_STATE_DISABLED";
  if (syncShown) {
    parts.push(`$(sync) ${syncWord(syncState)}`);
  }
  if (conflicts > 0) {
    parts.push(`$(warning) ${plural(conflicts, "conflict")}`);
  }
  if (problems > 0) {
    parts.push(`$(info) ${plural(problems, "problem")}`);
  }
  // A change made elsewhere that the phase does not say already (gone and suspended say it).
  const notebook = session.notebook;
  const notebookState = notebook?.state ?? "NOTEBOOK_STATE_UNSPECIFIED";
  const notebookShown = notebookState === "NOTEBOOK_STATE_CHANGED" || notebookState === "NOTEBOOK_STATE_ERROR";
  if (notebookShown) {
    parts.push(`$(${notebookState === "NOTEBOOK_STATE_CHANGED" ? "edit" : "cloud"}) ${notebookWord(notebookState)}`);
  }

  let severity: Severity = "normal";
  if (
    conflicts > 0 ||
    problems > 0 ||
    notebookShown ||
    session.phase === "PHASE_GONE" ||
    session.phase === "PHASE_SUSPENDED" ||
    syncState === "SYNC_STATE_PAUSED" ||
    session.forward?.state === "FORWARD_STATE_ERROR"
  ) {
    severity = "warning";
  }
  if (session.phase === "PHASE_FAILED" || syncState === "SYNC_STATE_ERROR" || syncState === "SYNC_STATE_HALTED") {
    severity = "error";
  }

  const lines = [`nbd: ${session.ref !== "" ? session.ref : session.name} — ${phase}`];
  if (session.message !== "") {
    lines.push(session.message);
  }
  if (session.url !== "") {
    lines.push(`URL: ${redactUrl(session.url)}`);
  }
  if (session.forward !== null && session.forward.state !== "FORWARD_STATE_UNSPECIFIED") {
    const forward = session.forward;
    const detail = forward.message !== "" ? ` (${forward.message})` : "";
    lines.push(`Forward 127.0.0.1:${forward.localPort} → ${forward.remotePort}: ${forwardWord(forward.state)}${detail}`);
  }
  if (sync !== null && syncState !== "SYNC_STATE_UNSPECIFIED") {
    const detail = sync.message !== "" ? ` (${sync.message})` : "";
    lines.push(`Sync: ${syncWord(syncState)}${detail}`);
  }
  if (notebook !== null && notebookState !== "NOTEBOOK_STATE_UNSPECIFIED") {
    const detail = notebook.message !== "" && notebook.message !== session.message ? ` (${notebook.message})` : "";
    lines.push(`Notebook: ${notebookWord(notebookState)}${detail}`);
  }
  if (session.idleStopAfter !== "" && session.idleStopAfter !== "0") {
    const detail = session.idleMessage !== "" ? ` (${session.idleMessage})` : "";
    lines.push(`Auto-stop after ${session.idleStopAfter} idle${detail}`);
  }
  for (const conflict of sync?.conflicts ?? []) {
    const kept = conflict.copyPath !== "" ? `; other version kept as ${conflict.copyPath}` : "";
    lines.push(`Conflict: ${conflict.path}${kept}`);
  }
  for (const problem of sync?.problems ?? []) {
    lines.push(`Problem: ${problem.path}: ${problem.message}`);
  }
  for (const file of sync?.notSynced ?? []) {
    const where = file.side === "remote" ? "in the pod" : "local";
    lines.push(`Not synced (${where}): ${file.path}: ${file.reason}`);
  }
  let command: string | undefined;
  if (session.url !== "" && session.phase === "PHASE_READY") {
    command = "nbd.openInBrowser";
  } else if (session.phase === "PHASE_BUILDING") {
    command = "nbd.showBuildLog";
  } else if (session.phase === "PHASE_GONE" || session.phase === "PHASE_SUSPENDED") {
    command = "nbd.launch";
  }
  return { text: parts.join("  "), tooltip: lines.join("\n"), severity, command };
}
