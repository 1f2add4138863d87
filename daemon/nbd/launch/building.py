"""The packaging, upload and build of one launch's context: the steps from a directory to an image.

`package` walks and archives the directory (or reuses the archive of an unchanged one) and refuses
what the cluster's build could not unpack, before anything is uploaded. `Delivery` asks the
controller for an upload (or hears that the context is stored), PUTs the archive with fresh URLs as
needed, marks it uploaded, then follows the build Job's log until the Notebook says built or
failed. Everything it learns from the cluster goes through the pure readings of
`nbd.launch.progress`; everything the user should see goes out through `emit`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nbd.errors import FailedPrecondition, InvalidArgument, NbdError, NotFound
from nbd.events import (
    Cached,
    CachedStep,
    Failure,
    LaunchPayload,
    LogLine,
    Notice,
    NoticeLevel,
    PhaseChanged,
    Progress,
)
from nbd.launch import progress as prog
from nbd.launch.notebooks import NotebookClient, containers_of
from nbd.session import Phase, SessionKey

if TYPE_CHECKING:
    from nbd.context import BuiltContext
    from nbd.kube.transport import Transport
    from nbd.upload import Resolve

log = logging.getLogger(__name__)

# How long the controller may take to answer before a launch says it is not running
# (NBD_CONTROLLER_TIMEOUT seconds in the daemon's environment; tests shorten it).
CONTROLLER_TIMEOUT = float(os.environ.get("NBD_CONTROLLER_TIMEOUT") or 60.0)
BUILD_TIMEOUT = 3600.0
LOG_TAIL = 20

Emit = Callable[[LaunchPayload], None]


class AlreadyStored(Exception):
    """Another launch stored the same context while this one was asking for a fresh URL."""


class BuildError(FailedPrecondition):
    """A failed build, with the Failure (and its log tail) the launch reports."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message, reason=failure.reason)
        self.failure = failure


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def discard_archive(cache_dir: str, directory: str, path: str, forget: Callable[[str, str], None]) -> None:
    """Forgets the manifest record of `directory` and removes its archive (next launch repackages)."""
    forget(cache_dir, directory)
    try:
        os.unlink(path)
    except OSError:
        pass


async def record_context_files(store: str, directory: str, md5_hex: str, archive: str) -> None:
    """Records what the packaged context holds, for seeding a later sync's ancestor
    (`nbd.sync.context_files`). A failure costs only that seed, never the launch: it ends in a
    log line (the archive may be discarded meanwhile, e.g. after the store refused its MD5)."""
    from nbd.sync.context_files import record

    started = time.monotonic()
    try:
        written = await asyncio.to_thread(record, store, directory, md5_hex, archive)
    except Exception as e:
        log.warning("could not record the files of context %s of %s: %r", md5_hex, directory, e)
        return
    if written:
        log.info(
            "recorded the files of context %s of %s in %.2fs", md5_hex, directory, time.monotonic() - started
        )


async def package(directory: str, spool_dir: str, cache_dir: str, emit: Emit) -> BuiltContext:
    """Packages `directory` into `spool_dir` (the manifest records in `cache_dir`), with progress."""
    from nbd.context import build_context

    emit(PhaseChanged(Phase.PACKAGING, f"packaging {directory}"))
    started = time.monotonic()

    def progress(p: Any) -> None:
        elapsed = max(time.monotonic() - started, 1e-6)
        emit(
            Progress(
                Phase.PACKAGING,
                done_bytes=int(getattr(p, "done_bytes", 0)),
                total_bytes=int(getattr(p, "total_bytes", 0)),
                done_files=int(getattr(p, "done_files", 0)),
                total_files=int(getattr(p, "total_files", 0)),
                bytes_per_second=getattr(p, "done_bytes", 0) / elapsed,
            )
        )

    os.makedirs(spool_dir, mode=0o700, exist_ok=True)
    os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    built = await build_context(directory, spool_dir, cache_dir, progress=progress)
    for warning in built.warnings:
        emit(Notice(warning, NoticeLevel.WARNING))
    outside = built.links_outside
    if outside:
        # The build's fetch step refuses a context with such a link: say so before uploading.
        raise InvalidArgument(
            f"{outside[0]} is a symlink pointing outside {directory}, which the cluster's build "
            "cannot unpack; add it to .dockerignore or replace it with a copy",
            reason="LinkOutsideContext",
        )
    if built.cached:
        emit(
            Cached(CachedStep.PACKAGE, "the directory is unchanged since it was last packaged", built.md5_hex)
        )
    return built


