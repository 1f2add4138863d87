/**
 * Small formatters shared by the status bar and the output channel: enum names, sizes, durations,
 * and URLs with their secrets removed.
 *
 * Why this module exists: the words a user reads for a phase or a sync state are chosen once, here,
 * and are pure functions tested as tables.
 */

import type { ForwardState, NotebookState, Phase, SyncState } from "../client/types";

export const PHASE_WORDS: Record<Phase, string> = {
  PHASE_UNSPECIFIED: "Unknown",
  PHASE_PACKAGING: "Packaging",
  PHASE_UPLOADING: "Uploading",
  PHASE_BUILDING: "Building",
  PHASE_STARTING: "Starting",
  PHASE_READY: "Ready",
  PHASE_FAILED: "Failed",
  PHASE_STOPPED: "Stopped",
  PHASE_STOPPING: "Stopping",
  PHASE_GONE: "Gone",
  PHASE_SUSPENDED: "Suspended",
};

/** How the Notebook in the cluster compares with what this daemon wrote, in a few words. */
export const NOTEBOOK_WORDS: Record<NotebookState, string> = {
  NOTEBOOK_STATE_UNSPECIFIED: "unknown",
  NOTEBOOK_STATE_FOLLOWING: "as launched",
  NOTEBOOK_STATE_CHANGED: "changed elsewhere",
  NOTEBOOK_STATE_SUSPENDED: "suspended elsewhere",
  NOTEBOOK_STATE_DELETED: "deleted in the cluster",
  NOTEBOOK_STATE_ERROR: "cannot be read",
};

export const SYNC_WORDS: Record<SyncState, string> = {
  SYNC_STATE_UNSPECIFIED: "unknown",
  SYNC_STATE_DISABLED: "off",
  SYNC_STATE_CONNECTING: "connecting",
  SYNC_STATE_SCANNING: "scanning",
  SYNC_STATE_SYNCING: "syncing",
  SYNC_STATE_WATCHING: "watching",
  SYNC_STATE_PAUSED: "paused",
  SYNC_STATE_HALTED: "halted",
  SYNC_STATE_ERROR: "error",
};

export const FORWARD_WORDS: Record<ForwardState, string> = {
  FORWARD_STATE_UNSPECIFIED: "unknown",
  FORWARD_STATE_ACTIVE: "active",
  FORWARD_STATE_WAITING_FOR_POD: "waiting for the pod",
  FORWARD_STATE_ERROR: "error",
  FORWARD_STATE_STOPPED: "stopped",
};

/** "Ready" for PHASE_READY; an unknown name (a newer daemon) is shown without its prefix. */
export function phaseWord(phase: string): string {
  return (PHASE_WORDS as Record<string, string>)[phase] ?? titleCase(phase.replace(/^PHASE_/, ""));
}

export function syncWord(state: string): string {
  return (SYNC_WORDS as Record<string, string>)[state] ?? state.replace(/^SYNC_STATE_/, "").toLowerCase();
}

export function notebookWord(state: string): string {
  return (NOTEBOOK_WORDS as Record<string, string>)[state] ?? state.replace(/^NOTEBOOK_STATE_/, "").toLowerCase();
}

export function forwardWord(state: string): string {
  return (FORWARD_WORDS as Record<string, string>)[state] ?? state.replace(/^FORWARD_STATE_/, "").toLowerCase();
}

function titleCase(word: string): string {
  return word.charAt(0).toUpperCase() + word.slice(1).toLowerCase();
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** 1536 -> "1.5 KiB"; bytes below 1 KiB are exact. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) {
    return "?";
  }
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

/** 75 -> "1 min 15 s"; negative (unknown) -> "?". */
export function formatSeconds(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) {
    return "?";
  }
  const whole = Math.round(seconds);
  if (whole < 60) {
    return `${whole} s`;
  }
  const minutes = Math.floor(whole / 60);
  const rest = whole % 60;
  if (minutes < 60) {
    return rest === 0 ? `${minutes} min` : `${minutes} min ${rest} s`;
  }
  const hours = Math.floor(minutes / 60);
  return `${hours} h ${minutes % 60} min`;
}

/**
 * The URL without its secrets: the `token` query parameter (Jupyter's) is replaced by "…".
 * Secrets never reach the output channel or a tooltip; the browser command opens the real URL.
 */
export function redactUrl(url: string): string {
  return url.replace(/([?&]token=)[^&#]*/gi, "$1…");
}

/** Counts as words: 1 -> "1 conflict", 2 -> "2 conflicts". */
export function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}
