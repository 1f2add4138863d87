"""Upload throughput per store: nbd's uploader vs `curl -T` to the same endpoint, same headers.

For each store the same incompressible archive (200 MB; 50 MB with `--quick`) is PUT by our client
(`nbd.upload.upload`) and by curl, interleaved, against:
- gcs: fake-gcs-server, through a V4 signed URL;
- s3: moto_server, through a SigV4 presigned URL;
- incluster: the in-cluster store (its own process, as in the controller's pod) behind kubesim's
  service proxy, through the API server path with the kubeconfig's bearer token (curl gets the
  same `Authorization` header), so both pay the same extra hop.
Each figure is MB/s with curl's beside it; the target is ≥ 0.9× curl. Run: `scripts/bench stores`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from benchmarks.harness import Figure, median, time_call

NAME = "stores"

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _archive(directory: str, size: int) -> tuple[str, str]:
    path = os.path.join(directory, "context.tar.gz")
    digest = hashlib.md5()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 4 << 20))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return path, base64.b64encode(digest.digest()).decode()


# A store under test: (sign(name) -> (url for ours, url for curl, extra curl headers), resolve, check).
Target = tuple[Callable[[str], tuple[str, str, list[str]]], Any, Callable[[], bool]]


@contextmanager
def _gcs(md5_b64: str) -> Iterator[Target]:
    from fixtures_gcs import start_emulator  # type: ignore[import-not-found]

    emulator = start_emulator()
    emulator.create_bucket("bench")
    try:

        def sign(name: str) -> tuple[str, str, list[str]]:
            url = emulator.sign_put_url("bench", name, md5_b64)
            return url, url, []

        yield sign, None, lambda: emulator.stored_md5("bench", "ours") == md5_b64
    finally:
        emulator.stop()


@contextmanager
def _s3(md5_b64: str) -> Iterator[Target]:
    from fixtures_s3 import S3_CREDENTIALS, start_s3_emulator  # type: ignore[import-not-found]

    emulator = start_s3_emulator("bench")
    os.environ.update(S3_CREDENTIALS)
    try:
        from nbd_controller.storage import CONTENT_TYPE, S3Store

        store = S3Store(emulator.client(), "bench", "ctx")
        md5 = base64.b64decode(md5_b64).hex()

        def sign(name: str) -> tuple[str, str, list[str]]:
            url = store.signed_put_url(md5, CONTENT_TYPE, timedelta(minutes=15))
            return url, url, []

        yield sign, None, lambda: store.stat(md5) == md5
    finally:
        emulator.stop()


@contextmanager
def _incluster(md5_b64: str, tmp: str) -> Iterator[Target]:
    import yaml

    from kubesim.running import start_kubesim
    from nbd.kube import KubeClient
    from nbd.kube.target import load_target_blocking
    from nbd_controller.incluster import InClusterStore
    from nbd_controller.storage import CONTENT_TYPE

    port = _free_port()
    root = os.path.join(tmp, "store")
    code = (
        "import sys, time\nfrom nbd_controller.incluster import InClusterStore\n"
        f"InClusterStore({root!r}, 'ctx', 'nbd-system/nbd-store:http', 'http://127.0.0.1:{port}', 1 << 40)"
        f".serve('127.0.0.1', {port})\nprint('serving', flush=True)\ntime.sleep(1e9)\n"
    )
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert server.stdout is not None
    server.stdout.readline()
    kubesim = start_kubesim(
        Path(tmp) / "kubesim", kubelet=False, extra_args=["--host-service", f"nbd-system/nbd-store={port}"]
    )
    try:
        from kubernetes import client

        core: Any = client.CoreV1Api(kubesim.api_client())
        core.create_namespace({"metadata": {"name": "nbd-system"}})
        core.create_namespaced_service(
            "nbd-system",
            {
                "metadata": {"name": "nbd-store"},
                "spec": {"selector": {"a": "b"}, "ports": [{"name": "http", "port": 8080}]},
            },
        )
        signer = InClusterStore(root, "ctx", "nbd-system/nbd-store:http", f"http://127.0.0.1:{port}", 1 << 40)
        token = yaml.safe_load(Path(kubesim.kubeconfig).read_text())["users"][0]["user"]["token"]
        md5 = base64.b64decode(md5_b64).hex()
        kube = KubeClient(load_target_blocking(str(kubesim.kubeconfig), None, None))

        def sign(name: str) -> tuple[str, str, list[str]]:
            path = signer.signed_put_url(md5, CONTENT_TYPE, timedelta(minutes=15))
            return path, kubesim.url + path, ["-H", f"Authorization: Bearer {token}"]

        yield sign, kube, lambda: signer.stat(md5) == md5
    finally:
        kubesim.stop()
        server.terminate()
        server.wait(10)


def _measure(store: str, path: str, md5_b64: str, target: Target, runs: int) -> tuple[float, float]:
    from nbd.launch.building import through_api_server
    from nbd.upload import SignedURL, upload

    sign, kube, check = target

    def ours() -> None:
        url, _, _ = sign("ours")

        async def go() -> None:
            async def get_url() -> SignedURL:
                return SignedURL(url)

            resolve = through_api_server(kube.transport) if kube is not None else None
            try:
                await upload(path, md5_b64, get_url, resolve=resolve)
            finally:
                if kube is not None:
                    await kube.aclose()

        asyncio.run(go())

    def curl() -> None:
        _, url, extra = sign("curl")
        subprocess.run(
            [
                "curl",
                "-sS",
                "--fail",
                "-o",
                "/dev/null",
                "-T",
                path,
                "-H",
                f"Content-MD5: {md5_b64}",
                "-H",
                "Content-Type: application/octet-stream",
                *extra,
                url,
            ],
            check=True,
        )

    ours()
    curl()
    ours_s: list[float] = []
    curl_s: list[float] = []
    for i in range(runs):
        first, second = (ours, curl) if i % 2 else (curl, ours)
        (ours_s if first is ours else curl_s).extend(time_call(first, 1, warmup=0))
        (ours_s if second is ours else curl_s).extend(time_call(second, 1, warmup=0))
    if not check():
        raise RuntimeError(f"the {store} store did not keep the uploaded bytes")
    size_mb = os.path.getsize(path) / 1e6
    return size_mb / median(ours_s), size_mb / median(curl_s)


def run(quick: bool = False) -> list[Figure]:
    sys.path.insert(0, str(REPO / "tests"))
    size = (50 if quick else 200) << 20
    runs = 3 if quick else 5
    figures = []
    with tempfile.TemporaryDirectory(prefix="nbd-bench-stores-") as tmp:
        path, md5_b64 = _archive(tmp, size)
        for store in ("gcs", "s3", "incluster"):
            contexts = {
                "gcs": lambda: _gcs(md5_b64),
                "s3": lambda: _s3(md5_b64),
                "incluster": lambda: _incluster(md5_b64, tmp),
            }
            with contexts[store]() as target:
                ours, curl = _measure(store, path, md5_b64, target, runs)
            figures.append(
                Figure(
                    f"upload {size / 1e6:.0f} MB to the {store} store",
                    ours,
                    "MB/s",
                    baseline="curl -T, same endpoint and headers",
                    baseline_value=curl,
                    target=">= 0.9x curl",
                    met=ours >= 0.9 * curl,
                    higher_is_better=True,
                )
            )
    return figures
