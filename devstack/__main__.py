"""`python -m devstack up|down|status [--state-dir DIR] [--gpus N] [--store incluster|gcs|s3] [--output json]`."""

from __future__ import annotations

import argparse
import json
import sys

from devstack.stack import DEFAULT_STORE, STORES, StackError, default_state_dir, down, status, up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description="nbd's local cluster")
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--state-dir", default=default_state_dir())
    parser.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu capacity of the local node")
    parser.add_argument(
        "--store",
        choices=STORES,
        default=DEFAULT_STORE,
        help="where build contexts live: incluster (the controller's own store, no emulator; the "
        "default), gcs (the GCS emulator) or s3 (the S3 emulator)",
    )
    parser.add_argument("--output", choices=["text", "json"], default="text")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            stack = up(args.state_dir, gpus=args.gpus, store=args.store)
        elif args.command == "down":
            stopped = down(args.state_dir)
            print(
                json.dumps({"stopped": stopped})
                if args.output == "json"
                else ("local cluster stopped" if stopped else "no local cluster was running")
            )
            return 0
        else:
            found = status(args.state_dir)
            if found is None:
                print(
                    json.dumps({"running": False}) if args.output == "json" else "no local cluster is running"
                )
                return 1
            stack = found
    except StackError as e:
        print(f"devstack: {e}", file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps({"running": True, **stack.to_json()}))
    else:
        print(
            f"local cluster running: API {stack.api_url}, kubeconfig {stack.kubeconfig}, store {stack.store}"
            + (
                f" {stack.gcs_url or stack.s3_url}"
                if stack.store != "incluster"
                else f" in {stack.store_dir}"
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
