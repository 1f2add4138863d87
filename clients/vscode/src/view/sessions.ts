/**
 * The editor's picture of the daemon's sessions, kept current by the Events stream.
 *
 * Why this module exists: the status bar and the commands need "the session of this workspace"
 * at any moment; this store folds SessionEvents into a map by reference and answers that question.
 * Pure: events in, sessions out.
 */

import * as path from "node:path";
import type { Session, SessionEvent } from "../client/types";

/**
 * The identity of a session: CONTEXT/NAMESPACE/NAME. Not its `ref`, which the daemon shortens to
 * the least that is unambiguous and so changes when another session of the same name appears.
 */
export function sessionKey(session: Session): string {
  return `${session.context}/${session.namespace}/${session.name}`;
}

export class SessionStore {
  private readonly sessions = new Map<string, Session>();

  /** Forgets every session (before a new Events stream replays its snapshots). */
  clear(): void {
    this.sessions.clear();
  }

  /** Folds one event in; returns true when the stored sessions changed. */
  apply(event: SessionEvent): boolean {
    const session = event.session;
    if (session === null || session === undefined) {
      return false;
    }
    const key = sessionKey(session);
    if (event.kind === "SESSION_EVENT_KIND_REMOVED") {
      return this.sessions.delete(key);
    }
    // Every other kind carries the session after the change.
    this.sessions.set(key, session);
    return true;
  }

  all(): Session[] {
    return [...this.sessions.values()].sort((a, b) => sessionKey(a).localeCompare(sessionKey(b)));
  }

  /** The session launched from `directory` (the workspace folder), if any; a live one first. */
  forDirectory(directory: string): Session | undefined {
    const wanted = normalizeDirectory(directory);
    const matches = this.all().filter((s) => s.directory !== "" && normalizeDirectory(s.directory) === wanted);
    return matches.find(isLive) ?? matches[0];
  }
}

/** A session whose notebook may run: not stopped here, suspended elsewhere, or gone from the cluster. */
export function isLive(session: Session): boolean {
  return session.phase !== "PHASE_STOPPED" && session.phase !== "PHASE_SUSPENDED" && session.phase !== "PHASE_GONE";
}

/** A directory compared by its resolved absolute path, without a trailing separator. */
export function normalizeDirectory(directory: string): string {
  const resolved = path.resolve(directory);
  return resolved.length > 1 ? resolved.replace(/[\\/]+$/, "") : resolved;
}

/** One line telling of a conflict or problem event, for a notification; undefined for other kinds. */
export function eventNotice(event: SessionEvent): string | undefined {
  const name = event.session?.name ?? "notebook";
  if (event.kind === "SESSION_EVENT_KIND_CONFLICT" && event.conflict) {
    const kept = event.conflict.copyPath !== "" ? `; the other version is kept as ${event.conflict.copyPath}` : "";
    const message = event.conflict.message !== "" ? ` (${event.conflict.message})` : "";
    return `nbd: sync conflict in ${name}: ${event.conflict.path}${kept}${message}.`;
  }
  if (event.kind === "SESSION_EVENT_KIND_PROBLEM" && event.problem) {
    return `nbd: sync problem in ${name}: ${event.problem.path}: ${event.problem.message}`;
  }
  return undefined;
}
