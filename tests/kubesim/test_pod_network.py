"""Pods on a bridge with addresses of their own, cluster DNS, and the kubelet's hosts and resolv files."""

from __future__ import annotations

import socket
import struct
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from polling import wait_for

from kubesim.kubelet import dns
from kubesim.kubelet.network import hosts_file, resolv_conf
from kubesim.testing import KubesimServer, start_kubesim

pytestmark = pytest.mark.timeout(180)


# ----------------------------------------------------------------------------- files


def test_hosts_file_names_the_pod_as_the_kubelet_does() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"hostname": "w-0", "subdomain": "w"}}
    text = hosts_file(pod, "10.200.0.5")
    assert text.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert text.endswith("10.200.0.5\tw-0.w.ns.svc.cluster.local\tw-0\n")
    plain = hosts_file(
        {"metadata": {"name": "p"}, "spec": {"hostAliases": [{"ip": "1.2.3.4", "hostnames": ["a", "b"]}]}},
        "10.200.0.6",
    )
    assert "10.200.0.6\tp\n" in plain and plain.endswith("# Entries added by HostAliases.\n1.2.3.4\ta\tb\n")


def test_resolv_conf_follows_the_dns_policy() -> None:
    pod: dict[str, Any] = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {}}
    assert resolv_conf(pod, "10.200.0.1") == (
        "search ns.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.200.0.1\noptions ndots:5\n"
    )
    pod["spec"] = {"dnsPolicy": "Default"}
    assert resolv_conf(pod, "10.200.0.1") is None
    pod["spec"] = {
        "dnsPolicy": "None",
        "dnsConfig": {
            "nameservers": ["1.1.1.1"],
            "searches": ["x.y"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
        },
    }
    assert resolv_conf(pod, "10.200.0.1") == "search x.y\nnameserver 1.1.1.1\noptions ndots:2 edns0\n"


# ----------------------------------------------------------------------------- records


class FakeStore:
    def __init__(self, services: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
        self.services = services
        self.pods = pods

    def get(self, kind: Any, ns: str, name: str) -> dict[str, Any] | None:
        for s in self.services:
            if s["metadata"]["name"] == name and s["metadata"]["namespace"] == ns:
                return s
        return None

    def list(self, kind: Any, ns: str) -> tuple[list[dict[str, Any]], str]:
        return [p for p in self.pods if p["metadata"]["namespace"] == ns], "1"


def svc(name: str, cluster_ip: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": cluster_ip, "selector": {"app": name}} | spec,
    }


def pod(name: str, ip: str, ready: bool = True, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "w"}},
        "spec": spec,
        "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": str(ready)}]},
    }


def test_records_of_services_and_pods() -> None:
    store: Any = FakeStore(
        [svc("w", "None"), svc("api", "10.96.0.7"), svc("late", "None", publishNotReadyAddresses=True)],
        [
            pod("w-a", "10.200.0.2", hostname="w-0", subdomain="w"),
            pod("w-b", "10.200.0.3", ready=False, hostname="w-1", subdomain="w"),
        ],
    )
    assert dns.records(store, "api.default.svc.cluster.local") == ["10.96.0.7"]
    assert dns.records(store, "w.default.svc.cluster.local") == ["10.200.0.2"]
    assert dns.records(store, "w-0.w.default.svc.cluster.local") == ["10.200.0.2"]
    assert dns.records(store, "w-1.w.default.svc.cluster.local") is None  # not ready: not an endpoint
    assert dns.records(store, "nope.default.svc.cluster.local") is None
    assert dns.records(store, "w.other.svc.cluster.local") is None
    assert dns.records(store, "w-0.api.default.svc.cluster.local") is None  # not headless
    assert dns.records(store, "example.com") is None
    store.services[2]["spec"]["selector"] = {"app": "w"}
    assert dns.records(store, "late.default.svc.cluster.local") == ["10.200.0.2", "10.200.0.3"]
    # A hostname names an endpoint only through the Service its subdomain names.
    assert dns.records(store, "w-1.late.default.svc.cluster.local") is None
    store.services[0]["spec"]["selector"] = {"app": "none"}
    assert dns.records(store, "w.default.svc.cluster.local") is None  # headless, no endpoints: NXDOMAIN


def query(name: str, qtype: int = 1, qid: int = 7) -> bytes:
    labels = b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\x00"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!HH", qtype, 1)


