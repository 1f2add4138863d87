import { strict as assert } from "node:assert";
import { test } from "node:test";
import { grpcTarget, socketLocation, socketProblem, stateDir, type Env } from "../src/client/discovery";

const HOME = "/home/u";
const CWD = "/work/dir";

// The same rules as local/nbdlocal/paths.py, row by row.
const SOCKET_CASES: Array<{ name: string; env: Env; setting?: string; path: string; source: string }> = [
  { name: "nothing set: the state dir under home", env: {}, path: "/home/u/.local/state/nbd/nbd.sock", source: "state dir" },
  { name: "HOME wins over the account's home", env: { HOME: "/h" }, path: "/h/.local/state/nbd/nbd.sock", source: "state dir" },
  { name: "XDG_STATE_HOME", env: { XDG_STATE_HOME: "/xs" }, path: "/xs/nbd/nbd.sock", source: "state dir" },
  { name: "NBD_STATE_DIR wins over XDG_STATE_HOME", env: { NBD_STATE_DIR: "/sd", XDG_STATE_HOME: "/xs" }, path: "/sd/nbd.sock", source: "state dir" },
  { name: "XDG_RUNTIME_DIR wins over the state dir", env: { XDG_RUNTIME_DIR: "/run/user/1", NBD_STATE_DIR: "/sd" }, path: "/run/user/1/nbd/nbd.sock", source: "XDG_RUNTIME_DIR" },
  { name: "NBD_SOCKET wins over XDG_RUNTIME_DIR", env: { NBD_SOCKET: "/tmp/s.sock", XDG_RUNTIME_DIR: "/run/user/1" }, path: "/tmp/s.sock", source: "NBD_SOCKET" },
  { name: "the setting wins over NBD_SOCKET", env: { NBD_SOCKET: "/tmp/s.sock" }, setting: "/opt/x.sock", path: "/opt/x.sock", source: "setting" },
  { name: "an empty setting is unset", env: { NBD_SOCKET: "/tmp/s.sock" }, setting: "", path: "/tmp/s.sock", source: "NBD_SOCKET" },
  { name: "empty variables are unset", env: { NBD_SOCKET: "", XDG_RUNTIME_DIR: "", NBD_STATE_DIR: "", XDG_STATE_HOME: "" }, path: "/home/u/.local/state/nbd/nbd.sock", source: "state dir" },
  { name: "~ in NBD_SOCKET", env: { NBD_SOCKET: "~/n.sock", HOME: "/h" }, path: "/h/n.sock", source: "NBD_SOCKET" },
  { name: "~ in NBD_STATE_DIR", env: { NBD_STATE_DIR: "~/st" }, path: "/home/u/st/nbd.sock", source: "state dir" },
  { name: "~ in XDG_STATE_HOME", env: { XDG_STATE_HOME: "~" }, path: "/home/u/nbd/nbd.sock", source: "state dir" },
  { name: "~ in the setting", env: {}, setting: "~/e.sock", path: "/home/u/e.sock", source: "setting" },
  { name: "relative NBD_SOCKET resolves against the working dir", env: { NBD_SOCKET: "s.sock" }, path: "/work/dir/s.sock", source: "NBD_SOCKET" },
  { name: "relative NBD_STATE_DIR resolves against the working dir", env: { NBD_STATE_DIR: "st" }, path: "/work/dir/st/nbd.sock", source: "state dir" },
];

for (const row of SOCKET_CASES) {
  test(`socketLocation: ${row.name}`, () => {
    assert.deepEqual(socketLocation(row.env, HOME, row.setting, CWD), { path: row.path, source: row.source });
  });
}

test("stateDir ignores the socket variables", () => {
  assert.equal(stateDir({ NBD_SOCKET: "/x", XDG_RUNTIME_DIR: "/r" }, HOME, CWD), "/home/u/.local/state/nbd");
});

test("socketProblem accepts 107 bytes and refuses 108", () => {
  assert.equal(socketProblem("/" + "a".repeat(106)), undefined);
  const problem = socketProblem("/" + "a".repeat(107));
  assert.ok(problem !== undefined && problem.includes("too long") && problem.includes("NBD_SOCKET"), problem);
});

test("grpcTarget", () => {
  assert.equal(grpcTarget("/tmp/a/nbd.sock"), "unix:///tmp/a/nbd.sock");
  assert.equal(grpcTarget("rel.sock"), "unix:rel.sock");
});

// The rules must agree with the Python client library exactly: the same rows, answered by
// nbdlocal.paths.resolve in the repository's venv, when that venv exists.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { repoPython } from "./daemon";

test("socketLocation agrees with nbdlocal.paths.resolve on every row", (t) => {
  const python = repoPython();
  if (python === undefined) {
    t.skip("no repository venv (../../.venv/bin/python); the table above still holds the rules");
    return;
  }
  const cwd = fs.mkdtempSync(path.join(os.tmpdir(), "nbd-disc-"));
  try {
    const rows = SOCKET_CASES.filter((row) => row.setting === undefined || row.setting === "").map((row) => ({
      env: { HOME, ...row.env },
    }));
    const script = [
      "import json, sys",
      "from nbdlocal.paths import resolve",
      "rows = json.load(sys.stdin)",
      "import os",
      "out = []",
      "for r in rows:",
      "    os.environ['HOME'] = r['env']['HOME']  # expanduser reads the process's HOME",
      "    out.append(str(resolve(env=r['env']).socket))",
      "print(json.dumps(out))",
    ].join("\n");
    const result = spawnSync(python, ["-c", script], { cwd, input: JSON.stringify(rows), encoding: "utf8" });
    assert.equal(result.status, 0, result.stderr);
    const fromPython = JSON.parse(result.stdout) as string[];
    const fromHere = rows.map((row) => socketLocation(row.env, "/nonexistent", undefined, fs.realpathSync(cwd)).path);
    assert.deepEqual(fromHere, fromPython.map((p) => (p.startsWith(cwd) ? fs.realpathSync(cwd) + p.slice(cwd.length) : p)));
  } finally {
    fs.rmSync(cwd, { recursive: true, force: true });
  }
});
