import { strict as assert } from "node:assert";
import { test } from "node:test";
import { disconnectedStatus, idleStatus, sessionStatus, type Severity } from "../src/view/status";
import { session, syncStatus } from "./fixtures";

const conflict = { path: "a.py", copyPath: "a.conflict-remote-1.py", message: "", time: null };
const problem = { path: "big.bin", message: "permission denied", time: null };

function notebook(state: string, message = "") {
  return { state: state as never, message, changedBy: "", generation: 2, observed: null };
}

const CASES: Array<{ name: string; s: ReturnType<typeof session>; text: string; severity: Severity }> = [
  { name: "ready, no sync", s: session(), text: "$(notebook) hello: Ready", severity: "normal" },
  {
    name: "ready, watching",
    s: session({ sync: syncStatus() }),
    text: "$(notebook) hello: Ready  $(sync) watching",
    severity: "normal",
  },
  {
    name: "sync disabled is not shown",
    s: session({ sync: syncStatus({ state: "SYNC_STATE_DISABLED" }) }),
    text: "$(notebook) hello: Ready",
    severity: "normal",
  },
  { name: "building", s: session({ phase: "PHASE_BUILDING" }), text: "$(tools) hello: Building", severity: "normal" },
  { name: "failed", s: session({ phase: "PHASE_FAILED" }), text: "$(error) hello: Failed", severity: "error" },
  {
    name: "one conflict is highlighted",
    s: session({ sync: syncStatus({ conflicts: [conflict] }) }),
    text: "$(notebook) hello: Ready  $(sync) watching  $(warning) 1 conflict",
    severity: "warning",
  },
  {
    name: "two conflicts and a problem",
    s: session({ sync: syncStatus({ conflicts: [conflict, conflict], problems: [problem] }) }),
    text: "$(notebook) hello: Ready  $(sync) watching  $(warning) 2 conflicts  $(info) 1 problem",
    severity: "warning",
  },
  {
    name: "paused sync warns",
    s: session({ sync: syncStatus({ state: "SYNC_STATE_PAUSED" }) }),
    text: "$(notebook) hello: Ready  $(sync) paused",
    severity: "warning",
  },
  {
    name: "halted sync is an error, even with conflicts",
    s: session({ sync: syncStatus({ state: "SYNC_STATE_HALTED", conflicts: [conflict] }) }),
    text: "$(notebook) hello: Ready  $(sync) halted  $(warning) 1 conflict",
    severity: "error",
  },
  {
    name: "gone: deleted in the cluster",
    s: session({ phase: "PHASE_GONE", sync: syncStatus({ state: "SYNC_STATE_DISABLED" }), notebook: notebook("NOTEBOOK_STATE_DELETED") }),
    text: "$(trash) hello: Gone",
    severity: "warning",
  },
  {
    name: "suspended elsewhere",
    s: session({ phase: "PHASE_SUSPENDED", notebook: notebook("NOTEBOOK_STATE_SUSPENDED") }),
    text: "$(debug-pause) hello: Suspended",
    severity: "warning",
  },
  {
    name: "ready, its spec changed elsewhere",
    s: session({ sync: syncStatus(), notebook: notebook("NOTEBOOK_STATE_CHANGED", "the Notebook's spec was changed") }),
    text: "$(notebook) hello: Ready  $(sync) watching  $(edit) changed elsewhere",
    severity: "warning",
  },
  {
    name: "ready, its Notebook cannot be read",
    s: session({ notebook: notebook("NOTEBOOK_STATE_ERROR") }),
    text: "$(notebook) hello: Ready  $(cloud) cannot be read",
    severity: "warning",
  },
  {
    name: "ready, as launched: nothing more shown",
    s: session({ notebook: notebook("NOTEBOOK_STATE_FOLLOWING") }),
    text: "$(notebook) hello: Ready",
    severity: "normal",
  },
  {
    name: "an unknown phase from a newer daemon",
    s: session({ phase: "PHASE_HIBERNATING" as never }),
    text: "$(notebook) hello: Hibernating",
    severity: "normal",
  },
];

for (const row of CASES) {
  test(`sessionStatus: ${row.name}`, () => {
    const view = sessionStatus(row.s);
    assert.equal(view.text, row.text);
    assert.equal(view.severity, row.severity);
  });
}

