import { strict as assert } from "node:assert";
import { test } from "node:test";
import type { SessionEvent, SessionEventKind } from "../src/client/types";
import { chooseSession, sessionRef } from "../src/view/pick";
import { eventNotice, normalizeDirectory, SessionStore } from "../src/view/sessions";
import { session } from "./fixtures";

function ev(kind: SessionEventKind, s = session(), extra: Partial<SessionEvent> = {}): SessionEvent {
  return { time: null, kind, session: s, ...extra };
}

test("SessionStore folds snapshots, updates and removals", () => {
  const store = new SessionStore();
  assert.ok(store.apply(ev("SESSION_EVENT_KIND_SNAPSHOT", session({ ref: "a", name: "a", directory: "/p/a" }))));
  assert.ok(store.apply(ev("SESSION_EVENT_KIND_ADDED", session({ ref: "b", name: "b", directory: "/p/b" }))));
  // The ref changed (another "a" appeared elsewhere): still the same session.
  assert.ok(store.apply(ev("SESSION_EVENT_KIND_UPDATED", session({ ref: "default/a", name: "a", directory: "/p/a", phase: "PHASE_FAILED" }))));
  assert.deepEqual(store.all().map((s) => [s.ref, s.phase]), [["default/a", "PHASE_FAILED"], ["b", "PHASE_READY"]]);
  assert.equal(store.forDirectory("/p/a/")?.ref, "default/a");
  assert.equal(store.forDirectory("/p/c"), undefined);
  assert.ok(store.apply(ev("SESSION_EVENT_KIND_REMOVED", session({ ref: "a", name: "a" }))));
  assert.ok(!store.apply(ev("SESSION_EVENT_KIND_REMOVED", session({ ref: "a", name: "a" }))));
  assert.ok(!store.apply({ time: null, kind: "SESSION_EVENT_KIND_UPDATED", session: null }));
  assert.deepEqual(store.all().map((s) => s.ref), ["b"]);
  store.clear();
  assert.deepEqual(store.all(), []);
});

test("SessionStore prefers a live session of the directory over a stopped one", () => {
  const store = new SessionStore();
  store.apply(ev("SESSION_EVENT_KIND_SNAPSHOT", session({ ref: "ctx1/ns/a", context: "ctx1", directory: "/p/a", phase: "PHASE_STOPPED" })));
  store.apply(ev("SESSION_EVENT_KIND_SNAPSHOT", session({ ref: "ctx2/ns/a", context: "ctx2", directory: "/p/a", phase: "PHASE_READY" })));
  assert.equal(store.forDirectory("/p/a")?.ref, "ctx2/ns/a");
});

test("normalizeDirectory", () => {
  assert.equal(normalizeDirectory("/p/a/"), "/p/a");
  assert.equal(normalizeDirectory("/p/a/../b"), "/p/b");
  assert.equal(normalizeDirectory("/"), "/");
});

test("eventNotice: conflicts and problems only", () => {
  const conflict = { path: "a.py", copyPath: "a.conflict-remote-1.py", message: "", time: null };
  assert.equal(
    eventNotice(ev("SESSION_EVENT_KIND_CONFLICT", session(), { detail: "conflict", conflict })),
    "nbd: sync conflict in hello: a.py; the other version is kept as a.conflict-remote-1.py.",
  );
  assert.equal(
    eventNotice(ev("SESSION_EVENT_KIND_PROBLEM", session(), { detail: "problem", problem: { path: "x", message: "too big", time: null } })),
    "nbd: sync problem in hello: x: too big",
  );
  assert.equal(eventNotice(ev("SESSION_EVENT_KIND_UPDATED")), undefined);
});

const a = session({ ref: "a", name: "a", directory: "/p/a" });
const b = session({ ref: "b", name: "b", directory: "/p/b" });
const aStopped = session({ ref: "old/a", name: "a", directory: "/p/a", phase: "PHASE_STOPPED" });

const CHOICES: Array<{ name: string; sessions: ReturnType<typeof session>[]; folders: string[]; want: string }> = [
  { name: "none", sessions: [], folders: ["/p/a"], want: "none" },
  { name: "the workspace's session", sessions: [a, b], folders: ["/p/b"], want: "one:b" },
  { name: "the active folder first", sessions: [a, b], folders: ["/p/a", "/p/b"], want: "one:a" },
  { name: "a live one over a stopped one", sessions: [aStopped, a], folders: ["/p/a"], want: "one:a" },
  { name: "the only session, elsewhere", sessions: [b], folders: ["/p/a"], want: "one:b" },
  { name: "several elsewhere: ask", sessions: [b, a], folders: ["/p/c"], want: "ask:a,b" },
  { name: "no folder: ask", sessions: [a, b], folders: [], want: "ask:a,b" },
];

for (const row of CHOICES) {
  test(`chooseSession: ${row.name}`, () => {
    const choice = chooseSession(row.sessions, row.folders);
    const got =
      choice.kind === "one" ? `one:${choice.session.ref}` : choice.kind === "ask" ? `ask:${choice.sessions.map((s) => s.ref).join(",")}` : "none";
    assert.equal(got, row.want);
  });
}

test("sessionRef falls back to namespace/name", () => {
  assert.equal(sessionRef(session({ ref: "x" })), "x");
  assert.equal(sessionRef(session({ ref: "", namespace: "ns", name: "n" })), "ns/n");
  assert.equal(sessionRef(session({ ref: "", namespace: "", name: "n" })), "n");
});