def through_api_server(transport: Transport) -> Resolve:
    """Sends a path-only upload URL (the in-cluster store's) to the kubeconfig's API server.

    The server, the credentials (refreshed before each attempt), the CA, the client certificate
    and the proxy are the kubeconfig's, as for every other request of the daemon.
    """
    from nbd.upload import Destination
    from nbd.upload.proxy import proxy_for

    async def resolve(url_path: str) -> Destination:
        url = transport.absolute(url_path)
        proxy = transport.proxy_url
        return Destination(
            url,
            await transport.auth_header(),
            ssl_context=transport.ssl_context,
            server_hostname=transport.server_hostname,
            proxy=proxy_for(url, {"all_proxy": proxy}) if proxy else None,
            via_api_server=True,
        )

    return resolve


@dataclass
class Delivery:
    """The upload and build of one launch (one session's context) or one run on one cluster.

    `enter` records the phase the delivery enters (uploading, building) wherever its owner keeps
    it: a launch in its session, a run nowhere but in the events it streams.
    """

    enter: Callable[[Phase], Awaitable[None]]
    notebooks: NotebookClient
    key: SessionKey
    directory: str
    cache_dir: str
    emit: Emit
    # `nbctl launch --rebuild`: spec.build.rebuild names the request, so unchanged content builds again.
    rebuild: bool = False
    _announced: str = ""

    @property
    def ref(self) -> str:
        """The session as `nbctl` commands accept it (NAMESPACE/NAME is unambiguous)."""
        return f"{self.key.namespace}/{self.key.name}"

    async def upload(self, md5: str, md5_b64: str, path: str, request_id: str) -> tuple[bool, str]:
        """Uploads the context unless the cluster stores it.

        Returns whether bytes were sent and the requestID whose URL took them (the controller
        answers about that request).
        """
        from nbd.context import forget_context
        from nbd.upload import BadDigest, SignedURL, UploadProgress, upload

        answer = await self.notebooks.wait_for(
            self.key.name,
            lambda nb: prog.upload_answer(nb, request_id, md5) or prog.upload_failure(nb, request_id),
            timeout=CONTROLLER_TIMEOUT,
            what="the controller to answer the upload request",
        )
        if isinstance(answer, Failure):
            raise FailedPrecondition(answer.message, reason=answer.reason)
        if answer.stored:
            self.emit(Cached(CachedStep.UPLOAD, f"the cluster already stores context {md5}", md5))
            return False, request_id
        self.emit(PhaseChanged(Phase.UPLOADING, f"uploading context {md5}"))
        await self.enter(Phase.UPLOADING)
        first: list[prog.UploadAnswer] = [answer]

        async def get_url() -> SignedURL:
            # The first URL is the one already answered; later calls ask the controller for a new one.
            nonlocal request_id
            if first:
                return SignedURL(first.pop().signed_url)
            rid = new_request_id()
            renewed: dict[str, Any] = {"upload": {"md5": md5, "requestID": rid}}
            if self.rebuild:
                renewed["rebuild"] = rid  # the forced rebuild belongs to the request that uploads
            await self.notebooks.patch_spec(self.key.name, {"build": renewed})
            fresh = await self.notebooks.wait_for(
                self.key.name,
                lambda nb: prog.upload_answer(nb, rid, md5),
                timeout=CONTROLLER_TIMEOUT,
                what="a fresh upload URL",
            )
            request_id = rid
            self.emit(
                Notice(
                    "the upload URL expired or was refused; retrying with a fresh one", NoticeLevel.WARNING
                )
            )
            if fresh.stored:
                raise AlreadyStored()
            return SignedURL(fresh.signed_url)

        def progress(p: UploadProgress) -> None:
            self.emit(
                Progress(
                    Phase.UPLOADING,
                    done_bytes=p.done_bytes,
                    total_bytes=p.total_bytes,
                    bytes_per_second=p.bytes_per_second,
                    eta_seconds=p.eta_seconds,
                )
            )

        try:
            await upload(
                path,
                md5_b64,
                get_url,
                progress=progress,
                resolve=through_api_server(self.notebooks.kube.transport),
            )
        except AlreadyStored:
            self.emit(Cached(CachedStep.UPLOAD, f"the cluster already stores context {md5}", md5))
            return False, request_id
        except BadDigest:
            # The archive no longer matches its MD5 (changed on disk?): never reuse it. The next
            # launch walks and packages the directory from scratch.
            await asyncio.to_thread(discard_archive, self.cache_dir, self.directory, path, forget_context)
            raise
        await self.notebooks.patch_spec(self.key.name, {"build": {"uploaded": request_id}})
        return True, request_id

    # --- build -----------------------------------------------------------------------------------

    def _announce(self, notebook: dict[str, Any], md5: str) -> None:
        """Says, once each, what the controller reports about a build that retries or cannot start."""
        notice = prog.build_notice(notebook, md5)
        if notice is None or notice[0] == self._announced:
            return
        self._announced = notice[0]
        message, warning = notice
        self.emit(Notice(message, NoticeLevel.WARNING if warning else NoticeLevel.INFO))

    async def build(self, md5: str, path: str, request_id: str, *, uploaded: bool) -> str:
        # The controller verifies the stored object before building: a mismatch (or a missing
        # object) shows on the Uploaded condition of our request, never on Built. Only a status
        # of the current spec counts: the last launch's BuildFailed (or Built, before a forced
        # rebuild) is not this launch's answer.
        def started(nb: dict[str, Any]) -> Any:
            self._announce(nb, md5)
            return prog.upload_failure(nb, request_id) or (prog.is_current(nb) and prog.build_state(nb, md5))

        answer = await self.notebooks.wait_for(
            self.key.name, started, timeout=CONTROLLER_TIMEOUT, what="the controller to start the build"
        )
        await self._upload_refused(answer, path)
        state: prog.BuildState = answer
        if state.done:
            # Built before this launch asked (nothing was uploaded now): the build is cached.
            if state.reason == "AlreadyBuilt" or not uploaded:
                self.emit(Cached(CachedStep.BUILD, f"context {md5} was built before as {state.image}", md5))
            return state.image
        if state.failed:
            raise BuildError(prog.build_failure(state, [], self.ref))
        self.emit(PhaseChanged(Phase.BUILDING, f"building image for context {md5}"))
        await self.enter(Phase.BUILDING)
        tail: list[str] = []
        follower = asyncio.get_running_loop().create_task(self._follow_build(md5, tail))
        try:

            def finished(nb: dict[str, Any]) -> Any:
                self._announce(nb, md5)
                return prog.upload_failure(nb, request_id) or (
                    prog.is_current(nb)
                    and (s := prog.build_state(nb, md5)) is not None
                    and (s.done or s.failed)
                    and s
                )

            answer = await self.notebooks.wait_for(
                self.key.name, finished, timeout=BUILD_TIMEOUT, what="the image build"
            )
            await self._upload_refused(answer, path)
            final: prog.BuildState = answer
            if final.failed:
                # Let the follower print what is left of the log before the failure.
                try:
                    await asyncio.wait_for(asyncio.shield(follower), 5.0)
                except (TimeoutError, NbdError):
                    pass
                raise BuildError(prog.build_failure(final, tail[-LOG_TAIL:], self.ref))
            try:
                await asyncio.wait_for(asyncio.shield(follower), 5.0)
            except (TimeoutError, NbdError):
                pass
            return str(final.image)
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)

    async def _upload_refused(self, answer: Any, path: str) -> None:
        """Raises the controller's refusal of the uploaded object (after forgetting the archive)."""
        from nbd.context import forget_context

        if not isinstance(answer, Failure):
            return
        if answer.reason == "MD5Mismatch":
            # What was stored is not what was packaged: package from scratch next time.
            await asyncio.to_thread(discard_archive, self.cache_dir, self.directory, path, forget_context)
        raise FailedPrecondition(
            f"{answer.message.rstrip('.')}; relaunch to upload the context again", reason=answer.reason
        )

    async def _follow_build(self, md5: str, tail: list[str]) -> None:
        """Streams every line of the build pod's containers (the fetch init container first).

        Only a pod of the current build Job counts: on a rebuild or a retry, the earlier Job and
        its pod are still going away while the new one starts, and their log is not this build's.
        A pod that goes before its log ended (evicted, replaced) is followed by the next one."""
        seen: set[str] = set()
        deadline = time.monotonic() + BUILD_TIMEOUT
        while time.monotonic() < deadline:
            pods = await self._current_build_pods(md5)
            pods = [p for p in pods if p["metadata"]["name"] not in seen]
            if not pods:
                await asyncio.sleep(0.2)
                continue
            pod = pods[-1]
            name = str(pod["metadata"]["name"])
            seen.add(name)
            gone = False
            for container in containers_of(pod):
                await self._wait_container_started(name, container)
                try:
                    async for line in self.notebooks.log_lines(name, container, follow=True):
                        tail.append(line)
                        del tail[:-200]
                        self.emit(LogLine(line, container))
                except NotFound:
                    gone = True
                    break
            if not gone:
                # The build container's log ended with the build: the Notebook says how it went.
                return

    async def _current_build_pods(self, md5: str) -> list[dict[str, Any]]:
        jobs = [j for j in await self.notebooks.build_jobs(md5) if not j["metadata"].get("deletionTimestamp")]
        if not jobs:
            return []
        uid = jobs[-1]["metadata"].get("uid")
        return [
            p
            for p in await self.notebooks.build_pods(md5)
            if not p["metadata"].get("deletionTimestamp")
            and any(r.get("uid") == uid for r in p["metadata"].get("ownerReferences") or [])
        ]

    async def _wait_container_started(self, pod: str, container: str) -> None:
        while True:
            obj = await self.notebooks.pod(pod)
            if obj is None:
                return
            status = obj.get("status") or {}
            for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
                if cs.get("name") == container and (
                    (cs.get("state") or {}).get("running") or (cs.get("state") or {}).get("terminated")
                ):
                    return
            if status.get("phase") in ("Succeeded", "Failed"):
                return
            await asyncio.sleep(0.1)
