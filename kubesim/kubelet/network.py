"""The pod network: one Linux bridge per kubesim, a veth pair and an address per pod.

At start the kubelet makes a bridge `ksim<pid hex><n>` with the address `10.N.0.1/16`, where
`10.N.0.0/16` is a /16 that no interface or route of this machine uses yet (chosen under a lock
file, so kubesims starting side by side never pick the same one). Each isolated pod then gets:

* a veth pair: the host end `kv<pid hex>x<n>` enslaved to the bridge, the other end moved into the
  pod's network namespace and renamed `eth0`;
* the next free address of the /16 on `eth0`, and a default route through the bridge address.

Pods reach each other through the bridge (every pod of one kubesim is on its one node); the
host reaches them too (the bridge has an address). Nothing is NATed: pods have no way out of
the machine, as on an isolated cluster network. `detach` deletes a pod's host end (the other end
goes with it, as it does when the pod's namespace ends); `stop` deletes the bridge. Bridges left
by a kubesim that died without stopping are removed by the next one that starts: each kubesim
holds an flock on `/run/lock/kubesim-<bridge>.lock` while its bridge lives, so a free lock (or, with
no lock file, a pid in the name that no longer runs) marks a bridge as abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import itertools
import logging
import os
import re
import subprocess
from typing import Any

__all__ = ["NetworkError", "PodNetwork", "hosts_file", "resolv_conf"]

log = logging.getLogger("kubesim.kubelet.network")

LOCK_FILE = "/run/lock/kubesim-network.lock"
BRIDGE_PREFIX = "ksim"
# Second octets tried for the /16, in order: far from the usual 10.0-10.10 and 10.96 (services).
CANDIDATE_OCTETS = tuple(range(200, 255))
_seq = itertools.count()


class NetworkError(RuntimeError):
    """A pod's or the bridge's network could not be set up (the words of `ip`)."""


def _ip(*args: str, pid: int | None = None) -> str:
    argv = ["ip", *args]
    if pid is not None:
        argv = ["nsenter", "-t", str(pid), "-n", *argv]
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise NetworkError(f"{' '.join(argv)}: {r.stderr.strip() or f'exit {r.returncode}'}")
    return r.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner_lock(bridge: str) -> str:
    return os.path.join(os.path.dirname(LOCK_FILE), f"kubesim-{bridge}.lock")


def _abandoned(bridge: str, pid: int) -> bool:
    """Whether no running kubesim owns `bridge`: its owner's lock is free, or (no lock file) its pid is gone."""
    try:
        fd = os.open(_owner_lock(bridge), os.O_RDWR)
    except FileNotFoundError:
        return not _alive(pid)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _remove_stale_bridges() -> None:
    """Delete the bridges of kubesims that are gone (see `_abandoned`)."""
    for line in _ip("-o", "link", "show", "type", "bridge").splitlines():
        m = re.match(rf"\d+: ({BRIDGE_PREFIX}([0-9a-f]+)x[0-9a-f]+)[:@]", line)
        if m and _abandoned(m.group(1), int(m.group(2), 16)):
            with contextlib.suppress(NetworkError):
                _ip("link", "del", m.group(1))
                log.info("removed the stale pod bridge %s", m.group(1))
            with contextlib.suppress(OSError):
                os.unlink(_owner_lock(m.group(1)))


def _used_networks() -> list[ipaddress.IPv4Network]:
    used = []
    for line in _ip("-4", "-o", "addr", "show").splitlines() + _ip("-4", "route", "show").splitlines():
        for token in re.findall(r"\b\d+\.\d+\.\d+\.\d+(?:/\d+)?\b", line):
            with contextlib.suppress(ValueError):
                used.append(ipaddress.IPv4Network(token, strict=False))
    return used