def test_wire_answers() -> None:
    store: Any = FakeStore([svc("api", "10.96.0.7")], [])
    reply = dns.answer(store, query("api.default.svc.cluster.local"))
    assert reply is not None
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", reply[:12])
    assert (qid, flags & 0xF, qd, an, ns) == (7, dns.NOERROR, 1, 1, 0) and flags & 0x8400 == 0x8400
    assert reply[-4:] == socket.inet_aton("10.96.0.7")
    aaaa = dns.answer(store, query("api.default.svc.cluster.local", qtype=28))
    assert aaaa is not None and struct.unpack("!HHHHHH", aaaa[:12])[1:5] == (0x8580, 1, 0, 1)  # NODATA + SOA
    missing = dns.answer(store, query("x.default.svc.cluster.local"))
    assert missing is not None and struct.unpack("!H", missing[2:4])[0] & 0xF == dns.NXDOMAIN
    assert dns.answer(store, b"\x00\x07\x01") is not None  # malformed: FORMERR
    assert struct.unpack("!H", dns.answer(store, b"\x00\x07\x01")[2:4])[0] & 0xF == dns.FORMERR  # type: ignore[index]


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def ks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubesimServer]:
    server = start_kubesim(tmp_path_factory.mktemp("network"))
    yield server
    server.stop()


def bridges() -> list[str]:
    out = subprocess.run(
        ["ip", "-o", "link", "show", "type", "bridge"], capture_output=True, text=True
    ).stdout
    return [line.split(":")[1].strip() for line in out.splitlines() if ": ksim" in line]


def veths() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


LISTENER = """
import os, socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000)); s.listen(1)
c, peer = s.accept()
msg = c.recv(100).decode()
c.sendall(b"ack from " + os.environ["JOB_COMPLETION_INDEX"].encode())
print("got", msg, flush=True)
"""

TALKER = """
import os, socket, time
deadline = time.monotonic() + 60
while True:
    try:
        socket.getaddrinfo("ring-0.ring.default.svc.cluster.local", 7000, socket.AF_INET)
        short = socket.getaddrinfo("ring-0.ring", 7000, socket.AF_INET, socket.SOCK_STREAM)[0][4][0]
        c = socket.create_connection(("ring-0.ring", 7000), timeout=5)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.2)
c.sendall(b"hello from " + os.environ["JOB_COMPLETION_INDEX"].encode())
print("resolved", short, "reply", c.recv(100).decode(), flush=True)
"""

SCRIPT = "import os; exec(open('/scripts/' + os.environ['JOB_COMPLETION_INDEX'] + '.py').read())"


def test_two_indexed_pods_talk_by_dns_name_through_a_headless_service(ks: KubesimServer) -> None:
    from kubernetes import client

    api = ks.api_client()
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "ring-scripts"}, "data": {"0.py": LISTENER, "1.py": TALKER}}
    )
    core.create_namespaced_service(
        "default",
        {
            "metadata": {"name": "ring"},
            "spec": {"clusterIP": "None", "selector": {"job-name": "ring"}, "ports": [{"port": 7000}]},
        },
    )
    # The talker may look the listener up before it is an endpoint: it retries, as a real rank would.
    batch.create_namespaced_job(
        "default",
        {
            "metadata": {"name": "ring"},
            "spec": {
                "completionMode": "Indexed",
                "completions": 2,
                "parallelism": 2,
                "backoffLimit": 0,
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "subdomain": "ring",
                        "containers": [
                            {
                                "name": "rank",
                                "image": "python:3.12",
                                "command": ["python3", "-c", SCRIPT],
                                "volumeMounts": [{"name": "scripts", "mountPath": "/scripts"}],
                            }
                        ],
                        "volumes": [{"name": "scripts", "configMap": {"name": "ring-scripts"}}],
                    }
                },
            },
        },
    )
    ks.kubectl("wait", "--for=condition=Complete", "job/ring", "--timeout=55s")
    st = batch.read_namespaced_job("ring", "default").status
    assert st.completed_indexes == "0-1" and st.succeeded == 2
    pods = {
        p.metadata.annotations["batch.kubernetes.io/job-completion-index"]: p
        for p in core.list_namespaced_pod("default", label_selector="job-name=ring").items
    }
    ip0, ip1 = pods["0"].status.pod_ip, pods["1"].status.pod_ip
    assert ip0 != ip1 and ip0.startswith("10.") and pods["0"].status.pod_ips[0].ip == ip0
    assert core.read_namespaced_pod_log(pods["0"].metadata.name, "default") == "got hello from 1\n"
    assert (
        core.read_namespaced_pod_log(pods["1"].metadata.name, "default")
        == f"resolved {ip0} reply ack from 0\n"
    )


