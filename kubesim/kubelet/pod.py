"""One pod's life on the node: images, sandbox, init containers, containers, restarts, deletion.

A `PodWorker` owns everything that runs for one pod uid. It reports through the `Kubelet`
(status writes and events go to the store there). Lifecycle:

1. resolve every container's image (missing: ErrImagePull, then ImagePullBackOff, retried with
   a capped backoff; the pod stays Pending);
2. materialise the volumes, start the sandbox (or report NoIsolation), start the host-port
   relays inside it;
3. run init containers one by one to success (a failure is retried per restartPolicy, or fails
   the pod under Never);
4. run the containers, each in its own loop that restarts it per restartPolicy with backoff;
5. when every container is done for good, the pod is terminal: the sandbox goes, logs stay.

Every start of a container is a new instance, as with a real runtime: a new containerID, a fresh
filesystem from its image (`kubesim.kubelet.containerfs`) in a mount namespace of its own, and the
pod's volumes, which are all that outlives it. When an instance ends, whatever still runs in it
(commands exec'd into it included) is killed and its filesystem removed.

Deletion (`deletionTimestamp` set) stops every container (SIGTERM, grace, SIGKILL), removes the
sandbox and finishes the delete in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kubesim.errors import now_rfc3339
from kubesim.identity import (
    Identity,
    NonRootViolation,
    UnknownUser,
    host_group,
    host_passwd,
    resolve_identity,
)
from kubesim.images import Image, ImageStore, InvalidReference
from kubesim.images.registry import Presented, RegistryPolicy, pull_refusal, pull_secret_credentials
from kubesim.kubelet.containerfs import InstanceFS, effective_workdir, host_path, instance_fs
from kubesim.kubelet.logs import LogFile
from kubesim.kubelet.namespaces import ContainerNamespace, Mount, Sandbox, Tmpfs
from kubesim.kubelet.network import NetworkError, PodNetwork, hosts_file, resolv_conf
from kubesim.kubelet.probes import ProbeRunner
from kubesim.kubelet.relay import splice
from kubesim.kubelet.runtime import ContainerProcess
from kubesim.kubelet.spec import SYSTEM_PATH, ConfigError, Lookup, resolve_argv, resolve_env
from kubesim.kubelet.status import ContainerView, PodFacts, Terminated, pod_status, will_restart
from kubesim.kubelet.volumes import (
    SHM_PATH,
    SHM_SIZE,
    memory_volumes,
    pod_volumes,
    read_only_volumes,
    volume_mounts,
)

__all__ = ["ExecTarget", "NodeAgent", "PodWorker"]


class RuntimeSettings(Protocol):
    """The kubelet settings a pod worker reads (`kubesim.kubelet.kubelet.KubeletConfig`)."""

    @property
    def api_port(self) -> int | None: ...
    @property
    def backoff_max(self) -> float: ...
    def backoff_delay(self, attempt: int) -> float: ...


class NodeAgent(Protocol):
    """What a pod worker uses of the node agent that owns it (`kubesim.kubelet.kubelet.Kubelet`).

    Written down here so the worker depends on these few members, not on the kubelet module.
    """

    @property
    def config(self) -> RuntimeSettings: ...
    @property
    def images(self) -> ImageStore: ...
    @property
    def host_ports(self) -> set[int]: ...
    @property
    def python_bin_dir(self) -> str: ...
    @property
    def state_dir(self) -> Path: ...
    @property
    def network(self) -> PodNetwork | None: ...
    @property
    def dns_address(self) -> str | None: ...
    @property
    def network_problem(self) -> str: ...
    @property
    def node_name(self) -> str: ...
    def attach_conflict(self, pod: dict[str, Any], node: str) -> str | None: ...
    def detach_volumes(self, uid: str) -> None: ...
    def normalize_image(self, ref: str) -> str: ...
    def lookup_fn(self, namespace: str) -> Lookup: ...
    def write_status(
        self, worker: PodWorker, compute: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> None: ...
    def event(
        self,
        namespace: str,
        ref: dict[str, Any],
        reason: str,
        message: str,
        type: str = "Normal",
        component: str = "kubelet",
    ) -> None: ...


log = logging.getLogger("kubesim.kubelet.pod")


class _Gone(Exception):
    """The pod object was replaced or removed: stop writing its status."""


class ExecTarget:
    """How to run a command in a container instance: argv prefix, environment, working directory.

    `view` maps the instance's container paths to host paths as they were at its start, and
    `root` is its `/` as kubesim reaches it (None without namespaces): both serve the checks
    that a command exists before it is run.
    """

    def __init__(
        self,
        prefix: list[str],
        env: dict[str, str],
        cwd: str | None,
        workdir: str,
        view: list[Mount] | None = None,
        root: str | None = None,
    ) -> None:
        self.prefix = prefix
        self.env = env
        self.cwd = cwd
        self.workdir = workdir
        self.view = view or []
        self.root = root


@dataclass
class _Instance:
    """One started container instance: its id, filesystem and mount namespace (None: no isolation)."""

    container_id: str
    fs: InstanceFS
    namespace: ContainerNamespace | None


class PodWorker:
    def __init__(self, kubelet: NodeAgent, pod: dict[str, Any]) -> None:
        self.kubelet = kubelet
        self.pod = pod
        md = pod["metadata"]
        self.namespace: str = md.get("namespace", "default")
        self.name: str = md["name"]
        self.uid: str = md["uid"]
        spec = pod.get("spec") or {}
        self.restart_policy: str = spec.get("restartPolicy") or "Always"
        self.init_specs: list[dict[str, Any]] = list(spec.get("initContainers") or [])
        self.specs: list[dict[str, Any]] = list(spec.get("containers") or [])
        self.init_views = [
            ContainerView(c["name"], c.get("image", ""), waiting_reason="PodInitializing")
            for c in self.init_specs
        ]
        self.views = [
            ContainerView(
                c["name"],
                c.get("image", ""),
                waiting_reason="PodInitializing" if self.init_specs else "ContainerCreating",
            )
            for c in self.specs
        ]
        if self.init_views:
            self.init_views[0].waiting_reason = "ContainerCreating"
        self.dir = kubelet.state_dir / "pods" / f"{self.namespace}_{self.name}_{self.uid}"
        # The pod's hostname: spec.hostname when set (an Indexed Job's pods get one), else its name.
        self.hostname: str = str(spec.get("hostname") or self.name)[:63]
        self.sandbox = Sandbox(self.hostname, host_network=bool(spec.get("hostNetwork")))
        self.volume_dirs: dict[str, Path] = {}
        self.pod_ip = "127.0.0.1"  # its own address once the sandbox is on the pod network
        self.dns_mounts: list[Mount] = []  # /etc/hosts and /etc/resolv.conf of every container
        self.live: dict[str, _Instance] = {}  # container name -> its current instance
        self.images: dict[str, Image | None] = {}
        self.procs: dict[str, ContainerProcess] = {}
        self.targets: dict[str, ExecTarget] = {}
        self.logs: dict[str, LogFile] = {}
        self.instances: dict[str, int] = {}
        self.exec_procs: set[asyncio.subprocess.Process] = set()
        self.relays: list[asyncio.AbstractServer] = []
        self.relay_ports: set[int] = set()
        self.start_time = now_rfc3339()
        self.init_done = not self.init_specs
        self.sandbox_ready = False
        self.terminating = False
        self.deleting = False  # a graceful deletion is under way (set by the kubelet)
        self.removed = False
        self.terminal = False
        self._wakeups: dict[str, asyncio.Event] = {}
        self.task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()

    # ------------------------------------------------------------------ helpers

    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    def view(self, name: str) -> ContainerView | None:
        for v in self.init_views + self.views:
            if v.name == name:
                return v
        return None

    def container_names(self) -> list[str]:
        return [c["name"] for c in self.specs]

    def init_names(self) -> list[str]:
        return [c["name"] for c in self.init_specs]

    def log_path(self, container: str, instance: int) -> Path:
        return self.dir / "logs" / container / f"{instance}.log"

    def publish(self) -> None:
        """Write the pod's status from the views (no-op once the pod is gone)."""
        if self.removed:
            return
        facts = PodFacts(
            start_time=self.start_time,
            sandbox_ready=self.sandbox_ready,
            init_done=self.init_done,
            pod_ip=self.pod_ip,
        )
        try:
            self.kubelet.write_status(
                self, lambda pod: pod_status(pod, self.init_views, self.views, facts, now_rfc3339())
            )
        except _Gone:
            self.removed = True

    def event(self, reason: str, message: str, type: str = "Normal", field_path: str | None = None) -> None:
        if self.removed:
            return
        ref: dict[str, Any] = {
            "kind": "Pod",
            "apiVersion": "v1",
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }
        if field_path:
            ref["fieldPath"] = field_path
        self.kubelet.event(self.namespace, ref, reason, message, type)

    def _spawn(self, coro: Any) -> asyncio.Future[Any]:
        t: asyncio.Future[Any] = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    async def _sleep(self, seconds: float, key: str = "") -> None:
        """Sleep, cut short by `wake(key)` (used to interrupt backoffs on deletion)."""
        ev = self._wakeups.setdefault(key, asyncio.Event())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(ev.wait(), seconds)
        ev.clear()

    def wake(self) -> None:
        for ev in self._wakeups.values():
            ev.set()

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.publish()
            if not await self._pull_images():
                return
            if not await self._setup_sandbox():
                return
            if not await self._run_init():
                return
            self.init_done = True
            loops = [self._spawn(self._container_loop(i)) for i in range(len(self.specs))]
            self.publish()
            await asyncio.gather(*loops, return_exceptions=True)
            if not self.terminating and not self.removed:
                self.terminal = True
                self.publish()
                await self._teardown()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pod %s/%s worker failed", self.namespace, self.name)

    def _pull_credentials(self) -> Presented:
        """What the pod's imagePullSecrets present to registries (missing Secrets present nothing)."""
        lookup = self.kubelet.lookup_fn(self.namespace)
        found = []
        for ref in (self.pod.get("spec") or {}).get("imagePullSecrets") or []:
            secret = lookup("Secret", str((ref or {}).get("name") or ""))
            if secret is not None:
                found.append(secret)
        return pull_secret_credentials(found)

    async def _pull_images(self) -> bool:
        attempt = 0
        policy = RegistryPolicy(self.kubelet.images.root)
        while not self.terminating:
            missing = []
            refused: dict[str, str] = {}
            presented = self._pull_credentials()
            for c, v in zip(self.init_specs + self.specs, self.init_views + self.views):
                if self.images.get(c["name"]) is not None:
                    continue
                ref = c.get("image", "")
                try:
                    # Resolving may make an image's first layer (the python base): off the loop.
                    image = await asyncio.to_thread(self.kubelet.images.get, ref)
                except InvalidReference as e:
                    image = None
                    v.waiting_reason, v.waiting_message = (
                        "InvalidImageName",
                        f'Failed to apply default image tag "{ref}": {e}',
                    )
                    missing.append(c)
                    continue
                if image is None:
                    missing.append(c)
                    continue
                failure = policy.check(ref, presented)
                if failure is not None:
                    refused[c["name"]] = pull_refusal(failure)
                    missing.append(c)
                    continue
                self.images[c["name"]] = image
                v.image_id = image.name
                self.event(
                    "Pulled",
                    f'Container image "{ref}" already present on machine',
                    field_path=f"spec.containers{{{c['name']}}}",
                )
            if not missing:
                return True
            for c in missing:
                mv = self.view(c["name"])
                assert mv is not None
                v = mv
                ref = c.get("image", "")
                if v.waiting_reason == "InvalidImageName":
                    continue
                full = self.kubelet.normalize_image(ref)
                if c["name"] in refused:
                    msg = (
                        f'Failed to pull image "{ref}": rpc error: code = Unknown desc = failed to pull and unpack '
                        f'image "{full}": failed to resolve reference "{full}": {refused[c["name"]]}'
                    )
                else:
                    msg = (
                        f'Failed to pull image "{ref}": rpc error: code = NotFound desc = failed to pull and '
                        f'unpack image "{full}": failed to resolve reference "{full}": {full}: not found'
                    )
                fp = f"spec.containers{{{c['name']}}}"
                if attempt == 0 or v.waiting_reason == "ImagePullBackOff":
                    self.event("Pulling", f'Pulling image "{ref}"', field_path=fp)
                    self.event("Failed", msg, "Warning", fp)
                    self.event("Failed", "Error: ErrImagePull", "Warning", fp)
                    v.waiting_reason, v.waiting_message = "ErrImagePull", msg
                else:
                    v.waiting_reason, v.waiting_message = (
                        "ImagePullBackOff",
                        f'Back-off pulling image "{ref}"',
                    )
                    self.event("BackOff", f'Back-off pulling image "{ref}"', field_path=fp)
                    self.event("Failed", "Error: ImagePullBackOff", "Warning", fp)
            self.publish()
            delay = self.kubelet.config.backoff_delay(attempt)
            attempt += 1
            await self._sleep(delay)
            # Between tries the container shows ImagePullBackOff, as a cluster does.
            for c in missing:
                bv = self.view(c["name"])
                if bv is not None and bv.waiting_reason == "ErrImagePull":
                    bv.waiting_reason, bv.waiting_message = (
                        "ImagePullBackOff",
                        f'Back-off pulling image "{c.get("image", "")}"',
                    )
                    self.event(
                        "BackOff",
                        f'Back-off pulling image "{c.get("image", "")}"',
                        field_path=f"spec.containers{{{c['name']}}}",
                    )
                    self.event(
                        "Failed", "Error: ImagePullBackOff", "Warning", f"spec.containers{{{c['name']}}}"
                    )
            self.publish()
            await self._sleep(delay)
        return False

    async def _setup_sandbox(self) -> bool:
        attempt = 0
        while not self.terminating:
            # The attach-detach controller first: a ReadWriteOnce volume attached to another node
            # keeps the pod ContainerCreating, retried, as on a real cluster.
            conflict = self.kubelet.attach_conflict(self.pod, self.kubelet.node_name)
            if conflict is None:
                break
            self.kubelet.event(
                self.namespace,
                {
                    "kind": "Pod",
                    "apiVersion": "v1",
                    "namespace": self.namespace,
                    "name": self.name,
                    "uid": self.uid,
                },
                "FailedAttachVolume",
                conflict,
                "Warning",
                component="attachdetach-controller",
            )
            await self._sleep(self.kubelet.config.backoff_delay(attempt))
            attempt += 1
        attempt = 0
        while not self.terminating:
            try:
                self.volume_dirs = await asyncio.to_thread(
                    pod_volumes,
                    self.pod,
                    self.dir,
                    self.kubelet.state_dir,
                    self.kubelet.lookup_fn(self.namespace),
                )
                break
            except ConfigError as e:
                self.event("FailedMount", str(e), "Warning")
                await self._sleep(self.kubelet.config.backoff_delay(attempt))
                attempt += 1
        attempt = 0
        while True:
            if self.terminating:
                return False
            try:
                # The pod's sandbox mounts only its tmpfs (shared by its containers): each container
                # instance bind-mounts its own volumes.
                await self.sandbox.start([], self._tmpfs())
                await self._attach_network()
                break
            except NetworkError as e:
                # As a CNI failure is reported: the sandbox goes and is made again later.
                await self.sandbox.stop()
                self.event(
                    "FailedCreatePodSandBox",
                    f"Failed to create pod sandbox: failed to setup network for sandbox: {e}",
                    "Warning",
                )
                log.error("pod %s/%s: %s", self.namespace, self.name, e)
                await self._sleep(self.kubelet.config.backoff_delay(attempt))
                attempt += 1
            except RuntimeError as e:
                # As the kubelet does, keep retrying: the cause may be transient.
                self.event("FailedCreatePodSandBox", f"Failed to create pod sandbox: {e}", "Warning")
                log.error("pod %s/%s: %s", self.namespace, self.name, e)
                for v in self.init_views + self.views:
                    v.waiting_reason, v.waiting_message = "ContainerCreating", str(e)
                self.publish()
                await self._sleep(self.kubelet.config.backoff_delay(attempt))
                attempt += 1
        if not self.sandbox.isolated:
            msg = (
                f"pod runs without namespace isolation: {self.sandbox.reason}; it has no address of its own "
                "(podIP 127.0.0.1) and no cluster DNS"
            )
            log.warning("pod %s/%s: %s", self.namespace, self.name, msg)
            self.event("NoIsolation", msg, "Warning")
        elif not self.sandbox.host_network and self.kubelet.network is None:
            msg = f"pod has only a loopback interface: {self.kubelet.network_problem}"
            log.warning("pod %s/%s: %s", self.namespace, self.name, msg)
            self.event("NoPodNetwork", msg, "Warning")
        else:
            for port in sorted(self.kubelet.host_ports):
                await self.add_relay(port)
        self.sandbox_ready = True
        return True

    async def _attach_network(self) -> None:
        """Put the sandbox on the pod network and write the pod's /etc/hosts and /etc/resolv.conf."""
        network = self.kubelet.network
        if not self.sandbox.isolated or self.sandbox.host_network or network is None:
            return
        assert self.sandbox.pid is not None
        self.pod_ip = await network.attach(self.uid, self.sandbox.pid)
        etc = self.dir / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(hosts_file(self.pod, self.pod_ip))
        self.dns_mounts = [Mount(str(etc / "hosts"), "/etc/hosts", is_file=True)]
        resolv = resolv_conf(self.pod, self.kubelet.dns_address or "")
        if resolv is not None:
            (etc / "resolv.conf").write_text(resolv)
            self.dns_mounts.append(Mount(str(etc / "resolv.conf"), "/etc/resolv.conf", is_file=True))

    async def add_relay(self, port: int) -> None:
        """Listen on 127.0.0.1:`port` inside the pod and relay to the host's 127.0.0.1:`port`."""
        if (
            not self.sandbox.isolated
            or self.sandbox.host_network
            or port in self.relay_ports
            or self.terminating
            or self.terminal
        ):
            return
        try:
            sock = await self.sandbox.listen(port)
        except OSError as e:
            self.event("HostPortRelayFailed", f"cannot relay host port {port} into the pod: {e}", "Warning")
            return

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
            except OSError:
                writer.close()
                return
            await splice((reader, writer), up)

        server = await asyncio.start_server(handle, sock=sock, limit=2**20)
        self.relays.append(server)
        self.relay_ports.add(port)

    # ------------------------------------------------------------------ containers

    def _command(self, c: dict[str, Any]) -> tuple[list[str], dict[str, str], str, list[Mount], Identity]:
        """The container's argv, environment, working directory, volume mounts and identity.

        Raises ConfigError (CreateContainerConfigError) when one cannot be resolved, and
        UnknownUser when the image's user is not in the passwd file (a start error).
        """
        image = self.images.get(c["name"])
        assert image is not None
        try:
            who = resolve_identity(self.pod, c, image.config.user, host_passwd, host_group)
        except NonRootViolation as e:
            raise ConfigError(str(e)) from e
        if image.config.userns_root:
            who = Identity(0, 0, (), "/root")
        base = {
            "PATH": os.pathsep.join([self.kubelet.python_bin_dir, SYSTEM_PATH]),
            "HOSTNAME": self.hostname,
            "HOME": who.home,
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.kubelet.config.api_port or 443),
        }
        # status.podIP in a fieldRef is the sandbox's address, known before the status says it.
        seen = dict(self.pod, status=dict(self.pod.get("status") or {}, podIP=self.pod_ip))
        env = resolve_env(seen, c, base, image.config.env, self.kubelet.lookup_fn(self.namespace))
        argv = resolve_argv(c, image.config.entrypoint, image.config.cmd, env)
        if not argv:
            raise ConfigError("no command specified")
        mounts = volume_mounts(c, self.volume_dirs, read_only_volumes(self.pod))
        # The kubelet's /etc/hosts and /etc/resolv.conf, unless the container mounts its own there.
        mounts += [m for m in self.dns_mounts if all(v.target != m.target for v in mounts)]
        if self.sandbox.isolated and all(os.path.normpath(v.target) != SHM_PATH for v in mounts):
            mounts.append(Mount(str(self.dir / "shm"), SHM_PATH))
        return argv, env, effective_workdir(c, image), mounts, who

    def _tmpfs(self) -> list[Tmpfs]:
        """The pod's memory-backed filesystems: its 64 MiB /dev/shm and its `medium: Memory` emptyDirs."""
        fs_group = ((self.pod.get("spec") or {}).get("securityContext") or {}).get("fsGroup")
        out = [Tmpfs(str(self.dir / "shm"), SHM_SIZE)]
        for name, size in memory_volumes(self.pod).items():
            if fs_group is None:
                out.append(Tmpfs(str(self.volume_dirs[name]), size, 0o777))
            else:
                # The kubelet's ownership management: the fsGroup, group rwx and setgid.
                out.append(Tmpfs(str(self.volume_dirs[name]), size, 0o2777, int(fs_group)))
        return out

    async def _create(self, c: dict[str, Any], instance: int, volumes: list[Mount]) -> _Instance:
        """A new instance of container `c`: its filesystem, fresh from the image, and its namespace.

        Raises OSError or RuntimeError when they cannot be made (nothing is left behind then).
        """
        name = c["name"]
        folder = self.dir / "containers" / name / str(instance)
        t0 = time.monotonic()
        fs = await asyncio.to_thread(
            instance_fs,
            self.images.get(name),
            c,
            volumes,
            folder,
            self.kubelet.images.layers,
            isolated=self.sandbox.isolated,
        )
        ns: ContainerNamespace | None = None
        if self.sandbox.isolated:
            ns = ContainerNamespace(self.sandbox)
            try:
                await ns.start(fs.overlay, fs.mounts)
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, folder, True)
                raise
        log.debug(
            "pod %s/%s container %s instance %d: filesystem ready in %.1f ms",
            self.namespace,
            self.name,
            name,
            instance,
            (time.monotonic() - t0) * 1000,
        )
        return _Instance(f"kubesim://{secrets.token_hex(32)}", fs, ns)

    async def _end(self, name: str) -> None:
        """Ends container `name`'s instance: kills what still runs in it, removes its filesystem."""
        inst = self.live.pop(name, None)
        if inst is None:
            return
        if inst.namespace is not None:
            await inst.namespace.stop()
        await asyncio.to_thread(shutil.rmtree, inst.fs.dir, True)

    def _check_executable(self, argv0: str, target: ExecTarget) -> str | None:
        """The runtime's start error when `argv0` cannot be executed in `target`, else None.

        A path is looked up in the instance itself (through its root) and in its start view; a
        bare name on PATH there or on this machine's (the system directories are shared).
        """
        path_dirs = target.env.get("PATH", SYSTEM_PATH)
        if "/" in argv0:
            path = os.path.normpath(os.path.join(target.workdir or "/", argv0))
            candidates = ([target.root + path] if target.root else []) + [host_path(path, target.view)]
            if any(os.path.isfile(p) and os.access(p, os.X_OK) for p in candidates):
                return None
            if any(os.path.isfile(p) for p in candidates):
                return f'exec: "{argv0}": permission denied'
            return f'exec: "{argv0}": stat {argv0}: no such file or directory'
        if shutil.which(argv0, path=path_dirs) is not None:
            return None
        if target.root is not None:
            inside = os.pathsep.join(
                target.root + d for d in path_dirs.split(os.pathsep) if d.startswith("/")
            )
            if shutil.which(argv0, path=inside) is not None:
                return None
        return f'exec: "{argv0}": executable file not found in $PATH'

    def _start_error(self, v: ContainerView, fp: str, problem: str, container_id: str = "") -> None:
        now = now_rfc3339()
        msg = (
            f"failed to create containerd task: failed to create shim task: OCI runtime create failed: "
            f"runc create failed: unable to start container process: {problem}: unknown"
        )
        v.waiting_reason = None
        v.running_since = None
        v.container_id = container_id or v.container_id
        v.terminated = Terminated(128, "StartError", now, now, msg, container_id=container_id)
        self.event("Failed", f"Error: {msg}", "Warning", fp)
        self.publish()

    async def _start(self, c: dict[str, Any], v: ContainerView) -> ContainerProcess | None:
        """Start one instance; on a start failure record a terminated StartError and return None."""
        name = c["name"]
        fp = f"spec.{'initContainers' if c in self.init_specs else 'containers'}{{{name}}}"
        try:
            argv, env, workdir, volumes, who = self._command(c)
        except ConfigError as e:
            v.waiting_reason, v.waiting_message = "CreateContainerConfigError", str(e)
            self.event("Failed", f"Error: {e}", "Warning", fp)
            self.publish()
            return None
        except UnknownUser as e:
            self._start_error(v, fp, str(e))
            return None
        instance = self.instances.get(name, -1) + 1
        self.instances[name] = instance
        try:
            inst = await self._create(c, instance, volumes)
        except (OSError, RuntimeError) as e:
            self._start_error(v, fp, f"error during container init: {e}")
            return None
        self.live[name] = inst
        # The container's processes, and every command exec'd into it, run as its identity.
        if inst.namespace is not None:
            target = ExecTarget(
                inst.namespace.enter(workdir) + who.prefix(),
                env,
                None,
                workdir,
                inst.fs.view,
                inst.namespace.root,
            )
        else:
            cwd = host_path(workdir, inst.fs.view)
            target = ExecTarget(
                who.prefix(), env, cwd if os.path.isdir(cwd) else str(self.dir), workdir, inst.fs.view
            )
        problem = self._check_executable(argv[0], target)
        if problem is not None:
            await self._end(name)
            self._start_error(v, fp, problem, inst.container_id)
            return None
        log_file = LogFile(self.log_path(name, instance))
        self.event("Created", f"Created container: {name}", field_path=fp)
        try:
            proc = await ContainerProcess.start(target.prefix + argv, target.env, target.cwd, log_file)
        except OSError as e:
            log_file.close()
            await self._end(name)
            now = now_rfc3339()
            v.waiting_reason = None
            v.container_id = inst.container_id
            v.terminated = Terminated(128, "StartError", now, now, str(e), container_id=inst.container_id)
            self.event("Failed", f"Error: {e}", "Warning", fp)
            self.publish()
            return None
        if name in self.logs:
            self.logs[name].close()
        self.logs[name] = log_file
        self.procs[name] = proc
        self.targets[name] = target
        v.container_id = inst.container_id
        v.waiting_reason, v.waiting_message = None, ""
        v.running_since = now_rfc3339()
        v.terminated = None
        v.ever_started = True
        self.event("Started", f"Started container {name}", field_path=fp)
        return proc

    def _finish(self, v: ContainerView, code: int, started: str) -> None:
        reason = "Completed" if code == 0 else "Error"
        v.running_since = None
        v.ready = False
        v.terminated = Terminated(code, reason, started, now_rfc3339(), container_id=v.container_id)

    async def _run_init(self) -> bool:
        for i, c in enumerate(self.init_specs):
            v = self.init_views[i]
            attempt = 0
            while True:
                if self.terminating:
                    return False
                proc = await self._start(c, v)
                self.publish()
                code = 128
                if proc is not None:
                    started = v.running_since or now_rfc3339()
                    code = await proc.wait()
                    self.logs[c["name"]].close()
                    self._finish(v, code, started)
                    await self._end(c["name"])
                elif v.waiting_reason == "CreateContainerConfigError":
                    await self._sleep(self.kubelet.config.backoff_delay(attempt))
                    attempt += 1
                    continue
                if self.terminating:
                    return False
                if code == 0:
                    v.ready = True
                    if i + 1 < len(self.init_views):
                        self.init_views[i + 1].waiting_reason = "ContainerCreating"
                    self.publish()
                    break
                if self.restart_policy == "Never":
                    for mv in self.views:
                        mv.waiting_reason = "PodInitializing"
                    self.terminal = True
                    self.publish()
                    await self._teardown()
                    return False
                await self._backoff(c, v, attempt)
                attempt += 1
        return True

    async def _backoff(self, c: dict[str, Any], v: ContainerView, attempt: int) -> None:
        delay = self.kubelet.config.backoff_delay(attempt)
        v.last_terminated = v.terminated
        v.waiting_reason = "CrashLoopBackOff"
        v.waiting_message = (
            f"back-off {delay:g}s restarting failed container={c['name']} "
            f"pod={self.name}_{self.namespace}({self.uid})"
        )
        self.event(
            "BackOff",
            f"Back-off restarting failed container {c['name']} in pod "
            f"{self.name}_{self.namespace}({self.uid})",
            "Warning",
        )
        self.publish()
        await self._sleep(delay)
        if not self.terminating:
            v.restart_count += 1

    async def _container_loop(self, index: int) -> None:
        c = self.specs[index]
        v = self.views[index]
        attempt = 0
        while not self.terminating:
            proc = await self._start(c, v)
            code = 128
            if proc is None and v.waiting_reason == "CreateContainerConfigError":
                await self._sleep(self.kubelet.config.backoff_delay(attempt))
                attempt += 1
                continue
            probes: list[ProbeRunner] = []
            ran_for = 0.0
            if proc is not None:
                started = v.running_since or now_rfc3339()
                t0 = time.monotonic()
                probes = self._start_probes(c, v, proc)
                self.publish()
                code = await proc.wait()
                ran_for = time.monotonic() - t0
                for p in probes:
                    p.stop()
                self.logs[c["name"]].close()
                self._finish(v, code, started)
                await self._end(c["name"])
            if self.terminating:
                self.publish()
                return
            if not will_restart(self.restart_policy, code):
                self.publish()
                return
            if ran_for > 2 * self.kubelet.config.backoff_max:
                attempt = 0
            await self._backoff(c, v, attempt)
            attempt += 1

    def _start_probes(self, c: dict[str, Any], v: ContainerView, proc: ContainerProcess) -> list[ProbeRunner]:
        runners = []
        readiness = c.get("readinessProbe")
        if readiness:

            def ready_changed(ok: bool) -> None:
                if proc.running and v.is_running:
                    v.ready = ok
                    self.publish()

            r = ProbeRunner(readiness, c, self.sandbox.connect, self._probe_exec(c["name"]), ready_changed)
            r.start()
            runners.append(r)
        else:
            v.ready = True
        liveness = c.get("livenessProbe")
        if liveness:

            def live_changed(ok: bool) -> None:
                if not ok and proc.running:
                    self.event("Unhealthy", f"Liveness probe failed: container {c['name']}", "Warning")
                    self.event("Killing", f"Container {c['name']} failed liveness probe, will be restarted")
                    proc.signal(signal.SIGKILL)

            lr = ProbeRunner(liveness, c, self.sandbox.connect, self._probe_exec(c["name"]), live_changed)
            lr.start()
            runners.append(lr)
        return runners

    def _probe_exec(self, name: str) -> Any:
        async def run(argv: list[str], timeout: float) -> int:
            target = self.targets.get(name)
            if target is None:
                return 1
            p = await asyncio.create_subprocess_exec(
                *target.prefix,
                *argv,
                env=target.env,
                cwd=target.cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
            try:
                return await asyncio.wait_for(p.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                return 1

        return run

    # ------------------------------------------------------------------ faults and deletion

    def kill_main_processes(self) -> int:
        """SIGKILL every running container (a crash, as far as the restart policy is concerned)."""
        n = 0
        for name in self.container_names() + self.init_names():
            proc = self.procs.get(name)
            if proc is not None and proc.running:
                proc.signal(signal.SIGKILL)
                n += 1
        return n

    async def terminate(self, grace: float) -> None:
        """Stop everything gracefully (deletionTimestamp set)."""
        if self.terminating:
            return
        self.terminating = True
        self.wake()
        stops = []
        for c in self.init_specs + self.specs:
            proc = self.procs.get(c["name"])
            if proc is not None and proc.running:
                self.event(
                    "Killing", f"Stopping container {c['name']}", field_path=f"spec.containers{{{c['name']}}}"
                )
                stops.append(proc.stop(grace))
        await asyncio.gather(*stops, return_exceptions=True)
        if self.task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self.task), 5)
        await self._teardown()

    async def kill(self) -> None:
        """Stop at once (the pod object is gone)."""
        self.removed = True
        self.terminating = True
        self.wake()
        for proc in list(self.procs.values()):
            proc.signal(signal.SIGKILL)
        if self.task is not None:
            self.task.cancel()
        for t in list(self._tasks):
            t.cancel()
        await self._teardown()

    async def _teardown(self) -> None:
        for server in self.relays:
            server.close()
        self.relays.clear()
        for p in list(self.exec_procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        for proc in list(self.procs.values()):
            if proc.running:
                proc.signal(signal.SIGKILL)
        for lf in self.logs.values():
            lf.close()
        for name in list(self.live):
            await self._end(name)
        await self.sandbox.stop()
        self.kubelet.detach_volumes(self.uid)
        if self.kubelet.network is not None:
            await self.kubelet.network.detach(self.uid)
        self.sandbox_ready = False

    # ------------------------------------------------------------------ streams

    def exec_target(self, container: str) -> ExecTarget | None:
        return self.targets.get(container)

    async def connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection to 127.0.0.1:`port` inside the pod (port-forward)."""
        if self.sandbox.isolated and self.sandbox.pid is None:
            raise ConnectionRefusedError("pod sandbox is gone")
        return await self.sandbox.connect(port)
