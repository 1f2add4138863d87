"""The nbctl commands other than launch: version, list, status, stop, logs, sync, daemon *.

Each command takes the parsed arguments and returns an exit code; failures are raised as
`NbdClientError` or `CommandError` and printed by `nbctl.main`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from nbctl.errors import EXIT_ERROR, EXIT_OK, CommandError
from nbctl.output import auto_stop, emit_json, enum_name, phase_name, print_table, when
from nbdclient import daemon as daemon_control
from nbdclient.client import Client, connect
from nbdclient.errors import REASON_WORKSPACE_KEPT, DaemonNotRunning, NbdClientError
from nbdlocal.paths import resolve
from nbdlocal.version import API_VERSION, __version__

__all__ = [
    "cmd_list",
    "cmd_logs",
    "cmd_status",
    "cmd_stop",
    "cmd_sync",
    "cmd_version",
    "daemon_logs",
    "daemon_start",
    "daemon_status",
    "daemon_stop",
]

STOP_TIMEOUT = 30.0


def _json(args: argparse.Namespace) -> bool:
    return bool(args.output == "json")


def _client(args: argparse.Namespace, **kwargs: Any) -> Client:
    return connect(args.socket, **kwargs)


# --- sessions --------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        sessions = client.list()
    if _json(args):
        for s in sessions:
            emit_json(s)
        return EXIT_OK
    if not sessions:
        print("no sessions; launch one with `nbctl launch DIR`")
        return EXIT_OK
    from nbdapi.v1 import notebooks_pb2 as pb

    rows = [
        [
            s.ref or s.name,
            s.namespace,
            s.context,
            phase_name(s.phase),
            s.url,
            enum_name(pb.SyncState, s.sync.state, "SYNC_STATE_"),
            _notebook_word(s.notebook),
            auto_stop(s),
            s.directory,
        ]
        for s in sessions
    ]
    print_table(
        ["NAME", "NAMESPACE", "CONTEXT", "PHASE", "URL", "SYNC", "NOTEBOOK", "AUTO-STOP", "DIRECTORY"], rows
    )
    return EXIT_OK


def _notebook_word(notebook: Any) -> str:
    """The Notebook in the cluster in a word ("changed", "deleted", ...); "" before it was read."""
    from nbdapi.v1 import notebooks_pb2 as pb

    if not notebook.state:
        return ""
    return enum_name(pb.NotebookState, notebook.state, "NOTEBOOK_STATE_")


def _print_session(s: Any) -> None:
    from nbdapi.v1 import notebooks_pb2 as pb

    spec = s.spec
    gpus = f"{spec.gpu_count}" if spec.HasField("gpu_count") else ""
    if spec.gpu_type:
        gpus = f"{gpus or '?'} x {spec.gpu_type}"
    fields = [
        ("name", s.ref or s.name),
        ("namespace", s.namespace),
        ("context", s.context),
        ("phase", phase_name(s.phase)),
        ("message", s.message),
        ("url", s.url),
        ("directory", s.directory),
        ("image", s.image),
        ("context md5", s.context_md5),
        ("pod", s.pod),
        ("gpus", gpus),
        (
            "forward",
            f"{enum_name(pb.ForwardState, s.forward.state, 'FORWARD_STATE_')}"
            + (f" 127.0.0.1:{s.forward.local_port}" if s.forward.local_port else "")
            + (f" -> {s.forward.pod}:{s.forward.remote_port}" if s.forward.pod else "")
            + (f" ({s.forward.message})" if s.forward.message else ""),
        ),
        (
            "sync",
            enum_name(pb.SyncState, s.sync.state, "SYNC_STATE_")
            + (f" ({s.sync.message})" if s.sync.message else ""),
        ),
        (
            "notebook",
            _notebook_word(s.notebook)
            + (f" ({s.notebook.message})" if s.notebook.message and s.notebook.message != s.message else ""),
        ),
        ("auto-stop", auto_stop(s, long=True)),
        ("conflicts", str(len(s.sync.conflicts)) if s.sync.conflicts else ""),
        ("problems", str(len(s.sync.problems)) if s.sync.problems else ""),
        ("created", when(s.created)),
        ("updated", when(s.updated)),
    ]
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        if value:
            print(f"{key + ':':<{width + 1}} {value}")


def _is_run(args: argparse.Namespace, client: Client) -> bool:
    """Whether NAME is a run: with --run, or when no session has that name and a run has."""
    import grpc

    from nbctl.runs import target_of

    if getattr(args, "run", False):
        return True
    if "/" in args.session:
        return False
    try:
        client.get(args.session)
        return False
    except NbdClientError as e:
        if e.code != grpc.StatusCode.NOT_FOUND:
            raise
        not_a_session = e
    try:
        client.get_run(args.session, target=target_of(args))
        return True
    except NbdClientError as e:
        if e.code != grpc.StatusCode.NOT_FOUND:
            # A daemon without runs (or a cluster it cannot reach): the name was a session's.
            raise not_a_session from None
    raise CommandError(
        f"no session or run {args.session}; `nbctl list` shows the sessions, `nbctl runs` the runs"
    )


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if _is_run(args, client):
            from nbctl.runs import run_status

            return run_status(args, args.session)
        session = client.get(args.session)
    if _json(args):
        emit_json(session)
    else:
        _print_session(session)
    return EXIT_OK


def cmd_stop(args: argparse.Namespace) -> int:
    if args.yes and not args.delete:
        raise CommandError("--yes confirms deleting a workspace: it applies only with --delete")
    with _client(args) as client:
        if _is_run(args, client):
            from nbctl.runs import run_stop

            if args.delete:
                raise CommandError(
                    f"{args.session} is a run: `nbctl stop {args.session}` stops it; "
                    f"`kubectl delete run {args.session}` deletes it with its outputs"
                )
            return run_stop(args, args.session)
        session = _stop(client, args)
    if _json(args):
        emit_json(session)
    else:
        print(f"{'deleted' if args.delete else 'stopped'} {session.ref or session.name}")
    return EXIT_OK


def _stop(client: Client, args: argparse.Namespace) -> Any:
    """Stops (or deletes) a notebook; a delete that would take its workspace claim is asked about on
    a terminal, refused elsewhere (the daemon's line says to pass --yes)."""
    try:
        return client.stop(args.session, delete=args.delete, delete_workspace=args.yes)
    except NbdClientError as e:
        if e.reason != REASON_WORKSPACE_KEPT or not (sys.stdin.isatty() and sys.stderr.isatty()):
            raise
        sys.stderr.write(f"{e.message}\nDelete the notebook and its workspace claim? [y/N] ")
        sys.stderr.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise CommandError("nothing deleted: the notebook and its workspace claim are kept") from None
        return client.stop(args.session, delete=True, delete_workspace=True)


def cmd_logs(args: argparse.Namespace) -> int:
    if args.tail < 0:
        raise CommandError("--tail must be 0 (all) or more")
    with _client(args) as client:
        if _is_run(args, client):
            from nbctl.runs import run_logs

            return run_logs(args, args.session)
        with client.logs(
            args.session, build=args.build, follow=args.follow, tail_lines=args.tail, container=args.container
        ) as lines:
            for line in lines:
                if _json(args):
                    emit_json(line)
                else:
                    sys.stdout.write(line.text if line.text.endswith("\n") else line.text + "\n")
                    sys.stdout.flush()
    return EXIT_OK


def _print_sync(status: Any) -> None:
    from nbdapi.v1 import notebooks_pb2 as pb

    print(
        f"state:    {enum_name(pb.SyncState, status.state, 'SYNC_STATE_')}"
        + (f" ({status.message})" if status.message else "")
    )
    if status.local_root or status.remote_root:
        print(f"roots:    {status.local_root} <-> {status.remote_root}")
    print(
        f"files:    {status.files}   cycles: {status.cycles}   last cycle: {when(status.last_cycle) or 'never'}"
    )
    print(
        f"to pod:   {status.files_to_remote} files, {status.bytes_to_remote} bytes   "
        f"to local: {status.files_to_local} files, {status.bytes_to_local} bytes"
    )
    for c in status.conflicts:
        print(
            f"conflict: {c.path}"
            + (f" (other side kept as {c.copy_path})" if c.copy_path else "")
            + (f": {c.message}" if c.message else "")
        )
    for p in status.problems:
        print(f"problem:  {p.path}: {p.message}")
    if status.not_synced:
        print("not synced (too large):")
        for n in status.not_synced:
            where = "in the pod" if n.side == "remote" else "local"
            print(f"  {where:<10}  {n.path}: {n.reason or f'{n.size} bytes'}")
    if status.resolved_conflicts:
        print(
            f"resolved: {len(status.resolved_conflicts)} conflict(s) resolved lately"
            " (the copy deleted or renamed, or the file edited since); --output json lists them"
        )


def cmd_sync(args: argparse.Namespace) -> int:
    if args.force and args.action != "resume":
        raise CommandError("--force goes only with resume (`nbctl sync NAME resume --force`)")
    with _client(args) as client:
        status = client.sync(args.session, args.action, force=args.force)
    if _json(args):
        emit_json(status)
    else:
        _print_sync(status)
    return EXIT_OK


# --- versions and the daemon -----------------------------------------------------------------------


def _version_dict(v: Any) -> dict[str, Any]:
    from nbctl.output import message_dict

    return message_dict(v)


def cmd_version(args: argparse.Namespace) -> int:
    daemon = None
    try:
        with _client(args, autostart=False, check_version=False) as client:
            daemon = client.daemon
    except DaemonNotRunning:
        pass
    if _json(args):
        emit_json(
            {
                "client": {"version": __version__, "api_version": API_VERSION},
                "daemon": _version_dict(daemon) if daemon is not None else None,
            }
        )
        return EXIT_OK
    print(f"client: nbctl {__version__} (API {API_VERSION})")
    if daemon is None:
        print("daemon: not running")
    else:
        note = "" if daemon.version == __version__ else "  (differs: restart it with `nbctl daemon stop`)"
        print(f"daemon: nbd {daemon.version} (API {daemon.api_version}, pid {daemon.pid}){note}")
    return EXIT_OK


def daemon_start(args: argparse.Namespace) -> int:
    with _client(args, autostart=True) as client:
        v = client.daemon
    assert v is not None
    if _json(args):
        emit_json(_version_dict(v))
    else:
        print(f"nbd {v.version} is running (pid {v.pid}, socket {v.socket})")
    return EXIT_OK


def daemon_status(args: argparse.Namespace) -> int:
    try:
        with _client(args, autostart=False, check_version=False) as client:
            v = client.daemon
    except DaemonNotRunning:
        paths = resolve(socket=args.socket)
        if _json(args):
            emit_json({"running": False, "socket": str(paths.socket), "log_file": str(paths.log_file)})
        else:
            print(f"nbd is not running (socket {paths.socket})")
        return EXIT_ERROR
    assert v is not None
    if _json(args):
        emit_json({"running": True, **_version_dict(v)})
        return EXIT_OK
    print(f"nbd {v.version} is running (pid {v.pid}, since {when(v.started)})")
    print(f"socket:    {v.socket}")
    print(f"state dir: {v.state_dir}")
    print(f"log:       {v.log_file}")
    if v.version != __version__:
        print(f"note: this client is {__version__}; restart the daemon with `nbctl daemon stop`")
    return EXIT_OK


def daemon_stop(args: argparse.Namespace) -> int:
    try:
        client = _client(args, autostart=False, check_version=False)
    except DaemonNotRunning:
        if _json(args):
            emit_json({"stopped": False, "running": False})
        else:
            print("nbd is not running")
        return EXIT_OK
    with client:
        assert client.daemon is not None
        pid = client.daemon.pid
        client.shutdown()
    if not daemon_control.wait_for_exit(pid, STOP_TIMEOUT):
        raise CommandError(
            f"nbd (pid {pid}) did not stop within {STOP_TIMEOUT:.0f}s; see `nbctl daemon logs`"
        )
    if _json(args):
        emit_json({"stopped": True, "pid": pid})
    else:
        print(f"nbd stopped (pid {pid})")
    return EXIT_OK


def _tail_lines(path: Path, n: int) -> tuple[list[str], int]:
    """The last n lines of a file (all when n == 0) and the offset of its end."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.decode(errors="replace").splitlines(keepends=True)
    return (lines[-n:] if n else lines), len(data)


def daemon_logs(args: argparse.Namespace) -> int:
    if args.tail < 0:
        raise CommandError("--tail must be 0 (all) or more")
    paths = resolve(socket=args.socket)
    log_file = paths.log_file
    try:
        # A running daemon knows its own log (its state dir may differ from this client's default).
        with _client(args, autostart=False, check_version=False) as client:
            if client.daemon is not None and client.daemon.log_file:
                log_file = Path(client.daemon.log_file)
    except NbdClientError:
        pass
    if not log_file.exists():
        raise CommandError(
            f"there is no daemon log at {log_file} yet; start the daemon with `nbctl daemon start`"
        )
    lines, offset = _tail_lines(log_file, args.tail)
    for line in lines:
        _log_out(args, line)
    if not args.follow:
        return EXIT_OK
    inode = os.stat(log_file).st_ino
    while True:
        time.sleep(0.2)
        try:
            st = os.stat(log_file)
        except FileNotFoundError:
            continue
        if st.st_ino != inode or st.st_size < offset:
            # Rotated or truncated: read the new file from its start.
            inode, offset = st.st_ino, 0
        if st.st_size > offset:
            with open(log_file, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            for line in chunk.decode(errors="replace").splitlines(keepends=True):
                _log_out(args, line)


def _log_out(args: argparse.Namespace, line: str) -> None:
    if _json(args):
        emit_json({"text": line.rstrip("\n")})
    else:
        sys.stdout.write(line if line.endswith("\n") else line + "\n")
        sys.stdout.flush()