def test_a_pod_sees_its_address_hosts_and_resolv_conf(ks: KubesimServer) -> None:
    from kubernetes import client

    core = client.CoreV1Api(ks.api_client())
    script = 'cat /etc/resolv.conf /etc/hosts; echo "ip=$MY_IP"; ip -4 -o addr show eth0 | tr -s " " | cut -d" " -f4'
    core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "lookaround"},
            "spec": {
                "restartPolicy": "Never",
                "hostname": "box",
                "subdomain": "nothing",
                "containers": [
                    {
                        "name": "c",
                        "image": "busybox",
                        "command": ["sh", "-c", script],
                        "env": [{"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    }
                ],
            },
        },
    )
    wait_for(
        lambda: core.read_namespaced_pod("lookaround", "default").status.phase == "Succeeded",
        timeout=60,
        what="the pod to succeed",
    )
    ip = core.read_namespaced_pod("lookaround", "default").status.pod_ip
    log = core.read_namespaced_pod_log("lookaround", "default")
    gateway = ip.rsplit(".", 2)[0] + ".0.1"
    assert log.startswith(
        f"search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver {gateway}\noptions ndots:5\n"
    )
    assert f"{ip}\tbox.nothing.default.svc.cluster.local\tbox\n" in log
    assert log.endswith(f"ip={ip}\n{ip}/16\n")
    with open("/etc/resolv.conf") as f:
        assert "cluster.local" not in f.read()  # the host's own file is untouched


def test_pod_deletion_and_shutdown_leave_no_links(tmp_path_factory: pytest.TempPathFactory) -> None:
    import json

    from kubernetes import client

    server = start_kubesim(tmp_path_factory.mktemp("network-leaks"))
    pid = json.loads((server.state_dir / "server.json").read_text())["pid"]

    def ours(links: list[str], prefix: str) -> list[str]:
        return [x for x in links if x.startswith(f"{prefix}{pid:x}x")]

    try:
        core = client.CoreV1Api(server.api_client())
        assert len(ours(bridges(), "ksim")) == 1
        body = {
            "spec": {
                "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "300"]}],
            }
        }
        core.create_namespaced_pod("default", {"metadata": {"name": "sleeper"}} | body)
        wait_for(
            lambda: core.read_namespaced_pod("sleeper", "default").status.phase == "Running",
            timeout=60,
            what="the pod to run",
        )
        assert len(ours(veths(), "kv")) == 1
        core.delete_namespaced_pod("sleeper", "default")
        wait_for(lambda: not ours(veths(), "kv"), timeout=30, what="the pod's veth to go")
        core.create_namespaced_pod("default", {"metadata": {"name": "sleeper2"}} | body)
        wait_for(
            lambda: core.read_namespaced_pod("sleeper2", "default").status.phase == "Running",
            timeout=60,
            what="the pod to run",
        )
        assert len(ours(veths(), "kv")) == 1
    finally:
        server.stop()
    assert ours(bridges(), "ksim") == [] and ours(veths(), "kv") == []


def test_a_starting_kubesim_removes_only_abandoned_bridges(tmp_path_factory: pytest.TempPathFactory) -> None:
    import fcntl
    import os

    from kubesim.kubelet import network

    gone = subprocess.Popen(["true"])
    gone.wait()
    abandoned, owned = f"ksim{gone.pid:x}x7e", f"ksim{gone.pid:x}x7f"
    lock = network._owner_lock(owned)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a live owner (in another pid namespace, say) holds it
        for name in (abandoned, owned):
            subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
        server = start_kubesim(tmp_path_factory.mktemp("network-stale"))
        try:
            assert abandoned not in bridges() and owned in bridges()
        finally:
            server.stop()
    finally:
        subprocess.run(["ip", "link", "del", owned], capture_output=True)
        subprocess.run(["ip", "link", "del", abandoned], capture_output=True)
        os.close(fd)
        os.unlink(lock)


def test_the_server_answers_over_udp_and_tcp_and_truncates_big_udp_answers() -> None:
    import asyncio

    store: Any = FakeStore(
        [svc("api", "10.96.0.7"), svc("w", "None")],
        [pod(f"w-{i}", f"10.200.1.{i}") for i in range(1, 41)],
    )

    async def run() -> tuple[bytes, bytes, bytes]:
        server = dns.DnsServer(store, "127.0.0.1", 0)
        await server.start()
        try:
            loop = asyncio.get_running_loop()
            got: asyncio.Future[bytes] = loop.create_future()

            class Client(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: Any) -> None:
                    if not got.done():
                        got.set_result(data)

            transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=("127.0.0.1", server.port))
            transport.sendto(query("w.default.svc.cluster.local", qid=9))
            udp = await asyncio.wait_for(got, 5)
            transport.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            replies = []
            for name in ("w.default.svc.cluster.local", "api.default.svc.cluster.local"):
                q = query(name, qid=10)
                writer.write(struct.pack("!H", len(q)) + q)
                size = struct.unpack("!H", await reader.readexactly(2))[0]
                replies.append(await reader.readexactly(size))
            writer.close()
            return udp, replies[0], replies[1]
        finally:
            await server.stop()

    udp, tcp_big, tcp_small = asyncio.run(run())
    qid, flags, qd, an = struct.unpack("!HHHH", udp[:8])
    assert qid == 9 and flags & 0x0200 and an == 0 and len(udp) <= 512  # truncated: retry over TCP
    assert struct.unpack("!HHHH", tcp_big[:8])[3] == 40  # every endpoint over TCP
    assert tcp_small[-4:] == socket.inet_aton("10.96.0.7")


