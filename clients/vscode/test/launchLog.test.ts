import { strict as assert } from "node:assert";
import { test } from "node:test";
import type { LaunchEvent, Progress } from "../src/client/types";
import { LaunchRenderer, renderLogLine } from "../src/view/launchLog";

function ev(fields: Partial<LaunchEvent>): LaunchEvent {
  return { time: null, session: "hello", ...fields };
}

function progress(fields: Partial<Progress>): LaunchEvent {
  return ev({
    event: "progress",
    progress: {
      phase: "PHASE_UPLOADING",
      doneBytes: 0,
      totalBytes: 0,
      doneFiles: 0,
      totalFiles: 0,
      bytesPerSecond: 0,
      etaSeconds: -1,
      ...fields,
    },
  });
}

const CASES: Array<{ name: string; event: LaunchEvent; lines: string[] }> = [
  { name: "phase with message", event: ev({ event: "phase", phase: { phase: "PHASE_PACKAGING", message: "12 files" } }), lines: ["Packaging: 12 files"] },
  { name: "phase alone", event: ev({ event: "phase", phase: { phase: "PHASE_BUILDING", message: "" } }), lines: ["Building"] },
  {
    name: "cached upload",
    event: ev({ event: "cached", cached: { step: "STEP_UPLOAD", reason: "already stored", md5: "abc" } }),
    lines: ["Skipped upload: already stored (md5 abc)"],
  },
  { name: "cached build, no detail", event: ev({ event: "cached", cached: { step: "STEP_BUILD", reason: "", md5: "" } }), lines: ["Skipped build"] },
  {
    name: "build log with container",
    event: ev({ event: "buildLog", buildLog: { container: "fetch", text: "md5 ok", time: null } }),
    lines: ["  | [fetch] md5 ok"],
  },
  {
    name: "pod pending, unschedulable",
    event: ev({ event: "pod", pod: { pod: "hello-0", phase: "Pending", reason: "Unschedulable", message: "0/1 nodes have a GPU", ready: false } }),
    lines: ["Pod hello-0: Pending (Unschedulable): 0/1 nodes have a GPU"],
  },
  {
    name: "pod running and ready",
    event: ev({ event: "pod", pod: { pod: "hello-0", phase: "Running", reason: "", message: "", ready: true } }),
    lines: ["Pod hello-0: Running, ready"],
  },
  {
    name: "ready: the token is not printed",
    event: ev({ event: "ready", ready: { url: "http://127.0.0.1:8890/?token=s3cret", localPort: 8890, session: null } }),
    lines: ["Ready: http://127.0.0.1:8890/?token=… (local port 8890); open it with “nbd: Open notebook in browser”."],
  },
  {
    name: "failed with a log tail",
    event: ev({ event: "failed", failed: { reason: "BuildFailed", message: "The build failed; fix the Dockerfile.", logTail: ["step 3", "error: x"] } }),
    lines: ["Failed (BuildFailed): The build failed; fix the Dockerfile.", "  | step 3", "  | error: x"],
  },
  { name: "warning notice", event: ev({ event: "notice", notice: { level: "LEVEL_WARNING", message: "skipped a socket file" } }), lines: ["Warning: skipped a socket file"] },
  { name: "info notice", event: ev({ event: "notice", notice: { level: "LEVEL_INFO", message: "retrying" } }), lines: ["Note: retrying"] },
  { name: "no event set", event: ev({}), lines: [] },
  { name: "progress without a total prints nothing", event: progress({ doneBytes: 10 }), lines: [] },
];

for (const row of CASES) {
  test(`LaunchRenderer: ${row.name}`, () => {
    assert.deepEqual(new LaunchRenderer().render(row.event), row.lines);
  });
}

test("LaunchRenderer prints progress once per 10% step and at completion", () => {
  const renderer = new LaunchRenderer();
  const total = 10 * 1024 * 1024;
  const printed: string[] = [];
  for (let done = 0; done <= total; done += total / 40) {
    printed.push(...renderer.render(progress({ doneBytes: done, totalBytes: total, bytesPerSecond: 1024 * 1024, etaSeconds: (total - done) / (1024 * 1024) })));
  }
  assert.equal(printed.length, 11, printed.join("\n"));
  assert.equal(printed[0], "  Uploading, 0 B / 10.0 MiB (0%), 1.0 MiB/s, 10 s left");
  assert.equal(printed[10], "  Uploading, 10.0 MiB / 10.0 MiB (100%), 1.0 MiB/s");
  // A repeat of the last step prints nothing, not even before the next event.
  assert.deepEqual(renderer.render(progress({ doneBytes: total, totalBytes: total, bytesPerSecond: 1024 * 1024, etaSeconds: 0 })), []);
  assert.deepEqual(renderer.render(ev({ event: "phase", phase: { phase: "PHASE_BUILDING", message: "" } })), ["Building"]);
});

test("LaunchRenderer prints a phase's last unprinted progress before the next event", () => {
  const renderer = new LaunchRenderer();
  assert.deepEqual(renderer.render(progress({ phase: "PHASE_PACKAGING", doneFiles: 3, doneBytes: 2048 })), []);
  assert.deepEqual(renderer.render(progress({ phase: "PHASE_PACKAGING", doneFiles: 12, doneBytes: 4096 })), []);
  assert.deepEqual(renderer.render(ev({ event: "phase", phase: { phase: "PHASE_UPLOADING", message: "" } })), [
    "  Packaging, 4.0 KiB, 12 files",
    "Uploading",
  ]);
  // A progress that counts nothing is never printed.
  assert.deepEqual(renderer.render(progress({ phase: "PHASE_UPLOADING" })), []);
  // Printed once only.
  assert.deepEqual(renderer.render(ev({ event: "phase", phase: { phase: "PHASE_BUILDING", message: "" } })), ["Building"]);
  // A printed progress leaves nothing pending.
  assert.equal(renderer.render(progress({ doneBytes: 1, totalBytes: 1 })).length, 1);
  assert.deepEqual(renderer.render(ev({ event: "phase", phase: { phase: "PHASE_STARTING", message: "" } })), ["Starting"]);
});

test("LaunchRenderer tracks progress per phase", () => {
  const renderer = new LaunchRenderer();
  assert.equal(renderer.render(progress({ phase: "PHASE_PACKAGING", doneFiles: 5, totalFiles: 5 })).length, 1);
  assert.deepEqual(renderer.render(progress({ phase: "PHASE_UPLOADING", doneBytes: 5, totalBytes: 5 })), ["  Uploading, 5 B / 5 B (100%)"]);
});

test("renderLogLine", () => {
  assert.equal(renderLogLine({ container: "", text: "hi", time: null }), "hi");
  assert.equal(renderLogLine({ container: "build", text: "hi", time: null }), "[build] hi");
});
