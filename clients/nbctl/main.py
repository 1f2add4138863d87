"""`nbctl` (and `kubectl notebook`): the command line of nbd.

This module parses arguments and turns every outcome into an exit code; the commands live in
`nbctl.commands` and `nbctl.launch`, imported only once a command is chosen. The CLI must answer
in tens of milliseconds, so nothing here imports more than argparse: gRPC, the stubs and `rich`
are loaded by the command that needs them, and `nbd` or `kubernetes` never are.

Exit codes: 0 success, 1 error (one line "nbctl: <message>" on stderr), 2 usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from nbctl.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CommandError

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "kubectl_plugin_main", "main"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o", "--output", choices=["text", "json"], default="text", help="json: one JSON object per line"
    )
    p.add_argument("--socket", help="the daemon's socket (default: $NBD_SOCKET or the per-user default)")


def _launch_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-d", "--directory", dest="directory_opt", metavar="DIR", help="the directory (same as DIR)"
    )
    p.add_argument(
        "-f",
        "--file",
        dest="notebook_file",
        metavar="FILE",
        help="a notebook.yaml (default DIR/notebook.yaml)",
    )
    p.add_argument("--name", default="", help="notebook name (default: the directory's name)")
    p.add_argument("-n", "--namespace", default="", help="Kubernetes namespace (default: the context's)")
    p.add_argument("--context", default="", help="kubeconfig context (default: the current context)")
    p.add_argument(
        "--kubeconfig", default="", help="kubeconfig path (default: $KUBECONFIG, else ~/.kube/config)"
    )
    p.add_argument("--gpus", type=int, default=None, metavar="N", help="number of GPUs")
    p.add_argument("--gpu-type", default="", metavar="T", help="GPU type (node selector)")
    p.add_argument(
        "--image", default="", metavar="IMG", help="a prebuilt image: nothing is uploaded or built"
    )
    p.add_argument("--cpu", default="", help="CPU request, e.g. 2")
    p.add_argument("--memory", default="", help="memory request, e.g. 8Gi")
    p.add_argument(
        "--env", action="append", default=[], metavar="K=V", help="environment variable (repeatable)"
    )
    p.add_argument(
        "--port",
        type=int,
        default=0,
        metavar="P",
        help="local port of http://127.0.0.1:P (default: a free one)",
    )
    p.add_argument("--no-sync", action="store_true", help="do not sync the directory with the pod")
    p.add_argument("--open", action="store_true", help="open the notebook in a browser once ready")
    p.add_argument("--attach", action="store_true", help="attach to the live session of this directory")
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="build the image again even if this content was built (without the layer cache)",
    )
    p.add_argument(
        "--timeout",
        default="",
        metavar="DURATION",
        help=(
            "how long the notebook may take to start once its image is ready, e.g. 20m, 90s, 1h30m "
            "(default 15m): a GPU node pool scaling up takes minutes"
        ),
    )
    p.add_argument(
        "--idle-stop",
        default="",
        metavar="DURATION",
        help=(
            "suspend the notebook after this long idle, e.g. 2h or 90m; 0 never (default: notebook.yaml's "
            "idle.stopAfter, else the cluster's); a busy kernel is never idle"
        ),
    )


def _cluster_flags(p: argparse.ArgumentParser, what: str = "a run's") -> None:
    p.add_argument("-n", "--namespace", default="", help=f"{what} namespace (default: the context's)")
    p.add_argument("--context", default="", help="kubeconfig context (default: the current context)")
    p.add_argument(
        "--kubeconfig", default="", help="kubeconfig path (default: $KUBECONFIG, else ~/.kube/config)"
    )


def _run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", nargs="?", metavar="DIR", help="the directory to run (default: .)")
    p.add_argument(
        "-d", "--directory", dest="directory_opt", metavar="DIR", help="the directory (same as DIR)"
    )
    p.add_argument(
        "-f",
        "--file",
        dest="notebook_file",
        metavar="FILE",
        help="a notebook.yaml (default DIR/notebook.yaml)",
    )
    p.add_argument("--name", default="", help="run name (default: the directory's name and a random suffix)")
    _cluster_flags(p)
    p.add_argument("--nodes", type=int, default=1, metavar="N", help="nodes (pods) of the run, 1 or more")
    p.add_argument("--gpus", type=int, default=None, metavar="N", help="GPUs per node")
    p.add_argument("--gpu-type", default="", metavar="T", help="GPU type (node selector)")
    p.add_argument(
        "--image", default="", metavar="IMG", help="a prebuilt image: nothing is uploaded or built"
    )
    p.add_argument("--cpu", default="", help="CPU request per node, e.g. 2")
    p.add_argument("--memory", default="", help="memory request per node, e.g. 8Gi")
    p.add_argument(
        "--env", action="append", default=[], metavar="K=V", help="environment variable (repeatable)"
    )
    p.add_argument("--detach", action="store_true", help="return once the run is running")
    p.add_argument(
        "--fetch",
        nargs="?",
        const="",
        default=None,
        metavar="PATH",
        help="once the run ended, fetch its outputs (or PATH under them) into DIR",
    )
    p.add_argument(
        "--ttl", type=int, default=None, metavar="SECONDS", help="delete the finished run after this long"
    )
    p.add_argument(
        "--rebuild", action="store_true", help="build the image again even if this content was built"
    )


def build_parser(prog: str = "nbctl") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a Jupyter notebook on a Kubernetes GPU cluster from a local directory.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("version", help="show the client's and the daemon's versions")
    _common(p)

    p = sub.add_parser("list", help="list the sessions")
    _common(p)

    p = sub.add_parser("status", help="show one session or run")
    p.add_argument("session", metavar="NAME", help="NAME, NAMESPACE/NAME or CONTEXT/NAMESPACE/NAME, or a run")
    p.add_argument("--run", action="store_true", help="NAME is a run (default: a session, else a run)")
    _cluster_flags(p)
    _common(p)

    p = sub.add_parser(
        "run",
        help="run a command on the directory's content as a job: nbctl run [DIR] [flags] -- COMMAND [ARGS...]",
    )
    _run_flags(p)
    _common(p)

    p = sub.add_parser("runs", help="list the runs of a namespace")
    _cluster_flags(p)
    _common(p)

    p = sub.add_parser("fetch", help="bring a run's outputs into the local directory")
    p.add_argument("run", metavar="RUN")
    p.add_argument("path", nargs="?", default="", metavar="PATH", help="a path under the run's outputs")
    p.add_argument("-d", "--directory", default="", metavar="DIR", help="default: the directory it ran from")
    _cluster_flags(p)
    _common(p)

    p = sub.add_parser("launch", help="launch (or re-attach to) the notebook of a directory")
    p.add_argument("directory", nargs="?", metavar="DIR", help="the directory to run and sync (default: .)")
    _launch_flags(p)
    _common(p)

    p = sub.add_parser("stop", help="stop a notebook (the pod goes; --delete removes everything) or a run")
    p.add_argument("session", metavar="NAME")
    p.add_argument("--delete", action="store_true", help="delete the notebook and what it created")
    p.add_argument("--run", action="store_true", help="NAME is a run (default: a session, else a run)")
    _cluster_flags(p)
    _common(p)

    p = sub.add_parser("logs", help="print a notebook's (or its build's) log, or a run's")
    p.add_argument("session", metavar="NAME")
    p.add_argument("--run", action="store_true", help="NAME is a run (default: a session, else a run)")
    p.add_argument("--rank", type=int, default=None, metavar="I", help="a run's rank I only")
    _cluster_flags(p)
    p.add_argument("--build", action="store_true", help="the image build's log")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.add_argument("--tail", type=int, default=0, metavar="N", help="only the last N lines")
    p.add_argument("-c", "--container", default="", help="one container")
    _common(p)

    p = sub.add_parser("sync", help="pause, resume, flush or show a session's sync")
    p.add_argument("session", metavar="NAME")
    p.add_argument("action", nargs="?", default="status", choices=["status", "pause", "resume", "flush"])
    p.add_argument(
        "--force", action="store_true", help="with resume: pass the delete guard that halted the sync"
    )
    _common(p)

    p = sub.add_parser("daemon", help="start, stop or inspect the nbd daemon")
    dsub = p.add_subparsers(dest="daemon_command", metavar="ACTION", required=True)
    for name, help_text in (
        ("start", "start the daemon (clients also start it on demand)"),
        ("stop", "stop the daemon gracefully"),
        ("status", "tell whether the daemon runs"),
    ):
        _common(dsub.add_parser(name, help=help_text))
    dp = dsub.add_parser("logs", help="print the daemon's log")
    dp.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    dp.add_argument("--tail", type=int, default=0, metavar="N", help="only the last N lines")
    _common(dp)
    return parser


def _dispatch(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    if args.command == "launch":
        from nbctl import launch

        return launch.run
    if args.command in ("run", "runs", "fetch"):
        from nbctl import runs

        return getattr(runs, f"cmd_{args.command}")  # type: ignore[no-any-return]
    from nbctl import commands

    if args.command == "daemon":
        return getattr(commands, f"daemon_{args.daemon_command}")  # type: ignore[no-any-return]
    return getattr(commands, f"cmd_{args.command}")  # type: ignore[no-any-return]


def build_plugin_parser(prog: str = "kubectl notebook") -> argparse.ArgumentParser:
    """The kubectl plugin's parser: the flags of `nbctl launch`, without a subcommand."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Launch (or re-attach to) the Jupyter notebook of a directory on the cluster.",
    )
    parser.add_argument(
        "directory", nargs="?", metavar="DIR", help="the directory to run and sync (default: .)"
    )
    _launch_flags(parser)
    _common(parser)
    parser.set_defaults(command="launch")
    return parser


