/**
 * What the .vsix holds, as `vsce ls` lists it: the compiled extension, the copied contract, the
 * health protocol and the runtime dependencies; never sources, tests or maps.
 */

import { strict as assert } from "node:assert";
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";

const ROOT = path.join(__dirname, "..", "..");
const VSCE = path.join(ROOT, "node_modules", "@vscode", "vsce", "vsce");

test("the package holds what the extension loads at run time, and no sources", { skip: !fs.existsSync(VSCE) && "@vscode/vsce is not installed" }, () => {
  const result = spawnSync(process.execPath, [VSCE, "ls"], { cwd: ROOT, encoding: "utf8", timeout: 120_000 });
  assert.equal(result.status, 0, result.stderr);
  const files = new Set(result.stdout.split("\n").map((line) => line.trim()).filter((line) => line !== ""));
  const required = [
    "package.json",
    "README.md",
    "out/src/extension.js",
    "out/src/client/index.js",
    "out/src/view/status.js",
    "proto/nbdapi/v1/notebooks.proto",
    "proto/nbdapi/v1/daemon.proto",
    "health/grpc/health/v1/health.proto",
    "node_modules/@grpc/grpc-js/package.json",
    "node_modules/@grpc/proto-loader/package.json",
  ];
  for (const file of required) {
    assert.ok(files.has(file), `${file} is not packaged`);
  }
  for (const file of files) {
    assert.doesNotMatch(file, /^(src|test|out\/test|scripts)\/|\.map$|^node_modules\/(typescript|@types\/vscode|@vscode)\//, `${file} is packaged`);
  }
});