def test_a_failed_network_attach_is_retried_and_said(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes import client

    from kubesim.kubelet import network
    from kubesim.running import start_inprocess

    real = network.PodNetwork.attach_sync
    calls: list[str] = []

    def flaky(self: network.PodNetwork, uid: str, pid: int) -> str:
        calls.append(uid)
        if len(calls) == 1:
            raise network.NetworkError("ip link add: RTNETLINK answers: File exists")
        return real(self, uid, pid)

    monkeypatch.setattr(network.PodNetwork, "attach_sync", flaky)
    server = start_inprocess(tmp_path_factory.mktemp("network-flaky"))
    try:
        core = client.CoreV1Api(server.api_client())
        core.create_namespaced_pod(
            "default",
            {
                "metadata": {"name": "retry"},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
                },
            },
        )
        wait_for(
            lambda: core.read_namespaced_pod("retry", "default").status.phase == "Succeeded",
            timeout=60,
            what="the pod to run on a second try",
        )
        evs = [
            e
            for e in core.list_namespaced_event("default").items
            if e.involved_object.name == "retry" and e.reason == "FailedCreatePodSandBox"
        ]
        assert evs and evs[0].message == (
            "Failed to create pod sandbox: failed to setup network for sandbox: ip link add: RTNETLINK answers: File exists"
        )
        assert (
            core.read_namespaced_pod("retry", "default").status.pod_ip.startswith("10.") and len(calls) == 2
        )
    finally:
        server.stop()


def test_without_cluster_dns_pods_keep_loopback_and_say_so(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from kubernetes import client

    from kubesim.running import start_inprocess

    async def refuse(self: dns.DnsServer) -> None:
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(dns.DnsServer, "start", refuse)
    server = start_inprocess(tmp_path_factory.mktemp("network-nodns"))
    try:
        pid = json.loads((server.state_dir / "server.json").read_text())["pid"]
        core = client.CoreV1Api(server.api_client())
        core.create_namespaced_pod(
            "default",
            {
                "metadata": {"name": "alone"},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
                },
            },
        )
        wait_for(
            lambda: core.read_namespaced_pod("alone", "default").status.phase == "Succeeded",
            timeout=60,
            what="the pod to run",
        )
        evs = [
            e
            for e in core.list_namespaced_event("default").items
            if e.involved_object.name == "alone" and e.reason == "NoPodNetwork"
        ]
        assert evs and evs[0].type == "Warning" and "cluster DNS could not listen on 10." in evs[0].message
        assert core.read_namespaced_pod("alone", "default").status.pod_ip == "127.0.0.1"
        assert not [b for b in bridges() if b.startswith(f"ksim{pid:x}x")]  # the unused bridge went at once
    finally:
        server.stop()


def test_names_outside_the_cluster_are_forwarded_upstream() -> None:
    import asyncio

    store: Any = FakeStore([svc("api", "10.96.0.7")], [])

    class Upstream(asyncio.DatagramProtocol):
        """A nameserver that knows one name: example.org A 192.0.2.9."""

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            q = dns.parse_query(data)
            if q.name == "example.org":
                self.transport.sendto(dns.build_response(q, dns.NOERROR, ["192.0.2.9"]), addr)

    async def run() -> list[bytes]:
        loop = asyncio.get_running_loop()
        up, _ = await loop.create_datagram_endpoint(Upstream, local_addr=("127.0.0.1", 0))
        port = up.get_extra_info("sockname")[1]
        try:
            return [
                await dns.respond(store, query("example.org"), [("127.0.0.1", port)], timeout=0.5) or b"",
                await dns.respond(store, query("silent.example"), [("127.0.0.1", port)], timeout=0.3) or b"",
                await dns.respond(store, query("api.default.svc.cluster.local"), [("127.0.0.1", port)])
                or b"",
                await dns.respond(store, query("example.org"), []) or b"",
            ]
        finally:
            up.close()

    found, silent, ours, alone = asyncio.run(run())
    assert found[-4:] == socket.inet_aton("192.0.2.9")
    assert struct.unpack("!H", silent[2:4])[0] & 0xF == dns.SERVFAIL  # no upstream answered
    assert ours[-4:] == socket.inet_aton("10.96.0.7")  # the cluster's zone is never forwarded
    assert struct.unpack("!H", alone[2:4])[0] & 0xF == dns.NXDOMAIN  # nowhere to forward to
    assert dns.host_nameservers("/nonexistent") == []
