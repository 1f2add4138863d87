"""`nbctl launch` / `kubectl notebook`: send a LaunchRequest and render its event stream.

People see phase lines, a progress bar for packaging and upload bytes (a terminal only), build log
lines, pod status and, on success, the notebook's URL alone on stdout (everything else goes to
stderr, so `url=$(nbctl launch .)` works). Programs get every event as a JSON line. A failed
launch prints the daemon's one-line message (and the build log's tail) and exits 1; Ctrl-C cancels
the call and exits 130.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import Any, TextIO

from nbctl.errors import EXIT_INTERRUPTED, EXIT_OK, CommandError
from nbctl.output import emit_json, phase_name

__all__ = ["LaunchRenderer", "build_request", "parse_duration", "run"]

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")
# The longest a launch may wait to start: a day (a pool that takes longer will not come).
MAX_TIMEOUT = 24 * 3600


def parse_duration(text: str, flag: str = "--timeout") -> int:
    """ "20m", "90s", "90", "1h30m" -> seconds; a CommandError naming the flag otherwise."""
    found = _DURATION.fullmatch(text.strip())
    if not text.strip() or found is None or not any(found.groups()):
        raise CommandError(f"{flag} {text!r} is not a duration; give e.g. 20m, 90s or 1h30m")
    hours, minutes, seconds = (int(g or 0) for g in found.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if not 1 <= total <= MAX_TIMEOUT:
        raise CommandError(f"{flag} {text!r} must be between 1s and 24h")
    return total


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def build_request(args: argparse.Namespace) -> Any:
    """The LaunchRequest of the parsed flags; paths are made absolute here, where the user is."""
    from nbdapi.v1 import notebooks_pb2 as pb

    if args.directory and args.directory_opt and args.directory != args.directory_opt:
        raise CommandError(f"two directories given ({args.directory} and -d {args.directory_opt}); give one")
    directory = os.path.abspath(args.directory or args.directory_opt or ".")
    if not os.path.isdir(directory):
        raise CommandError(f"{directory} is not a directory; give the directory of the notebook project")
    notebook_file = ""
    if args.notebook_file:
        notebook_file = os.path.abspath(args.notebook_file)
        if not os.path.isfile(notebook_file):
            raise CommandError(f"{notebook_file} does not exist; give a notebook.yaml with -f")
    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG", "")
    if kubeconfig:
        # $KUBECONFIG may list several files; the daemon runs elsewhere (cwd /), so make each absolute.
        kubeconfig = os.pathsep.join(os.path.abspath(p) for p in kubeconfig.split(os.pathsep) if p)
    if args.gpus is not None and args.gpus < 0:
        raise CommandError("--gpus must be 0 or more")
    if not 0 <= args.port < 65536:
        raise CommandError("--port must be between 1 and 65535")
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--env {item!r} is not KEY=VALUE")
        env[key] = value
    spec = pb.NotebookSpec(
        image=args.image,
        gpu_type=args.gpu_type,
        cpu=args.cpu,
        memory=args.memory,
        env=env,
        idle_stop_after=getattr(args, "idle_stop", "") or "",
    )
    if args.gpus is not None:
        spec.gpu_count = args.gpus
    return pb.LaunchRequest(
        directory=directory,
        name=args.name,
        namespace=args.namespace,
        context=args.context,
        kubeconfig=kubeconfig,
        notebook_file=notebook_file,
        spec=spec,
        local_port=args.port,
        no_sync=args.no_sync,
        attach=args.attach,
        rebuild=args.rebuild,
        timeout_seconds=parse_duration(args.timeout) if getattr(args, "timeout", "") else 0,
    )


class LaunchRenderer:
    """Turns LaunchEvents into terminal output. After the stream: `url` on success, `failure`."""

    def __init__(self, out: TextIO, err: TextIO, *, progress_bars: bool | None = None) -> None:
        self.out = out
        self.err = err
        self.progress_bars = err.isatty() if progress_bars is None else progress_bars
        self.url = ""
        self.failure: Any = None
        self._progress: Any = None
        self._task: Any = None
        self._task_phase = -1
        self._last_plain = 0.0

    def _say(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            self.err.write(text + "\n")
            self.err.flush()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def handle(self, event: Any) -> None:
        kind = event.WhichOneof("event")
        if kind == "phase":
            self._end_bar()
            msg = f": {event.phase.message}" if event.phase.message else ""
            self._say(f"==> {phase_name(event.phase.phase)}{msg}")
        elif kind == "progress":
            self._on_progress(event.progress)
        elif kind == "cached":
            from nbdapi.v1 import notebooks_pb2 as pb

            step = pb.Cached.Step.Name(event.cached.step).removeprefix("STEP_").lower()
            reason = f" ({event.cached.reason})" if event.cached.reason else ""
            self._say(f"    {step}: cached{reason}")
        elif kind == "build_log":
            self._say(f"    | {event.build_log.text.rstrip()}")
        elif kind == "pod":
            p = event.pod
            detail = ": ".join(x for x in (p.reason, p.message) if x)
            ready = ", ready" if p.ready else ""
            self._say(f"    pod {p.pod}: {p.phase or 'unknown'}{ready}" + (f" ({detail})" if detail else ""))
        elif kind == "notice":
            from nbdapi.v1 import notebooks_pb2 as pb

            prefix = "warning" if event.notice.level == pb.Notice.LEVEL_WARNING else "note"
            self._say(f"    {prefix}: {event.notice.message}")
        elif kind == "ready":
            self._end_bar()
            self.url = event.ready.url
            ref = event.ready.session.ref or event.session or event.ready.session.name
            self._say(f"    {ref} keeps running and syncing in the nbd daemon; `nbctl stop {ref}` stops it")
            self.out.write(event.ready.url + "\n")
            self.out.flush()
        elif kind == "failed":
            self._end_bar()
            self.failure = event.failed
            for line in event.failed.log_tail:
                self._say(f"    | {line.rstrip()}")

    def _end_bar(self) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
            self._task_phase = -1

    def _on_progress(self, p: Any) -> None:
        label = phase_name(p.phase)
        if self.progress_bars:
            if self._progress is None:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    DownloadColumn,
                    Progress,
                    TextColumn,
                    TimeRemainingColumn,
                    TransferSpeedColumn,
                )

                self._progress = Progress(
                    TextColumn("    {task.description}"),
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    TimeRemainingColumn(),
                    console=Console(file=self.err),
                    transient=True,
                )
                self._progress.start()
            if self._task is None or self._task_phase != p.phase:
                self._end_bar()
                self._task = self._progress.add_task(label, total=p.total_bytes or None)
                self._task_phase = p.phase
            self._progress.update(self._task, completed=p.done_bytes, total=p.total_bytes or None)
            return
        # Without a terminal: a line at most every 2 s, and one when the phase's bytes are done.
        done = p.total_bytes > 0 and p.done_bytes >= p.total_bytes
        now = time.monotonic()
        if done or now - self._last_plain >= 2.0:
            self._last_plain = now
            total = f" / {_human_bytes(p.total_bytes)}" if p.total_bytes else ""
            pct = f" ({100 * p.done_bytes / p.total_bytes:.0f}%)" if p.total_bytes else ""
            files = f", {p.done_files}/{p.total_files} files" if p.total_files else ""
            self._say(f"    {label}: {_human_bytes(p.done_bytes)}{total}{pct}{files}")


def run(args: argparse.Namespace) -> int:
    from nbdclient.client import connect

    request = build_request(args)
    as_json = args.output == "json"
    renderer = None if as_json else LaunchRenderer(sys.stdout, sys.stderr)
    failure: Any = None
    url = ""
    stream: Any = None
    try:
        with connect(args.socket) as client:
            stream = client.launch(request)
            for event in stream:
                if renderer is not None:
                    renderer.handle(event)
                    continue
                emit_json(event)
                kind = event.WhichOneof("event")
                if kind == "failed":
                    failure = event.failed
                elif kind == "ready":
                    url = event.ready.url
    except KeyboardInterrupt:
        # Cancelling the call tells the daemon the client is gone; the daemon decides what happens
        # to a half-done launch (the session stays listed either way).
        if stream is not None:
            stream.cancel()
        if renderer is not None:
            renderer.close()
        print("nbctl: launch cancelled", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if renderer is not None:
            renderer.close()
    if renderer is not None:
        failure, url = renderer.failure, renderer.url
    if failure is not None:
        raise CommandError(failure.message or f"the launch failed ({failure.reason or 'no reason given'})")
    if not url:
        raise CommandError(
            "the launch ended before the notebook was ready; see `nbctl list` and `nbctl logs NAME`"
        )
    if args.open:
        import webbrowser

        webbrowser.open(url)
    return EXIT_OK
