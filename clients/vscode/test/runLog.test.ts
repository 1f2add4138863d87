import { strict as assert } from "node:assert";
import { test } from "node:test";
import type { RunEvent, RunInfo } from "../src/client/types";
import { RunRenderer, runOutcome, runPhaseWord } from "../src/view/runLog";

function info(over: Partial<RunInfo> = {}): RunInfo {
  return {
    name: "train-ab1cd",
    namespace: "ml",
    context: "kind",
    phase: "RUN_PHASE_RUNNING",
    reason: "",
    message: "",
    command: ["python", "t.py"],
    nodes: 1,
    gpusPerNode: 0,
    gpuType: "",
    image: "",
    contextMd5: "",
    created: null,
    started: null,
    finished: null,
    ranks: [],
    outputsPath: "/content/outputs",
    directory: "/p",
    job: "",
    ...over,
  };
}

function ev(event: Partial<RunEvent>): RunEvent {
  return { time: null, run: "train-ab1cd", ...event };
}

test("one node: log lines as they are, the outcome with the exit code", () => {
  const r = new RunRenderer();
  assert.deepEqual(r.render(ev({ event: "status", status: info() })), ["Run train-ab1cd running"]);
  assert.deepEqual(r.render(ev({ event: "status", status: info() })), [], "the same status is not repeated");
  assert.deepEqual(r.render(ev({ event: "log", log: { rank: 0, text: "epoch 1\n", pod: "p", time: null } })), ["epoch 1"]);
  const done = info({ phase: "RUN_PHASE_FAILED", exitCode: 3, message: "the script exited with 3" });
  assert.deepEqual(r.render(ev({ event: "finished", finished: done })), [
    "Run train-ab1cd failed, exit code 3: the script exited with 3",
  ]);
  assert.equal(r.finished, done);
});

test("several nodes: every rank's line is prefixed, a failed rank is named", () => {
  const r = new RunRenderer();
  const running = info({ nodes: 2, ranks: [{ index: 0, pod: "a", phase: "Running" }, { index: 1, pod: "b", phase: "Pending" }] });
  assert.deepEqual(r.render(ev({ event: "status", status: running })), ["Run train-ab1cd running (rank 0 running, rank 1 pending)"]);
  assert.deepEqual(r.render(ev({ event: "log", log: { rank: 1, text: "hello", pod: "b", time: null } })), ["[rank 1] hello"]);
  assert.equal(runOutcome(info({ nodes: 2, phase: "RUN_PHASE_FAILED", exitCode: 1, failedRank: 1 })), "Run train-ab1cd failed, exit code 1 (rank 1)");
});

test("the launch's steps read as in a launch", () => {
  const r = new RunRenderer();
  assert.deepEqual(r.render(ev({ event: "phase", phase: { phase: "PHASE_PACKAGING", message: "packaging /p" } })), ["Packaging: packaging /p"]);
  assert.deepEqual(r.render(ev({ event: "failed", failed: { reason: "BuildFailed", message: "the build failed", logTail: ["x"] } })), [
    "Failed (BuildFailed): the build failed",
    "  | x",
  ]);
});

test("phase words", () => {
  assert.equal(runPhaseWord("RUN_PHASE_SUCCEEDED"), "succeeded");
  assert.equal(runPhaseWord("RUN_PHASE_FROM_A_NEWER_DAEMON"), "from_a_newer_daemon");
});
