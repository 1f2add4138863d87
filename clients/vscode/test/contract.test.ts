/**
 * The hand-written message types (src/client/types.ts) and the words for enums (src/view/format.ts)
 * against the contract as loaded from proto/: a field or enum value added to the .proto files
 * fails here until the extension knows it.
 */

import { strict as assert } from "node:assert";
import { test } from "node:test";
import * as protoLoader from "@grpc/proto-loader";
import { LOADER_OPTIONS, protoPaths } from "../src/client/proto";
import { FORWARD_WORDS, NOTEBOOK_WORDS, PHASE_WORDS, SYNC_WORDS } from "../src/view/format";
import { RUN_PHASE_WORDS } from "../src/view/runLog";
import { session, syncStatus } from "./fixtures";

const definition = protoLoader.loadSync(["nbdapi/v1/notebooks.proto", "nbdapi/v1/daemon.proto", "nbdapi/v1/runs.proto"], {
  ...LOADER_OPTIONS,
  includeDirs: [protoPaths().apiRoot],
});

interface Descriptor {
  type: { field?: Array<{ name: string; jsonName?: string }>; value?: Array<{ name: string }> };
}

function camel(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

function fields(message: string): string[] {
  const descriptor = definition[`nbdapi.v1.${message}`] as unknown as Descriptor;
  assert.ok(descriptor?.type?.field, `no message nbdapi.v1.${message}`);
  return descriptor.type.field.map((f) => camel(f.name)).sort();
}

function enumValues(name: string): string[] {
  const descriptor = definition[`nbdapi.v1.${name}`] as unknown as Descriptor;
  assert.ok(descriptor?.type?.value, `no enum nbdapi.v1.${name}`);
  return descriptor.type.value.map((v) => v.name);
}

test("Session has exactly the fields types.ts declares", () => {
  assert.deepEqual(Object.keys(session()).sort(), fields("Session"));
});

test("SyncStatus has exactly the fields types.ts declares", () => {
  assert.deepEqual(Object.keys(syncStatus()).sort(), fields("SyncStatus"));
});

test("LaunchEvent's oneof members are the ones the renderer knows", () => {
  const known = ["phase", "progress", "cached", "buildLog", "pod", "ready", "failed", "notice"];
  assert.deepEqual(fields("LaunchEvent"), ["session", "time", ...known].sort());
});

test("request messages have the fields the client sends", () => {
  assert.deepEqual(fields("SyncRequest"), ["action", "force", "session"]);
  assert.deepEqual(fields("StopRequest"), ["delete", "deleteWorkspace", "session"]);
  assert.deepEqual(fields("EventsRequest"), ["initial", "sessions"]);
  assert.deepEqual(fields("LogsRequest"), ["container", "follow", "session", "source", "tailLines"]);
  assert.deepEqual(
    fields("LaunchRequest"),
    ["attach", "context", "directory", "kubeconfig", "localPort", "name", "namespace", "noSync", "notebookFile", "rebuild", "spec", "timeoutSeconds"],
  );
});

test("SessionEvent's fields", () => {
  assert.deepEqual(fields("SessionEvent"), ["conflict", "kind", "problem", "session", "syncChange", "time"]);
});

const ENUM_WORDS: Array<{ name: string; words: Record<string, string> }> = [
  { name: "Phase", words: PHASE_WORDS },
  { name: "SyncState", words: SYNC_WORDS },
  { name: "ForwardState", words: FORWARD_WORDS },
  { name: "NotebookState", words: NOTEBOOK_WORDS },
  { name: "RunPhase", words: RUN_PHASE_WORDS },
];

test("RunEvent's oneof members are the ones the run renderer knows", () => {
  const known = ["phase", "progress", "cached", "buildLog", "notice", "failed", "status", "log", "finished"];
  assert.deepEqual(fields("RunEvent"), ["run", "time", ...known].sort());
});

test("RunInfo, RankStatus and RunLog have exactly the fields types.ts declares", () => {
  const runInfo: Record<keyof import("../src/client/types").RunInfo, true> = {
    name: true, namespace: true, context: true, phase: true, reason: true, message: true, command: true,
    nodes: true, gpusPerNode: true, gpuType: true, image: true, contextMd5: true, created: true, started: true,
    finished: true, exitCode: true, failedRank: true, ranks: true, outputsPath: true, directory: true, job: true,
  };
  assert.deepEqual(Object.keys(runInfo).sort(), fields("RunInfo"));
  const rank: Record<keyof import("../src/client/types").RankStatus, true> = { index: true, pod: true, phase: true, exitCode: true };
  assert.deepEqual(Object.keys(rank).sort(), fields("RankStatus"));
  const log: Record<keyof import("../src/client/types").RunLog, true> = { rank: true, text: true, pod: true, time: true };
  assert.deepEqual(Object.keys(log).sort(), fields("RunLog"));
});

test("RunRequest has the fields the client may send", () => {
  const request: Record<keyof import("../src/client/types").RunRequest, true> = {
    directory: true, name: true, target: true, notebookFile: true, command: true, nodes: true, detach: true, rebuild: true,
  };
  const sent = Object.keys(request).sort();
  for (const name of sent) assert.ok(fields("RunRequest").includes(name), name);
});

for (const row of ENUM_WORDS) {
  test(`every ${row.name} value has a chosen word, and no other value does`, () => {
    assert.deepEqual(Object.keys(row.words).sort(), enumValues(row.name).sort());
  });
}
