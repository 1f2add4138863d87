/**
 * Builders of contract messages for the pure tests: a Session with every field at its default, as
 * the loader delivers it, with the given fields replaced.
 */

import type { Session, SyncStatus } from "../src/client/types";

export function syncStatus(fields: Partial<SyncStatus> = {}): SyncStatus {
  return {
    state: "SYNC_STATE_WATCHING",
    message: "",
    files: 0,
    cycles: 0,
    bytesToRemote: 0,
    bytesToLocal: 0,
    filesToRemote: 0,
    filesToLocal: 0,
    lastCycle: null,
    conflicts: [],
    resolvedConflicts: [],
    problems: [],
    notSynced: [],
    localRoot: "",
    remoteRoot: "",
    ...fields,
  };
}

export function session(fields: Partial<Session> = {}): Session {
  return {
    name: "hello",
    namespace: "default",
    context: "kubesim",
    kubeconfig: "",
    directory: "/home/u/hello",
    phase: "PHASE_READY",
    message: "",
    url: "",
    spec: null,
    contextMd5: "",
    image: "",
    pod: "",
    forward: null,
    sync: null,
    created: null,
    updated: null,
    ref: "hello",
    notebook: null,
    idleStopAt: null,
    idleStopAfter: "",
    idleMessage: "",
    ...fields,
  };
}
