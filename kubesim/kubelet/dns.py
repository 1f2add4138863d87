"""Cluster DNS: the records CoreDNS's kubernetes plugin serves for `cluster.local`, over UDP and TCP.

Answers (class IN, TTL 5 as CoreDNS's default), from the store at the time of the query:

* `SVC.NS.svc.cluster.local` A: a Service's clusterIP; for a headless Service (`clusterIP: None`)
  the addresses of its endpoints, one A record each;
* `HOSTNAME.SVC.NS.svc.cluster.local` A: the endpoint of headless Service SVC that is a pod with
  `spec.hostname: HOSTNAME` and `spec.subdomain: SVC` (the endpoints controller names such an
  address by the pod's hostname);
* an existing name asked for another type (AAAA, ...): NOERROR with no answer; anything else:
  NXDOMAIN, with the zone's SOA in the authority section as CoreDNS gives it.

A Service's endpoints are what the endpoints controller would list: the pods of its namespace its
selector matches that have a pod IP, are not terminal or being deleted, and are Ready, or any such
pod when the Service sets `publishNotReadyAddresses`. A Service without a selector has none.
Names outside `cluster.local` are forwarded, as CoreDNS's `forward . /etc/resolv.conf` does, to
the nameservers of this machine's /etc/resolv.conf (UDP, each tried in turn for 2 s; none answers:
SERVFAIL; none configured: NXDOMAIN). A pod gets the answer, though it has no route out of the
machine; a BuildKit RUN, which runs in kubesim's own network namespace, can use it.

`records(store, name)` is the lookup; `DnsServer` serves it (and forwards the rest); `parse_query`/`build_response` are the
wire format (RFC 1035), stdlib only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import struct
from dataclasses import dataclass
from typing import Any

from kubesim.selectors import label_selector_from_dict
from kubesim.store import PODS, Store

__all__ = ["DnsServer", "Query", "build_response", "parse_query", "records", "CLUSTER_DOMAIN"]

log = logging.getLogger("kubesim.kubelet.dns")

CLUSTER_DOMAIN = "cluster.local"
SERVICES = ("", "v1", "services")
TTL = 5
TYPE_A = 1
TYPE_SOA = 6
CLASS_IN = 1
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    name: str  # lower case, no trailing dot
    qtype: int
    qclass: int
    question: bytes  # the question section as asked (echoed back)


def parse_query(data: bytes) -> Query:
    """The first question of a DNS message; ValueError when it is malformed."""
    if len(data) < 12:
        raise ValueError("short header")
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    if qdcount < 1:
        raise ValueError("no question")
    labels = []
    pos = 12
    while True:
        if pos >= len(data):
            raise ValueError("truncated name")
        length = data[pos]
        if length & 0xC0:
            raise ValueError("compressed name in a question")
        pos += 1
        if length == 0:
            break
        labels.append(data[pos : pos + length].decode("ascii", errors="replace"))
        pos += length
    if pos + 4 > len(data):
        raise ValueError("truncated question")
    qtype, qclass = struct.unpack("!HH", data[pos : pos + 4])
    return Query(qid, flags, ".".join(labels).lower(), qtype, qclass, data[12 : pos + 4])


def _encode_name(name: str) -> bytes:
    out = b""
    for label in name.strip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\x00"


def _soa() -> bytes:
    rdata = (
        _encode_name(f"ns.dns.{CLUSTER_DOMAIN}")
        + _encode_name(f"hostmaster.{CLUSTER_DOMAIN}")
        + struct.pack("!IIIII", 1, 7200, 1800, 86400, TTL)
    )
    return _encode_name(CLUSTER_DOMAIN) + struct.pack("!HHIH", TYPE_SOA, CLASS_IN, TTL, len(rdata)) + rdata


def build_response(q: Query, rcode: int, addresses: list[str]) -> bytes:
    """The answer to `q`: A records for `addresses` (when it asked for A), the SOA on a negative answer."""
    answers = b""
    count = 0
    if rcode == NOERROR and q.qtype == TYPE_A and q.qclass == CLASS_IN:
        for a in addresses:
            rdata = bytes(int(x) for x in a.split("."))
            answers += b"\xc0\x0c" + struct.pack("!HHIH", TYPE_A, CLASS_IN, TTL, 4) + rdata
            count += 1
    authority = b""
    ns_count = 0
    in_zone = q.name == CLUSTER_DOMAIN or q.name.endswith("." + CLUSTER_DOMAIN)
    if count == 0 and rcode in (NOERROR, NXDOMAIN) and in_zone:
        authority = _soa()
        ns_count = 1
    # QR, opcode from the query, AA for our zone, RD echoed, RA set.
    flags = 0x8000 | (q.flags & 0x7800) | (0x0400 if in_zone else 0) | (q.flags & 0x0100) | 0x0080 | rcode
    header = struct.pack("!HHHHHH", q.id, flags, 1, count, ns_count, 0)
    return header + q.question + answers + authority


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def endpoints(store: Store, service: dict[str, Any]) -> list[dict[str, Any]]:
    """The pods that are the Service's endpoint addresses (see module docstring), by name."""
    spec = service.get("spec") or {}
    selector = spec.get("selector")
    if not selector:
        return []
    ns = service["metadata"].get("namespace", "default")
    sel = label_selector_from_dict({"matchLabels": selector})
    pods, _ = store.list(PODS, ns)
    out = []
    for p in pods:
        status = p.get("status") or {}
        if p["metadata"].get("deletionTimestamp") or status.get("phase") in ("Succeeded", "Failed"):
            continue
        if not status.get("podIP") or not sel.matches(p["metadata"].get("labels") or {}):
            continue
        if _ready(p) or spec.get("publishNotReadyAddresses"):
            out.append(p)
    return sorted(out, key=lambda p: p["metadata"]["name"])


