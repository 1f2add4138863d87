/**
 * The layer contract: src/client/ and src/view/ never import the editor, and src/view/ never
 * imports gRPC or the client's I/O; only src/extension.ts imports `vscode`.
 */

import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as path from "node:path";
import { test } from "node:test";

const SRC = path.join(__dirname, "..", "..", "src");

function imports(file: string): string[] {
  const text = fs.readFileSync(file, "utf8");
  return [...text.matchAll(/(?:from\s+|require\()\s*["']([^"']+)["']/g)].map((m) => m[1]!);
}

function sources(dir: string): string[] {
  return fs.readdirSync(path.join(SRC, dir)).filter((f) => f.endsWith(".ts")).map((f) => path.join(SRC, dir, f));
}

const RULES: Array<{ dir: string; forbidden: RegExp; why: string }> = [
  { dir: "client", forbidden: /^vscode$|\/view\/|^\.\.\/extension/, why: "the client is a plain Node module" },
  { dir: "view", forbidden: /^vscode$|^@grpc\/|^\.\/client$|\/client\/(client|connect|watch|proto|errors)$|^node:child_process$|^node:fs$/, why: "views are pure" },
];

for (const rule of RULES) {
  test(`src/${rule.dir}/ imports nothing forbidden (${rule.why})`, () => {
    const files = sources(rule.dir);
    assert.ok(files.length > 0);
    for (const file of files) {
      for (const spec of imports(file)) {
        assert.doesNotMatch(spec, rule.forbidden, `${path.relative(SRC, file)} imports ${spec}`);
      }
    }
  });
}

test("the contract checker sees imports (a test that can fail)", () => {
  assert.ok(imports(path.join(SRC, "extension.ts")).includes("vscode"));
});
