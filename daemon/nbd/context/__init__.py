"""The build context: what of a directory goes to the image builder, as a deterministic `tar.gz`.

The launch packages the directory once, names the result by its MD5, and uploads it only if that
exact content was never uploaded. So the archive must be byte-for-byte reproducible (same content
→ same MD5, whatever the mtimes, owners or creation order), fast (compression is the ceiling; see
`nbd.context.pack`), and an unchanged directory must answer from a stat-only walk.

Public API:

    plan_context(root, dockerfile="Dockerfile") -> ContextPlan
        The walk alone (pure result: sorted entries, warnings, the ignore file used). Raises
        MissingDockerfile / ContextError / BadIgnoreFile.

    async build_context(root, spool_dir, cache_dir, *, dockerfile="Dockerfile", level=1,
                        progress=None, cancel=None) -> BuiltContext
        Walk, then either reuse the archive recorded for an unchanged directory (`cached=True`) or
        write `spool_dir/ctx-<md5>.tar.gz` (temporary file + rename). The heavy work runs in
        threads; `progress(ContextProgress)` is called on the event loop; `cancel` (anything with
        `is_set()`) is checked between files, and cancelling the awaiting task stops the work too.
        Raises ContextError subclasses (UnreadableFile, ContextChanged, ...) or nbd.errors.Cancelled,
        always before anything could be uploaded, and never leaves a partial archive behind.

    build_context_sync(...) -> BuiltContext
        The same, blocking (for threads and benchmarks).

    forget_context(cache_dir, root, dockerfile="Dockerfile") -> None
        Drops the manifest record, e.g. after the store said the archive's bytes did not match
        their MD5; the next build packages from scratch.

Rules of `.dockerignore` are Docker's (`nbd.context.ignore`); the byte format is in
`nbd.context.tarformat`.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from . import manifest
from .errors import BadIgnoreFile, ContextChanged, ContextError, MissingDockerfile, UnreadableFile
from .pack import DEFAULT_LEVEL, CancelFlag, Packaged, package
from .pack import PackProgress as ContextProgress
from .walk import ContextPlan, Entry, plan_context, walk_context

__all__ = [
    "BadIgnoreFile",
    "BuiltContext",
    "CancelFlag",
    "ContextChanged",
    "ContextError",
    "ContextPlan",
    "ContextProgress",
    "Entry",
    "MissingDockerfile",
    "UnreadableFile",
    "build_context",
    "build_context_sync",
    "forget_context",
    "plan_context",
]


@dataclass(frozen=True)
class BuiltContext:
    """A packaged context, ready to upload.

    Attributes:
        path: The archive in the spool directory (`ctx-<md5>.tar.gz`).
        md5_hex: MD5 of the archive's bytes, 32 lowercase hex digits (the store's object name).
        md5_b64: The same MD5 in base64 (the `Content-MD5` header).
        size: Archive size in bytes.
        files: Regular files in the archive.
        cached: True when the archive of an unchanged directory was reused without packaging.
        warnings: Skipped special files and symlinks pointing outside the directory, worded for a person.
        links_outside: Relative paths of the symlinks pointing outside the directory (the walk's
            `ContextPlan.links_outside`): what a caller acts on, never the wording of `warnings`.
    """

    path: str
    md5_hex: str
    md5_b64: str
    size: int
    files: int
    cached: bool
    warnings: tuple[str, ...] = ()
    links_outside: tuple[str, ...] = ()


class _EitherFlag:
    def __init__(self, *flags: CancelFlag | None) -> None:
        self._flags = [f for f in flags if f is not None]

    def is_set(self) -> bool:
        return any(f.is_set() for f in self._flags)


def build_context_sync(
    root: str | os.PathLike[str],
    spool_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    *,
    dockerfile: str = "Dockerfile",
    level: int = DEFAULT_LEVEL,
    progress: Callable[[ContextProgress], None] | None = None,
    cancel: CancelFlag | None = None,
    use_cache: bool = True,
) -> BuiltContext:
    """Blocking `build_context`; `progress` is called from the packaging thread."""
    # Walk order is enough for the digest; the archive order costs a sort only on a miss.
    plan = walk_context(root, dockerfile)
    warnings = tuple(plan.warnings)
    outside = tuple(plan.links_outside)
    record_file = manifest.record_path(os.fspath(cache_dir), plan.root, plan.dockerfile)
    digest = manifest.manifest_digest(plan, level)
    previous = manifest.load(record_file)
    if use_cache and previous is not None and previous.digest == digest:
        try:
            if os.stat(previous.path).st_size == previous.size:
                return BuiltContext(
                    previous.path,
                    previous.md5_hex,
                    previous.md5_b64,
                    previous.size,
                    previous.files,
                    True,
                    warnings,
                    outside,
                )
        except OSError:
            pass
    packaged: Packaged = package(plan, spool_dir, level=level, progress=progress, cancel=cancel)
    if previous is not None and previous.path != packaged.path:
        # The directory changed: its previous archive is garbage now.
        try:
            os.unlink(previous.path)
        except OSError:
            pass
    if manifest.is_racy(plan):
        manifest.invalidate(record_file)
    else:
        manifest.save(
            record_file,
            manifest.ManifestRecord(
                digest, packaged.md5_hex, packaged.md5_b64, packaged.size, packaged.files, packaged.path
            ),
        )
    return BuiltContext(
        packaged.path,
        packaged.md5_hex,
        packaged.md5_b64,
        packaged.size,
        packaged.files,
        False,
        warnings,
        outside,
    )


async def build_context(
    root: str | os.PathLike[str],
    spool_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    *,
    dockerfile: str = "Dockerfile",
    level: int = DEFAULT_LEVEL,
    progress: Callable[[ContextProgress], None] | None = None,
    cancel: CancelFlag | None = None,
) -> BuiltContext:
    """Packages `root` (or reuses its unchanged archive); see the module docstring."""
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    flag = _EitherFlag(stop, cancel)

    def report(p: ContextProgress) -> None:
        if progress is not None:
            loop.call_soon_threadsafe(progress, p)

    work = loop.run_in_executor(
        None,
        lambda: build_context_sync(
            root,
            spool_dir,
            cache_dir,
            dockerfile=dockerfile,
            level=level,
            progress=report if progress is not None else None,
            cancel=flag,
        ),
    )
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        # Stop the thread between two files and wait for it to remove its temporary file.
        stop.set()
        try:
            await work
        except BaseException:
            pass
        raise


def forget_context(
    cache_dir: str | os.PathLike[str], root: str | os.PathLike[str], dockerfile: str = "Dockerfile"
) -> None:
    """Drops the manifest record of `root` so that the next build packages it again."""
    cleaned = os.path.normpath(dockerfile).replace(os.sep, "/")
    manifest.invalidate(
        manifest.record_path(os.fspath(cache_dir), os.path.realpath(os.fspath(root)), cleaned)
    )
