// Copies the local API contract (the repository's proto/nbdapi/v1/*.proto) into this package, so
// the packaged extension loads it from beside its own code and never from a path outside itself.
// The copy is build output (ignored by git); the repository's proto/ stays the one source.
import { copyFileSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const packageRoot = join(here, "..");
const source = join(packageRoot, "..", "..", "proto", "nbdapi", "v1");
const target = join(packageRoot, "proto", "nbdapi", "v1");

let files;
try {
  files = readdirSync(source).filter((name) => name.endsWith(".proto"));
} catch (err) {
  console.error(`copy-proto: cannot read ${source}: ${err.message}; run the build from a checkout of the repository.`);
  process.exit(1);
}
if (files.length === 0) {
  console.error(`copy-proto: no .proto files in ${source}.`);
  process.exit(1);
}
rmSync(target, { recursive: true, force: true });
mkdirSync(target, { recursive: true });
for (const name of files.sort()) {
  copyFileSync(join(source, name), join(target, name));
}
console.log(`copy-proto: ${files.length} files from ${source}`);
