"""The controller as a process with the in-cluster store (NBD_STORE=incluster) against kubesim:
it serves the store, hands out API-server upload URLs that kubesim's service proxy carries to it,
and its collector keeps the store under its bound without removing what a Notebook needs."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from controller_stack import ROOT, Controller, Notebooks, tarball, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def stack(kubesim_factory: Any, tmp_path: Path) -> Iterator[dict[str, Any]]:
    port = _free_port()
    server = kubesim_factory(kubelet=False, extra_args=["--host-service", f"nbd-system/nbd-store={port}"])
    server.kubectl("apply", "-k", str(ROOT / "cluster" / "manifests"))
    store_dir = tmp_path / "store"
    controller = Controller(
        server.kubeconfig,
        {
            "NBD_STORE": "incluster",
            "NBD_STORE_DIR": str(store_dir),
            "NBD_STORE_LISTEN": f"127.0.0.1:{port}",
            "NBD_STORE_URL": f"http://127.0.0.1:{port}",
            "NBD_STORE_MAX_BYTES": "2Mi",
            "NBD_STORE_COLLECT_SECONDS": "1",
            "NBD_REGISTRY": "registry.kubesim:5000",
            "NBD_INSECURE_REGISTRY": "true",
        },
        tmp_path / "controller.log",
    )
    controller.start()
    try:
        yield {"server": server, "nb": Notebooks(server.api_client()), "dir": store_dir, "port": port}
    finally:
        controller.stop()
        print("---- controller log ----\n" + controller.log()[-6000:])


def test_upload_through_the_service_proxy_then_the_build_fetches_directly(stack: dict[str, Any]) -> None:
    nb: Notebooks = stack["nb"]
    body = tarball({"Dockerfile": "FROM python:3.12\n", "a.py": "print(1)\n"})
    md5 = hashlib.md5(body).hexdigest()
    nb.create("one", {"build": {"upload": {"md5": md5, "requestID": "req-1"}}})
    upload = wait_for(
        "a signed URL",
        lambda: nb.status("one").get("upload", {}).get("signedURL") and nb.status("one")["upload"],
    )
    url = upload["signedURL"]
    assert url.startswith("/api/v1/namespaces/nbd-system/services/nbd-store:http/proxy/contexts/")
    token = stack["server"].token
    import base64
    import urllib.request

    request = urllib.request.Request(
        stack["server"].url + url,
        data=body,
        method="PUT",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-MD5": base64.b64encode(bytes.fromhex(md5)).decode(),
            "Content-Type": "application/octet-stream",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
    nb.patch_spec("one", {"build": {"uploaded": "req-1"}})
    wait_for("the build to start", lambda: nb.status("one").get("phase") == "Building")
    job = nb.jobs()[0]
    env = {
        e["name"]: e.get("value")
        for c in job["spec"]["template"]["spec"]["initContainers"]
        for e in c.get("env", [])
    }
    assert env["NBD_CONTEXT_URL"].startswith(f"http://127.0.0.1:{stack['port']}/contexts/{md5}.tar.gz?")
    with urllib.request.urlopen(env["NBD_CONTEXT_URL"], timeout=10) as resp:
        assert resp.read() == body


def test_the_collector_removes_unneeded_contexts_least_recently_used_first(stack: dict[str, Any]) -> None:
    nb: Notebooks = stack["nb"]
    contexts = Path(stack["dir"]) / "contexts"
    wait_for("the store to be served", lambda: Path(stack["dir"], ".key").exists())
    contexts.mkdir(parents=True, exist_ok=True)
    md5s = []
    for i in range(4):
        data = bytes([i]) * (1 << 20)
        md5 = hashlib.md5(data).hexdigest()
        (contexts / f"{md5}.tar.gz").write_bytes(data)
        os.utime(contexts / f"{md5}.tar.gz", (1000 + i, 1000 + i))
        md5s.append(md5)
    # The oldest is needed by a Notebook: it stays, the next oldest go until 2 MiB are left.
    nb.create("needs-oldest", {"build": {"upload": {"md5": md5s[0], "requestID": "r"}}})
    wait_for(
        "the collector to bring the store under its bound",
        lambda: sorted(p.name[:32] for p in contexts.iterdir()) == sorted([md5s[0], md5s[3]]),
        timeout=30,
    )
    time.sleep(2)  # two more collection rounds (every second) remove nothing more
    assert sorted(p.name[:32] for p in contexts.iterdir()) == sorted([md5s[0], md5s[3]])