def _split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """`nbctl run [flags] -- COMMAND...`: the flags, and the command after the first `--` (None
    when there is no `--`) when the subcommand is `run`."""
    first = next((a for a in argv if not a.startswith("-")), "")
    if first != "run" or "--" not in argv:
        return argv, None
    i = argv.index("--")
    return argv[:i], argv[i + 1 :]


def run(argv: Sequence[str], prog: str = "nbctl", parser: argparse.ArgumentParser | None = None) -> int:
    flags, command = _split_command(list(argv))
    parser = parser or build_parser(prog)
    args = parser.parse_args(flags)
    if args.command == "run":
        if not command:
            parser.exit(
                EXIT_USAGE,
                f"{prog}: no command to run; put it after `--`, e.g. `{prog} run -- python train.py`\n",
            )
        args.run_command = command
    try:
        return _dispatch(args)(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away; nothing more to say.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except Exception as e:
        from nbdclient.errors import NbdClientError

        if isinstance(e, (CommandError, NbdClientError)):
            message = str(e)
        else:
            if os.environ.get("NBCTL_DEBUG"):
                raise
            message = f"unexpected error: {type(e).__name__}: {e} (set NBCTL_DEBUG=1 for a traceback)"
        print(f"{prog}: {message}", file=sys.stderr)
        return EXIT_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    return run(sys.argv[1:] if argv is None else list(argv))


def kubectl_plugin_main(argv: Sequence[str] | None = None) -> int:
    """`kubectl notebook -d DIR [launch flags]`: the same as `nbctl launch DIR`;
    `kubectl notebook run [flags] -- COMMAND`: the same as `nbctl run`."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] == "run":
        return run(args, prog="kubectl notebook")
    return run(args, prog="kubectl notebook", parser=build_plugin_parser())


if __name__ == "__main__":
    raise SystemExit(main())
