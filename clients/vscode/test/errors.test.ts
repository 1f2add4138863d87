import { strict as assert } from "node:assert";
import { test } from "node:test";
import { Metadata, status } from "@grpc/grpc-js";
import { codeName, NbdError, toNbdError } from "../src/client/errors";

function serviceError(code: number, details: string, reason?: string): Error {
  const metadata = new Metadata();
  if (reason !== undefined) metadata.set("nbd-reason", reason);
  return Object.assign(new Error(`${code} ${codeName(code)}: ${details}`), { code, details, metadata });
}

test("codeName", () => {
  assert.equal(codeName(12), "UNIMPLEMENTED");
  assert.equal(codeName(0), "OK");
  assert.equal(codeName(99), "CODE_99");
});

const CASES: Array<{ name: string; err: unknown; socket?: string; code: number; message: string; reason: string; fromDaemon: boolean }> = [
  {
    name: "a daemon status keeps its details verbatim and its reason",
    err: serviceError(status.FAILED_PRECONDITION, "The Notebook CRD is not installed; run `kubectl apply -k cluster/manifests`.", "CRDNotInstalled"),
    code: status.FAILED_PRECONDITION,
    message: "The Notebook CRD is not installed; run `kubectl apply -k cluster/manifests`.",
    reason: "CRDNotInstalled",
    fromDaemon: true,
  },
  {
    name: "a status without nbd-reason is gRPC's own",
    err: serviceError(status.DEADLINE_EXCEEDED, "Deadline exceeded after 10.001s"),
    code: status.DEADLINE_EXCEEDED,
    message: "Deadline exceeded after 10.001s",
    reason: "",
    fromDaemon: false,
  },
  {
    name: "no connection to the socket names it and how to start the daemon",
    err: serviceError(status.UNAVAILABLE, "No connection established. Last error: connect ENOENT /run/nbd.sock"),
    socket: "/run/nbd.sock",
    code: status.UNAVAILABLE,
    message: "The nbd daemon does not answer on /run/nbd.sock; start it with `nbctl daemon start`.",
    reason: "",
    fromDaemon: false,
  },
  {
    name: "a daemon's own UNAVAILABLE is kept",
    err: serviceError(status.UNAVAILABLE, "The cluster does not answer; check your network.", "ClusterUnreachable"),
    socket: "/run/nbd.sock",
    code: status.UNAVAILABLE,
    message: "The cluster does not answer; check your network.",
    reason: "ClusterUnreachable",
    fromDaemon: true,
  },
  { name: "any other error is INTERNAL", err: new TypeError("boom"), code: status.INTERNAL, message: "boom", reason: "", fromDaemon: false },
  { name: "a thrown string", err: "odd", code: status.INTERNAL, message: "odd", reason: "", fromDaemon: false },
];

for (const row of CASES) {
  test(`toNbdError: ${row.name}`, () => {
    const err = toNbdError(row.err, row.socket);
    assert.ok(err instanceof NbdError);
    assert.deepEqual([err.code, err.message, err.reason, err.fromDaemon], [row.code, row.message, row.reason, row.fromDaemon]);
    assert.equal(err.codeName, codeName(row.code));
  });
}

test("toNbdError passes an NbdError through", () => {
  const original = new NbdError(status.NOT_FOUND, "gone");
  assert.equal(toNbdError(original), original);
});