class PodNetwork:
    """The bridge of one kubesim and the pods' addresses on it (see module docstring)."""

    def __init__(self) -> None:
        n = next(_seq)
        self.bridge = f"{BRIDGE_PREFIX}{os.getpid():x}x{n:x}"
        self._veth_prefix = f"kv{os.getpid():x}x{n:x}"[:10]
        self.subnet: ipaddress.IPv4Network | None = None
        self.gateway = ""
        self._next = 2
        self._by_uid: dict[str, tuple[str, str]] = {}  # pod uid -> (address, host veth)
        self._veths = itertools.count()
        self._owner_fd: int | None = None  # held (flock) while this bridge lives

    # ------------------------------------------------------------------ bridge

    def start_sync(self) -> None:
        os.makedirs(os.path.dirname(LOCK_FILE), exist_ok=True)
        with open(LOCK_FILE, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            _remove_stale_bridges()
            used = _used_networks()
            for octet in CANDIDATE_OCTETS:
                net = ipaddress.IPv4Network(f"10.{octet}.0.0/16")
                if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
                    break
            else:
                raise NetworkError("no free 10.N.0.0/16 for the pod network")
            self.subnet = net
            self.gateway = str(net.network_address + 1)
            self._owner_fd = os.open(_owner_lock(self.bridge), os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self._owner_fd, fcntl.LOCK_EX)
            try:
                _ip("link", "add", self.bridge, "type", "bridge")
                _ip("addr", "add", f"{self.gateway}/16", "dev", self.bridge)
                _ip("link", "set", self.bridge, "up")
            except NetworkError:
                self.stop_sync()
                raise
        log.info("pod network %s on bridge %s", net, self.bridge)

    async def start(self) -> None:
        await asyncio.to_thread(self.start_sync)

    def stop_sync(self) -> None:
        for _, veth in list(self._by_uid.values()):
            with contextlib.suppress(NetworkError):
                _ip("link", "del", veth)
        self._by_uid.clear()
        if self.subnet is not None:
            with contextlib.suppress(NetworkError):
                _ip("link", "del", self.bridge)
            self.subnet = None
        if self._owner_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(_owner_lock(self.bridge))
            os.close(self._owner_fd)
            self._owner_fd = None

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)

    # ------------------------------------------------------------------ pods

    def _allocate(self) -> str:
        assert self.subnet is not None
        taken = {a for a, _ in self._by_uid.values()}
        size = self.subnet.num_addresses
        for _ in range(size):
            n, self._next = self._next, self._next + 1
            if self._next >= size - 1:
                self._next = 2
            address = str(self.subnet.network_address + n)
            if address not in taken:
                return address
        raise NetworkError(f"the pod network {self.subnet} has no free address")

    def attach_sync(self, uid: str, pid: int) -> str:
        """Give the pod whose network namespace `pid` holds an eth0 and an address; returns it."""
        if self.subnet is None:
            raise NetworkError("the pod network is not running")
        if uid in self._by_uid:
            self.detach_sync(uid)
        address = self._allocate()
        host_end = f"{self._veth_prefix}v{next(self._veths):x}"[:15]
        pod_end = f"{host_end[:13]}p"
        _ip("link", "add", host_end, "type", "veth", "peer", "name", pod_end)
        self._by_uid[uid] = (address, host_end)
        try:
            _ip("link", "set", pod_end, "netns", str(pid))
            _ip("link", "set", host_end, "master", self.bridge, "up")
            _ip("link", "set", pod_end, "name", "eth0", pid=pid)
            _ip("addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0", pid=pid)
            _ip("link", "set", "eth0", "up", pid=pid)
            _ip("route", "add", "default", "via", self.gateway, pid=pid)
        except NetworkError:
            self.detach_sync(uid)
            raise
        return address

    async def attach(self, uid: str, pid: int) -> str:
        return await asyncio.to_thread(self.attach_sync, uid, pid)

    def detach_sync(self, uid: str) -> None:
        entry = self._by_uid.pop(uid, None)
        if entry is None:
            return
        with contextlib.suppress(NetworkError):
            _ip("link", "del", entry[1])

    async def detach(self, uid: str) -> None:
        await asyncio.to_thread(self.detach_sync, uid)

    def address_of(self, uid: str) -> str | None:
        entry = self._by_uid.get(uid)
        return entry[0] if entry else None


# --------------------------------------------------------------------------- files the kubelet writes

CLUSTER_DOMAIN = "cluster.local"


def hosts_file(pod: dict[str, Any], address: str) -> str:
    """The kubelet-managed /etc/hosts of a pod: localhost, then the pod's address and names.

    With `spec.subdomain` the pod's line is `IP\\tHOSTNAME.SUBDOMAIN.NS.svc.cluster.local\\tHOSTNAME`
    as the kubelet writes it; else `IP\\tHOSTNAME`. `spec.hostAliases` follow.
    """
    md = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    hostname = str(spec.get("hostname") or md.get("name") or "")[:63]
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    if spec.get("subdomain"):
        fqdn = f"{hostname}.{spec['subdomain']}.{md.get('namespace', 'default')}.svc.{CLUSTER_DOMAIN}"
        lines.append(f"{address}\t{fqdn}\t{hostname}")
    else:
        lines.append(f"{address}\t{hostname}")
    aliases = spec.get("hostAliases") or []
    if aliases:
        lines.append("")
        lines.append("# Entries added by HostAliases.")
        for alias in aliases:
            lines.append(f"{alias.get('ip', '')}\t" + "\t".join(alias.get("hostnames") or []))
    return "\n".join(lines) + "\n"


def resolv_conf(pod: dict[str, Any], nameserver: str) -> str | None:
    """The pod's /etc/resolv.conf under its dnsPolicy (None: the node's own, for dnsPolicy Default).

    ClusterFirst (the default): the cluster DNS, search `NS.svc.cluster.local svc.cluster.local
    cluster.local`, `options ndots:5`; `dnsConfig` adds nameservers and searches and sets options.
    None: only what `dnsConfig` says.
    """
    md = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "Default":
        return None
    config = spec.get("dnsConfig") or {}
    servers: list[str] = []
    searches: list[str] = []
    options: dict[str, str | None] = {}
    if policy != "None":
        ns = md.get("namespace", "default")
        servers = [nameserver]
        searches = [f"{ns}.svc.{CLUSTER_DOMAIN}", f"svc.{CLUSTER_DOMAIN}", CLUSTER_DOMAIN]
        options = {"ndots": "5"}
    servers += [str(s) for s in config.get("nameservers") or [] if str(s) not in servers]
    searches += [str(s) for s in config.get("searches") or [] if str(s) not in searches]
    for option in config.get("options") or []:
        options[str(option.get("name"))] = None if option.get("value") is None else str(option["value"])
    lines = []
    if searches:
        lines.append("search " + " ".join(searches))
    lines += [f"nameserver {s}" for s in servers]
    if options:
        lines.append("options " + " ".join(k if v is None else f"{k}:{v}" for k, v in options.items()))
    return "\n".join(lines) + "\n"
