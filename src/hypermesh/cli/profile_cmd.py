"""``hypermesh profile``: what this machine is."""

from __future__ import annotations

import argparse
import sys

from hypermesh.cli.main import EPILOG

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "profile",
        parents=[common],
        help="what this machine is: OS, CPU, memory, storage, network, GPUs, cgroup limits",
        description="Print this machine's profile: OS and kernel, CPU model/topology/caches/NUMA/frequencies, "
        "memory, storage devices and mounts, network interfaces, GPUs and the cgroup limits that bind "
        "this process. --json prints the same record as hypermesh.profile().to_dict().",
        epilog="examples:\n  hypermesh profile\n  hypermesh profile --json | jq .cpu.caches\n"
        "  HYPERMESH_BACKEND=portable hypermesh profile --json   the psutil backend other OSes use\n\n" + EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument(
        "--root", default="/", metavar="DIR", help="profile the machine mounted at DIR, e.g. /host (default /)"
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import hypermesh

    if args.root != "/":
        from hypermesh.platform.linux import LinuxBackend

        profile = LinuxBackend(root=args.root).profile()
    else:
        profile = hypermesh.profile()
    if args.json:
        import json

        json.dump(profile.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from hypermesh.cli.render import render_profile

    render_profile(profile)
    return 0
