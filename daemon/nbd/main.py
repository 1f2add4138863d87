"""`nbd`: the per-user daemon, run in the foreground (clients start it detached when needed).

Start order: resolve paths, take the instance lock (a second daemon stops here with a message
naming the first), configure logging, clear a stale socket, build the App, install capabilities,
load sessions, serve. Exit codes: 0 after a graceful stop, 1 when it cannot start, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from nbd import logging_setup
from nbd.errors import NbdError
from nbd.version import reported_version
from nbdlocal import paths as daemon_paths

__all__ = ["main"]

log = logging.getLogger("nbd")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="nbd",
        description="The nbd daemon: launches notebooks on Kubernetes and keeps them forwarded and in sync.",
    )
    p.add_argument(
        "--socket",
        help="Unix socket to serve on (default: $NBD_SOCKET, $XDG_RUNTIME_DIR/nbd/nbd.sock, else STATE_DIR/nbd.sock)",
    )
    p.add_argument(
        "--state-dir",
        help="where sessions, the log and the lock live (default: $NBD_STATE_DIR, $XDG_STATE_HOME/nbd, ~/.local/state/nbd)",
    )
    p.add_argument("--log-stderr", action="store_true", help="also log to stderr")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument(
        "--grace", type=float, default=None, help="seconds in-flight calls get at shutdown (default 5)"
    )
    p.add_argument(
        "--capabilities",
        default=None,
        help="comma-separated capabilities to install, by name or module path "
        "(default: the built-in ones; 'none' for none)",
    )
    p.add_argument("--version", action="version", version=f"nbd {reported_version()}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    paths = daemon_paths.resolve(socket=args.socket, state_dir=args.state_dir)
    problem = paths.socket_problem()
    if problem:
        print(f"nbd: {problem}", file=sys.stderr)
        return 1

    # Imported here so `nbd --help` stays quick.
    from nbd import app as app_module
    from nbd import instance, server

    try:
        paths.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        paths.state_dir.chmod(0o700)
    except OSError as e:
        print(f"nbd: cannot create the state dir {paths.state_dir}: {e.strerror}", file=sys.stderr)
        return 1

    lock = instance.InstanceLock(paths.lock_file)
    try:
        lock.acquire(paths.socket)
    except NbdError as e:
        print(e.message, file=sys.stderr)
        return 1
    try:
        logging_setup.configure(
            paths.log_file, to_stderr=args.log_stderr, level=getattr(logging, args.log_level)
        )
        # The socket's folder is forced to 0700 only when it is ours: the state dir or an `nbd`
        # folder (the default $XDG_RUNTIME_DIR/nbd); a folder the daemon creates is made 0700 anyway.
        own_dir = paths.socket.parent == paths.state_dir or paths.socket.parent.name == "nbd"
        try:
            instance.prepare_socket_path(paths.socket, own_dir=own_dir)
        except NbdError as e:
            log.error("%s", e.message)
            print(f"nbd: {e.message}", file=sys.stderr)
            return 1

        app = app_module.App(paths, reported_version())
        if args.capabilities is None:
            names = None
        elif args.capabilities.strip() in ("", "none"):
            names = []
        else:
            names = [n.strip() for n in args.capabilities.split(",") if n.strip()]
        log.info("nbd %s starting; state dir %s", app.version, paths.state_dir)
        try:
            server.run(
                app,
                grace=args.grace if args.grace is not None else server.DEFAULT_GRACE,
                capabilities=names,
            )
        except Exception:
            log.exception("the daemon failed")
            print(f"nbd: the daemon failed; see {paths.log_file}", file=sys.stderr)
            return 1
        finally:
            app.close()
        return 0
    finally:
        lock.release()


if __name__ == "__main__":
    raise SystemExit(main())
