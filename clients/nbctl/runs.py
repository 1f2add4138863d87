"""`nbctl run`, `runs`, `fetch`, and `status` / `logs` / `stop` of a run.

`nbctl run -- COMMAND` prints the run's own output (every rank's log, `[rank i] `-prefixed when it
has several nodes) on stdout and nbd's lines (phases, build log, status) on stderr, and exits with
the run's exit code. The run lives in the cluster: Ctrl-C (or a lost connection) leaves it running
and says how to reattach (`nbctl logs RUN -f`) or stop it (`nbctl stop RUN`).

Exit codes: the run's own (0 on success); 1 for a run that failed without one (a failed build, a
stop, a deletion) or an error; 2 usage; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from nbctl.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, CommandError
from nbctl.launch import LaunchRenderer
from nbctl.output import emit_json, enum_name, print_table, when

__all__ = ["cmd_fetch", "cmd_run", "cmd_runs", "print_run", "run_logs", "run_status", "run_stop"]


def target_of(args: argparse.Namespace) -> Any:
    from nbdapi.v1 import runs_pb2

    kubeconfig = getattr(args, "kubeconfig", "") or os.environ.get("KUBECONFIG", "")
    if kubeconfig:
        kubeconfig = os.pathsep.join(os.path.abspath(p) for p in kubeconfig.split(os.pathsep) if p)
    return runs_pb2.ClusterTarget(
        context=getattr(args, "context", "") or "",
        namespace=getattr(args, "namespace", "") or "",
        kubeconfig=kubeconfig,
    )


def phase_of(info: Any) -> str:
    from nbdapi.v1 import runs_pb2

    return enum_name(runs_pb2.RunPhase, info.phase, "RUN_PHASE_")


def _duration(info: Any) -> str:
    start = info.started.seconds if info.HasField("started") and info.started.seconds else 0
    if not start:
        return ""
    end = info.finished.seconds if info.HasField("finished") and info.finished.seconds else 0
    if not end:
        import time

        end = int(time.time())
    seconds = max(0, end - start)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


def _exit(info: Any) -> str:
    return str(info.exit_code) if info.HasField("exit_code") else ""


def build_run_request(args: argparse.Namespace) -> Any:
    from nbctl.launch import build_request
    from nbdapi.v1 import runs_pb2

    command = list(args.run_command or [])
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise CommandError("no command to run; put it after `--`, e.g. `nbctl run -- python train.py`")
    if args.nodes < 1:
        raise CommandError(f"--nodes {args.nodes} is out of range; give 1 node or more")
    if args.fetch is not None and args.detach:
        raise CommandError(
            "--fetch waits for the run to end and --detach does not; use `nbctl fetch RUN` later"
        )
    if args.ttl is not None and args.ttl < 0:
        raise CommandError("--ttl must be 0 seconds or more")
    # The flags a run shares with a launch (directory, file, resources, env, cluster) are read alike.
    for missing in ("port", "no_sync", "attach", "open"):
        if not hasattr(args, missing):
            setattr(args, missing, 0 if missing == "port" else False)
    launch = build_request(args)
    request = runs_pb2.RunRequest(
        directory=launch.directory,
        name=args.name,
        target=target_of(args),
        notebook_file=launch.notebook_file,
        spec=launch.spec,
        command=command,
        nodes=args.nodes,
        detach=args.detach,
        rebuild=args.rebuild,
    )
    if args.ttl is not None:
        request.ttl_seconds_after_finished = args.ttl
    return request


class RunRenderer(LaunchRenderer):
    """A launch's rendering for the steps up to the build, then the run's status and logs."""

    def __init__(self, out: Any, err: Any) -> None:
        super().__init__(out, err)
        self.nodes = 1
        self.finished: Any = None
        self.name = ""
        self._last_status = ""

    def handle(self, event: Any) -> None:
        kind = event.WhichOneof("event")
        self.name = event.run or self.name
        if kind == "status":
            info = event.status
            self.nodes = info.nodes or 1
            phase = phase_of(info)
            ranks = ", ".join(f"rank {r.index} {r.phase.lower()}" for r in info.ranks if r.phase)
            line = (
                f"==> {phase}"
                + (f": {info.message}" if info.message else "")
                + (f" ({ranks})" if ranks else "")
            )
            if line != self._last_status:
                self._last_status = line
                self._say(line)
        elif kind == "log":
            prefix = f"[rank {event.log.rank}] " if self.nodes > 1 else ""
            self.out.write(prefix + event.log.text.rstrip("\n") + "\n")
            self.out.flush()
        elif kind == "finished":
            self._end_bar()
            self.finished = event.finished
            info = event.finished
            code = f", exit code {info.exit_code}" if info.HasField("exit_code") else ""
            rank = f" (rank {info.failed_rank})" if info.HasField("failed_rank") and info.nodes > 1 else ""
            why = f": {info.message}" if info.message else ""
            self._say(f"==> {phase_of(info)}{code}{rank}{why}")
        else:
            super().handle(event)


def _exit_code_of(info: Any) -> int:
    if info.HasField("exit_code"):
        return max(0, min(255, int(info.exit_code)))
    return EXIT_OK if phase_of(info) == "succeeded" else EXIT_ERROR


def cmd_run(args: argparse.Namespace) -> int:
    from nbdclient.client import connect

    request = build_run_request(args)
    as_json = args.output == "json"
    renderer = None if as_json else RunRenderer(sys.stdout, sys.stderr)
    failure: Any = None
    finished: Any = None
    running: Any = None
    name = request.name
    stream: Any = None
    try:
        with connect(args.socket) as client:
            stream = client.run(request)
            for event in stream:
                name = event.run or name
                kind = event.WhichOneof("event")
                if kind == "status":
                    running = event.status
                if renderer is not None:
                    renderer.handle(event)
                    continue
                emit_json(event)
                if kind == "failed":
                    failure = event.failed
                elif kind == "finished":
                    finished = event.finished
    except KeyboardInterrupt:
        if stream is not None:
            stream.cancel()
        if renderer is not None:
            renderer.close()
        if name and (running is not None or (renderer is not None and renderer.name)):
            print(
                f"nbctl: detached; run {name} goes on in the cluster: `nbctl logs {name} -f` follows it, "
                f"`nbctl stop {name}` stops it",
                file=sys.stderr,
            )
        else:
            print("nbctl: run cancelled", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if renderer is not None:
            renderer.close()
    if renderer is not None:
        failure, finished = renderer.failure, renderer.finished
    if failure is not None:
        raise CommandError(failure.message or f"the run failed ({failure.reason or 'no reason given'})")
    if finished is not None:
        if args.fetch is not None:
            fetch_args = argparse.Namespace(**vars(args))
            fetch_args.run, fetch_args.path, fetch_args.directory = name, args.fetch, request.directory
            cmd_fetch(fetch_args)
        return _exit_code_of(finished)
    if request.detach and running is not None:
        if renderer is not None:
            print(
                f"run {name} is running; `nbctl logs {name} -f` follows it, `nbctl stop {name}` stops it",
                file=sys.stderr,
            )
            sys.stdout.write(name + "\n")
            sys.stdout.flush()
        return EXIT_OK
    raise CommandError(f"the stream of run {name} ended early; `nbctl logs {name} -f` reattaches to it")


def print_run(info: Any) -> None:
    rows = [
        ("name", info.name),
        ("namespace", info.namespace),
        ("context", info.context),
        ("phase", phase_of(info)),
        ("reason", info.reason),
        ("message", info.message),
        ("exit code", _exit(info)),
        ("failed rank", str(info.failed_rank) if info.HasField("failed_rank") else ""),
        ("command", " ".join(info.command)),
        ("nodes", str(info.nodes)),
        ("gpus per node", str(info.gpus_per_node) + (f" ({info.gpu_type})" if info.gpu_type else "")),
        ("image", info.image),
        ("context md5", info.context_md5),
        ("directory", info.directory),
        ("outputs", info.outputs_path),
        ("job", info.job),
        ("created", when(info.created)),
        ("started", when(info.started)),
        ("finished", when(info.finished)),
        ("duration", _duration(info)),
    ]
    for r in info.ranks:
        code = f", exit code {r.exit_code}" if r.HasField("exit_code") else ""
        rows.append((f"rank {r.index}", f"{r.pod} {r.phase.lower()}{code}".strip()))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        if value:
            print(f"{key.ljust(width)}  {value}")


def cmd_runs(args: argparse.Namespace) -> int:
    from nbdclient.client import connect

    with connect(args.socket) as client:
        reply = client.list_runs(target=target_of(args))
    if args.output == "json":
        for info in reply.runs:
            emit_json(info)
        return EXIT_OK
    if not reply.runs:
        print(
            f"no runs in namespace {reply.namespace} ({reply.context}); `nbctl run -- COMMAND` starts one",
            file=sys.stderr,
        )
        return EXIT_OK
    print_table(
        ["NAME", "PHASE", "NODES", "GPUS", "DURATION", "EXIT", "CREATED", "COMMAND"],
        [
            (
                r.name,
                phase_of(r),
                str(r.nodes),
                str(r.gpus_per_node * r.nodes),
                _duration(r),
                _exit(r),
                when(r.created),
                " ".join(r.command)[:60],
            )
            for r in reply.runs
        ],
    )
    return EXIT_OK


def run_status(args: argparse.Namespace, name: str) -> int:
    from nbdclient.client import connect

    with connect(args.socket) as client:
        info = client.get_run(name, target=target_of(args))
    if args.output == "json":
        emit_json(info)
    else:
        print_run(info)
    return EXIT_OK


def run_stop(args: argparse.Namespace, name: str) -> int:
    from nbdclient.client import connect

    with connect(args.socket) as client:
        info = client.stop_run(name, target=target_of(args))
    if args.output == "json":
        emit_json(info)
    else:
        print(f"run {info.name}: {phase_of(info)}" + (f" ({info.message})" if info.message else ""))
    return EXIT_OK


def run_logs(args: argparse.Namespace, name: str) -> int:
    from nbdclient.client import connect

    renderer = RunRenderer(sys.stdout, sys.stderr)
    finished: Any = None
    rank = getattr(args, "rank", None)
    try:
        with connect(args.socket) as client:
            info = client.get_run(name, target=target_of(args))
            renderer.nodes = info.nodes or 1
            with client.run_logs(name, follow=args.follow, rank=rank, target=target_of(args)) as events:
                for event in events:
                    if args.output == "json":
                        emit_json(event)
                    elif event.WhichOneof("event") in ("log", "finished", "notice"):
                        renderer.handle(event)
                    if event.WhichOneof("event") == "finished":
                        finished = event.finished
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    if args.follow and finished is not None:
        return _exit_code_of(finished)
    return EXIT_OK


def cmd_fetch(args: argparse.Namespace) -> int:
    from nbdclient.client import connect

    directory = os.path.abspath(args.directory) if args.directory else ""
    if directory and not os.path.isdir(directory):
        raise CommandError(f"{directory} is not a directory; give the directory to fetch into with -d")
    result: Any = None
    with connect(args.socket) as client:
        with client.fetch(
            args.run, directory=directory, path=args.path or "", target=target_of(args)
        ) as events:
            for event in events:
                if args.output == "json":
                    emit_json(event)
                kind = event.WhichOneof("event")
                if kind == "notice" and args.output != "json":
                    print(f"    {event.notice.message}", file=sys.stderr)
                elif kind == "done":
                    result = event.done
    if result is None:
        raise CommandError(f"the fetch of run {args.run} ended early; try again")
    if args.output != "json":
        print(
            f"fetched {result.written} file(s) into {result.destination}"
            + (f", {result.unchanged} already there" if result.unchanged else ""),
            file=sys.stderr,
        )
        for c in result.conflicts:
            print(f"    kept your {c.path}; the run's version is {c.copy_path}", file=sys.stderr)
    return EXIT_OK
