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
