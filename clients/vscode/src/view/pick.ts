/**
 * Which session a command acts on.
 *
 * Why this module exists: "Stop notebook" and the other commands act on the workspace's session
 * when there is one, on the only session when there is exactly one, and otherwise ask. The rule is
 * pure and tested; the editor layer only shows the question.
 */

import type { Session } from "../client/types";
import { isLive, normalizeDirectory, sessionKey } from "./sessions";

export type Choice = { kind: "one"; session: Session } | { kind: "ask"; sessions: Session[] } | { kind: "none" };

/**
 * @param sessions every session the daemon knows.
 * @param folders the workspace folders, the active editor's folder first.
 */
export function chooseSession(sessions: readonly Session[], folders: readonly string[]): Choice {
  for (const folder of folders) {
    const wanted = normalizeDirectory(folder);
    const matches = sessions.filter((s) => s.directory !== "" && normalizeDirectory(s.directory) === wanted);
    const match = matches.find(isLive) ?? matches[0];
    if (match !== undefined) {
      return { kind: "one", session: match };
    }
  }
  if (sessions.length === 1 && sessions[0] !== undefined) {
    return { kind: "one", session: sessions[0] };
  }
  if (sessions.length === 0) {
    return { kind: "none" };
  }
  return { kind: "ask", sessions: [...sessions].sort((a, b) => sessionKey(a).localeCompare(sessionKey(b))) };
}

/** The reference to send in Stop/Get/Logs/Sync. */
export function sessionRef(session: Session): string {
  if (session.ref !== "") {
    return session.ref;
  }
  return session.namespace !== "" ? `${session.namespace}/${session.name}` : session.name;
}
