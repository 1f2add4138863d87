"""A container's log, read by the daemon, goes the way every other request of the kubeconfig goes:
through its `proxy-url`, and checked against its `tls-server-name`. The cluster is kubesim over
TLS, with a real pod writing the lines; the proxy is a forward proxy on loopback."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubesim.testing import KubesimServer
from nbd.errors import NbdError
from nbd.kube.client import KubeClient
from nbd.kube.target import load_target
from nbd.kube.transport import close_transport
from nbd.launch.notebooks import NotebookClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "upload"))
from proxyserver import ForwardProxy  # noqa: E402


@pytest.fixture
def talking_pod(kubesim_factory: Any) -> KubesimServer:
    server: KubesimServer = kubesim_factory(tls=True)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "talker"},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "python",
                    "command": ["python3", "-c", "print('one'); print('two', flush=True)"],
                }
            ],
            "restartPolicy": "Never",
        },
    }
    server.kubectl("apply", "-f", "-", input=json.dumps(pod))
    server.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/talker", "--timeout=60s")
    return server


def _kubeconfig(server: KubesimServer, path: Path, **cluster: str) -> str:
    doc = yaml.safe_load(server.kubeconfig.read_text())
    doc["clusters"][0]["cluster"].update(cluster)
    path.write_text(yaml.safe_dump(doc))
    return str(path)


async def _lines(kubeconfig: str) -> list[str]:
    target = await load_target(kubeconfig, None, "default")
    try:
        client = NotebookClient(KubeClient(target), "default")
        return [line async for line in client.log_lines("talker", "main", follow=False)]
    finally:
        await close_transport(target)


def test_log_requests_go_through_the_kubeconfigs_proxy(talking_pod: KubesimServer, tmp_path: Path) -> None:
    async def go() -> tuple[list[str], list[str]]:
        proxy = await ForwardProxy().start()
        try:
            config = _kubeconfig(
                talking_pod, tmp_path / "kc", **{"proxy-url": f"http://127.0.0.1:{proxy.port}"}
            )
            return await _lines(config), proxy.seen
        finally:
            await proxy.stop()

    lines, seen = asyncio.run(go())
    assert lines == ["one", "two"]
    port = talking_pod.url.rsplit(":", 1)[1]
    assert f"CONNECT 127.0.0.1:{port} HTTP/1.1" in seen, seen


def test_log_requests_check_the_kubeconfigs_tls_server_name(
    talking_pod: KubesimServer, tmp_path: Path
) -> None:
    # kubesim's serving certificate names "kubernetes" (as a real API server's does), not this one.
    wrong = _kubeconfig(talking_pod, tmp_path / "wrong", **{"tls-server-name": "not-the-api-server.example"})
    with pytest.raises(NbdError) as e:
        asyncio.run(_lines(wrong))
    assert "certificate" in str(e.value).lower() or "hostname" in str(e.value).lower(), str(e.value)
    right = _kubeconfig(talking_pod, tmp_path / "right", **{"tls-server-name": "kubernetes"})
    assert asyncio.run(_lines(right)) == ["one", "two"]
