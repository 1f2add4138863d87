import { strict as assert } from "node:assert";
import { test } from "node:test";
import { formatBytes, formatSeconds, notebookWord, phaseWord, plural, redactUrl, syncWord } from "../src/view/format";

const BYTES: Array<[number, string]> = [
  [0, "0 B"],
  [1023, "1023 B"],
  [1024, "1.0 KiB"],
  [1536, "1.5 KiB"],
  [5 * 1024 * 1024, "5.0 MiB"],
  [3 * 1024 ** 4, "3.0 TiB"],
  [-1, "?"],
  [Number.NaN, "?"],
];
for (const [bytes, text] of BYTES) {
  test(`formatBytes(${bytes})`, () => assert.equal(formatBytes(bytes), text));
}

const SECONDS: Array<[number, string]> = [
  [0, "0 s"],
  [59.4, "59 s"],
  [60, "1 min"],
  [75, "1 min 15 s"],
  [3600 + 120, "1 h 2 min"],
  [-1, "?"],
];
for (const [seconds, text] of SECONDS) {
  test(`formatSeconds(${seconds})`, () => assert.equal(formatSeconds(seconds), text));
}

const URLS: Array<[string, string]> = [
  ["http://127.0.0.1:8888/?token=abc", "http://127.0.0.1:8888/?token=…"],
  ["http://127.0.0.1:8888/lab?x=1&token=abc&y=2", "http://127.0.0.1:8888/lab?x=1&token=…&y=2"],
  ["http://127.0.0.1:8888/", "http://127.0.0.1:8888/"],
  ["http://h/?TOKEN=abc#frag", "http://h/?TOKEN=…#frag"],
];
for (const [url, text] of URLS) {
  test(`redactUrl(${url})`, () => assert.equal(redactUrl(url), text));
}

test("enum words", () => {
  assert.equal(phaseWord("PHASE_READY"), "Ready");
  assert.equal(phaseWord("PHASE_STOPPING"), "Stopping");
  assert.equal(phaseWord("PHASE_GONE"), "Gone");
  assert.equal(phaseWord("PHASE_SUSPENDED"), "Suspended");
  assert.equal(notebookWord("NOTEBOOK_STATE_CHANGED"), "changed elsewhere");
  assert.equal(notebookWord("NOTEBOOK_STATE_LATER"), "later");
  assert.equal(phaseWord("PHASE_NEW_THING"), "New_thing");
  assert.equal(syncWord("SYNC_STATE_WATCHING"), "watching");
  assert.equal(syncWord("SYNC_STATE_LATER"), "later");
  assert.equal(plural(1, "file"), "1 file");
  assert.equal(plural(0, "file"), "0 files");
});
