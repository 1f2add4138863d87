import { strict as assert } from "node:assert";
import { test } from "node:test";
import { absoluteKubeconfig, launchRequest } from "../src/client/request";

const CWD = "/work/proj";
const HOME = "/home/u";

const KUBECONFIGS: Array<[string, string]> = [
  ["", ""],
  ["/etc/kube/config", "/etc/kube/config"],
  ["kc.yaml", "/work/proj/kc.yaml"],
  ["~/.kube/config", "/home/u/.kube/config"],
  ["a.yaml::/b.yaml:", "/work/proj/a.yaml:/b.yaml"],
];
for (const [list, want] of KUBECONFIGS) {
  test(`absoluteKubeconfig(${JSON.stringify(list)})`, () => assert.equal(absoluteKubeconfig(list, CWD, HOME), want));
}

test("launchRequest: the setting wins over KUBECONFIG; defaults are empty", () => {
  assert.deepEqual(launchRequest("/p/hello", { kubeconfig: "~/k" }, { KUBECONFIG: "/env/k" }, CWD, HOME), {
    directory: "/p/hello",
    context: "",
    namespace: "",
    kubeconfig: "/home/u/k",
    noSync: false,
  });
});

test("launchRequest: KUBECONFIG from the environment, settings passed through", () => {
  assert.deepEqual(
    launchRequest("hello", { context: "gke", namespace: "ml", kubeconfig: "", noSync: true }, { KUBECONFIG: "a:b" }, CWD, HOME),
    { directory: "/work/proj/hello", context: "gke", namespace: "ml", kubeconfig: "/work/proj/a:/work/proj/b", noSync: true },
  );
});

// --- runFileRequest: how a file of the workspace runs as a job --------------------------------

import { commandForFile, runFileRequest } from "../src/client/request";

const COMMANDS: Array<[string, string[] | undefined]> = [
  ["train.py", ["python", "train.py"]],
  ["src/Train.PY", ["python", "src/Train.PY"]],
  ["scripts/go.sh", ["bash", "scripts/go.sh"]],
  ["nb/eda.ipynb", ["jupyter", "nbconvert", "--to", "notebook", "--execute", "nb/eda.ipynb", "--output-dir", "outputs"]],
  ["README.md", undefined],
  ["Makefile", undefined],
];
for (const [file, want] of COMMANDS) {
  test(`commandForFile(${file})`, () => assert.deepEqual(commandForFile(file), want));
}

test("runFileRequest: the file relative to the folder, with the launch's cluster settings", () => {
  assert.deepEqual(
    runFileRequest("/p/hello", "/p/hello/src/train.py", { context: "gke", namespace: "ml", kubeconfig: "~/k" }, {}, CWD, HOME),
    {
      directory: "/p/hello",
      target: { context: "gke", namespace: "ml", kubeconfig: "/home/u/k" },
      command: ["python", "src/train.py"],
    },
  );
});

test("runFileRequest: a file outside the folder, the folder itself and an unknown kind are refused", () => {
  assert.throws(() => runFileRequest("/p/hello", "/p/other/x.py", {}, {}, CWD, HOME), /is not inside \/p\/hello/);
  assert.throws(() => runFileRequest("/p/hello", "/p/hello", {}, {}, CWD, HOME), /is not inside/);
  assert.throws(() => runFileRequest("/p/hello", "/p/hello/notes.txt", {}, {}, CWD, HOME), /cannot tell how to run notes\.txt; run a \.py, \.sh or \.ipynb file/);
});