test("sessionStatus tooltip lists the files left unsynced for their size, without a warning", () => {
  const view = sessionStatus(
    session({
      sync: syncStatus({
        notSynced: [
          { path: "ckpt/model.pt", size: 1288490189, reason: "too large (1.2 GiB > 100 MiB)", side: "remote" },
          { path: "data.bin", size: 209715200, reason: "too large (200 MiB > 100 MiB)", side: "local" },
        ],
      }),
    }),
  );
  assert.equal(view.severity, "normal");
  assert.deepEqual(view.tooltip.split("\n").slice(-2), [
    "Not synced (in the pod): ckpt/model.pt: too large (1.2 GiB > 100 MiB)",
    "Not synced (local): data.bin: too large (200 MiB > 100 MiB)",
  ]);
});

test("sessionStatus tooltip says when the notebook stops for idleness, and nothing when it never does", () => {
  const idle = sessionStatus(
    session({ idleStopAfter: "2h", idleMessage: "Idle since 13:02 UTC; stops at 15:02 UTC unless it is used." }),
  );
  assert.ok(
    idle.tooltip.split("\n").includes("Auto-stop after 2h idle (Idle since 13:02 UTC; stops at 15:02 UTC unless it is used.)"),
    idle.tooltip,
  );
  assert.equal(idle.severity, "normal");
  for (const off of ["", "0"]) {
    assert.ok(!sessionStatus(session({ idleStopAfter: off })).tooltip.includes("Auto-stop"));
  }
});

test("sessionStatus tooltip: message, redacted URL, forward, sync, conflicts and problems", () => {
  const view = sessionStatus(
    session({
      message: "Notebook is ready.",
      url: "http://127.0.0.1:8890/?token=s3cret",
      forward: {
        state: "FORWARD_STATE_WAITING_FOR_POD",
        localPort: 8890,
        remotePort: 8888,
        pod: "",
        message: "pod restarting",
        openConnections: 0,
        lastProbe: null,
      },
      sync: syncStatus({ message: "3 files", conflicts: [conflict], problems: [problem] }),
    }),
  );
  assert.equal(
    view.tooltip,
    [
      "nbd: hello — Ready",
      "Notebook is ready.",
      "URL: http://127.0.0.1:8890/?token=…",
      "Forward 127.0.0.1:8890 → 8888: waiting for the pod (pod restarting)",
      "Sync: watching (3 files)",
      "Conflict: a.py; other version kept as a.conflict-remote-1.py",
      "Problem: big.bin: permission denied",
    ].join("\n"),
  );
  assert.ok(!view.tooltip.includes("s3cret"));
});

test("sessionStatus tooltip: what happened to the Notebook in the cluster", () => {
  const changed = sessionStatus(
    session({ notebook: notebook("NOTEBOOK_STATE_CHANGED", "the Notebook's spec was changed in the cluster by kubectl-edit") }),
  );
  assert.equal(
    changed.tooltip,
    ["nbd: hello — Ready", "Notebook: changed elsewhere (the Notebook's spec was changed in the cluster by kubectl-edit)"].join("\n"),
  );
  const message = "the Notebook was deleted in the cluster; the local files are kept";
  const gone = sessionStatus(session({ phase: "PHASE_GONE", message, notebook: notebook("NOTEBOOK_STATE_DELETED", message) }));
  // The reason is said once.
  assert.equal(gone.tooltip, ["nbd: hello — Gone", message, "Notebook: deleted in the cluster"].join("\n"));
});

test("disconnected and idle views", () => {
  const down = disconnectedStatus("The nbd daemon does not answer on /x.sock.");
  assert.equal(down.severity, "warning");
  assert.equal(down.tooltip, "nbd: The nbd daemon does not answer on /x.sock.");
  assert.equal(idleStatus().severity, "normal");
  assert.match(idleStatus().tooltip, /click to launch/);
  assert.equal(idleStatus().command, "nbd.launch");
  assert.equal(down.command, undefined);
});

test("a click opens a ready notebook, follows a build, and does nothing otherwise", () => {
  assert.equal(sessionStatus(session({ url: "http://127.0.0.1:1/?token=x" })).command, "nbd.openInBrowser");
  assert.equal(sessionStatus(session({ url: "" })).command, undefined);
  assert.equal(sessionStatus(session({ phase: "PHASE_BUILDING" })).command, "nbd.showBuildLog");
  assert.equal(sessionStatus(session({ phase: "PHASE_FAILED", url: "http://x/" })).command, undefined);
  // A gone or suspended notebook: a click launches it again.
  assert.equal(sessionStatus(session({ phase: "PHASE_GONE" })).command, "nbd.launch");
  assert.equal(sessionStatus(session({ phase: "PHASE_SUSPENDED" })).command, "nbd.launch");
});