def records(store: Store, name: str) -> list[str] | None:
    """The A records of `name` (lower case, no trailing dot); [] for a name with none; None: NXDOMAIN."""
    suffix = f".svc.{CLUSTER_DOMAIN}"
    if name in (CLUSTER_DOMAIN, f"svc.{CLUSTER_DOMAIN}"):
        return []
    if not name.endswith(suffix):
        return None
    parts = name[: -len(suffix)].split(".")
    if len(parts) not in (2, 3):
        return None
    ns, svc_name = parts[-1], parts[-2]
    service = store.get(SERVICES, ns, svc_name)
    if service is None:
        return None
    spec = service.get("spec") or {}
    headless = spec.get("clusterIP") == "None"
    if len(parts) == 2:
        if not headless:
            return [str(spec["clusterIP"])] if spec.get("clusterIP") else []
        ips = [str(p["status"]["podIP"]) for p in endpoints(store, service)]
        return ips or None
    if not headless:
        return None
    host = parts[0]
    found = [
        str(p["status"]["podIP"])
        for p in endpoints(store, service)
        if str((p.get("spec") or {}).get("hostname") or "").lower() == host
        and (p.get("spec") or {}).get("subdomain") == svc_name
    ]
    return found or None


Upstream = tuple[str, int]


def host_nameservers(path: str = "/etc/resolv.conf") -> list[Upstream]:
    """The IPv4 nameservers of this machine's resolv.conf, port 53."""
    out: list[Upstream] = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver" and parts[1].count(".") == 3:
                    out.append((parts[1], 53))
    except OSError:
        pass
    return out


class _Client(asyncio.DatagramProtocol):
    def __init__(self, got: asyncio.Future[bytes]) -> None:
        self.got = got

    def datagram_received(self, reply: bytes, addr: Any) -> None:
        if not self.got.done():
            self.got.set_result(reply)

    def error_received(self, exc: Exception) -> None:
        if not self.got.done():
            self.got.set_exception(exc)


async def forward(data: bytes, upstreams: list[Upstream], timeout: float = 2.0) -> bytes | None:
    """`data` asked of each upstream in turn over UDP; the first answer, None when none answers."""
    loop = asyncio.get_running_loop()
    for server in upstreams:
        got: asyncio.Future[bytes] = loop.create_future()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                functools.partial(_Client, got), remote_addr=server
            )
        except OSError:
            continue
        try:
            transport.sendto(data)
            return await asyncio.wait_for(got, timeout)
        except (OSError, TimeoutError):
            continue
        finally:
            transport.close()
    return None


async def respond(store: Store, data: bytes, upstreams: list[Upstream], timeout: float = 2.0) -> bytes | None:
    """The response to one DNS message: our zone from the store, other names forwarded."""
    try:
        q = parse_query(data)
    except ValueError:
        return answer(store, data)
    in_zone = q.name == CLUSTER_DOMAIN or q.name.endswith("." + CLUSTER_DOMAIN)
    if in_zone or not upstreams or (q.flags >> 11) & 0xF != 0:
        return answer(store, data)
    reply = await forward(data, upstreams, timeout)
    return reply if reply is not None else build_response(q, SERVFAIL, [])


def answer(store: Store, data: bytes) -> bytes | None:
    """The response to one DNS message (None: too malformed to answer)."""
    try:
        q = parse_query(data)
    except ValueError:
        if len(data) >= 2:
            qid = struct.unpack("!H", data[:2])[0]
            return struct.pack("!HHHHHH", qid, 0x8000 | FORMERR, 0, 0, 0, 0)
        return None
    if (q.flags >> 11) & 0xF != 0:
        return build_response(q, NOTIMP, [])
    try:
        found = records(store, q.name)
    except Exception:
        log.exception("dns: lookup of %s failed", q.name)
        return build_response(q, SERVFAIL, [])
    if found is None:
        return build_response(q, NXDOMAIN, [])
    return build_response(q, NOERROR, found)


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None
        self._pending: set[asyncio.Future[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        task = asyncio.ensure_future(self._reply(data, addr))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _reply(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = await respond(self.server.store, data, self.server.upstreams, self.server.timeout)
        if reply is not None and self.transport is not None:
            if len(reply) > 512:
                reply = _truncated(reply)
            self.transport.sendto(reply, addr)


def _truncated(reply: bytes) -> bytes:
    """Past the classic 512-byte UDP limit: the header with TC set and the question only (retry on TCP)."""
    qid, flags = struct.unpack("!HH", reply[:4])
    q = parse_query(reply[:12] + reply[12:])
    return struct.pack("!HHHHHH", qid, flags | 0x0200, 1, 0, 0, 0) + q.question


class DnsServer:
    """Serves `records` on `address`:`port` over UDP and TCP."""

    def __init__(
        self,
        store: Store,
        address: str,
        port: int = 53,
        upstreams: list[Upstream] | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.store = store
        self.address = address
        self.port = port
        self.upstreams = host_nameservers() if upstreams is None else upstreams
        self.timeout = timeout
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tcp = await asyncio.start_server(self._handle_tcp, self.address, self.port)
        self.port = self._tcp.sockets[0].getsockname()[1]  # port 0: UDP takes the same one
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(self.address, self.port)
            )
        except BaseException:
            await self.stop()
            raise
        self._udp = transport

    async def _handle_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(2)
                data = await reader.readexactly(struct.unpack("!H", head)[0])
                reply = await respond(self.store, data, self.upstreams, self.timeout)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await self._tcp.wait_closed()
            self._tcp = None
