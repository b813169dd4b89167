"""``hypermesh assets``: what this node has, what is allocated, and allocating or releasing a share of it."""

from __future__ import annotations

import argparse
import json
import sys

from hypermesh.cli.main import EPILOG, positive_int

EXAMPLES = """\
examples:
  hypermesh assets                                   every asset: capacity, allocatable, health
  hypermesh assets --json --root /host               the host's assets from a container
  hypermesh assets allocate cpu 0.5 --owner job-7 --pid 1234 --enforce   held to half a core
  hypermesh assets allocate memory 1.5GiB --owner job-7 --id job-7-mem   retry-safe by id
  hypermesh assets allocations --json                every live allocation
  hypermesh assets release job-7-mem

A refused allocation (not enough left), a bad amount, an unknown kind or id exit 2 with one line.

"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    state = argparse.ArgumentParser(add_help=False)
    state.add_argument(
        "--state-dir",
        metavar="DIR",
        # SUPPRESS: given before the action (`assets --state-dir D allocations`), the action's default must not undo it.
        default=argparse.SUPPRESS,
        help="directory of the allocation ledger (default: $HYPERMESH_STATE_DIR, /var/lib/hypermesh as root, "
        "else $XDG_STATE_HOME/hypermesh)",
    )
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "assets",
        parents=[common, state],
        help="assets (cpu, memory, storage, network, gpu) and their allocations",
        description="What this node has, what is in use, what may still be taken and whether it is healthy.",
        epilog=EXAMPLES + EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    p.add_argument("--root", default="/", metavar="DIR", help="read the machine mounted at DIR (default /)")
    p.set_defaults(handler=run_list)
    actions = p.add_subparsers(title="actions", metavar="ACTION")
    a = actions.add_parser(
        "allocate",
        parents=[common, state],
        help="grant AMOUNT of KIND to an owner; prints the allocation id",
        epilog=EXAMPLES + EPILOG,
        formatter_class=fmt,
    )
    a.add_argument("kind", metavar="KIND", help="cpu, memory, storage, network or gpu")
    a.add_argument("amount", metavar="AMOUNT", help="2, 0.5, 500m (cores); 1.5GiB, 500MB (bytes); 1Gbit (rate)")
    a.add_argument("--owner", required=True, metavar="NAME", help="who holds the grant")
    a.add_argument("--asset", default=None, metavar="ID", help="which asset (needed where the kind has several)")
    a.add_argument("--id", default=None, metavar="ID", help="the allocation id; the same request again is a no-op")
    a.add_argument("--pid", type=positive_int, default=None, metavar="PID", help="released once PID has exited")
    a.add_argument("--enforce", action="store_true", help="hold --pid to the grant with a cgroup (cpu, memory)")
    a.add_argument("--force", action="store_true", help="grant a GPU other processes still use")
    a.add_argument("--root", default="/", metavar="DIR", help="read the machine mounted at DIR (default /)")
    a.set_defaults(handler=run_allocate)
    r = actions.add_parser(
        "release", parents=[common, state], help="release an allocation", epilog=EPILOG, formatter_class=fmt
    )
    r.add_argument("id", metavar="ID")
    r.set_defaults(handler=run_release)
    lst = actions.add_parser(
        "allocations", parents=[common, state], help="list live allocations", epilog=EPILOG, formatter_class=fmt
    )
    lst.add_argument("--json", action="store_true", help="print them as a JSON array")
    lst.set_defaults(handler=run_allocations)


def _dump(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def run_list(args: argparse.Namespace) -> int:
    from hypermesh import assets

    with assets.Ledger(getattr(args, "state_dir", None)) as ledger:
        snap = assets.snapshot(args.root, ledger)
    if args.json:
        _dump(snap.to_dict())
        return 0
    print(f"{'KIND':<8} {'ID':<28} {'UNIT':<12} {'CAPACITY':>14} {'ALLOCATED':>14} {'ALLOCATABLE':>14}  HEALTH")
    for a in snap.assets:
        cells = [f"{v:.6g}" if isinstance(v, float | int) else "-" for v in (a.capacity, a.allocated, a.allocatable)]
        health = a.health.status + (f" ({a.health.reason})" if a.health.reason else "")
        print(f"{a.kind:<8} {a.id:<28} {a.unit:<12} {cells[0]:>14} {cells[1]:>14} {cells[2]:>14}  {health}")
    return 0


def run_allocate(args: argparse.Namespace) -> int:
    from hypermesh import assets
    from hypermesh.assets.amounts import parse_amount

    amount = parse_amount(args.kind, args.amount)
    with assets.Ledger(getattr(args, "state_dir", None)) as ledger:
        grant = assets.allocate(
            ledger,
            args.kind,
            amount,
            owner=args.owner,
            asset_id=args.asset,
            id=args.id,
            pid=args.pid,
            force=args.force,
            enforce=args.enforce,
            root=args.root,
        )
    print(grant.id)
    return 0


def run_release(args: argparse.Namespace) -> int:
    from hypermesh import assets
    from hypermesh.errors import InvalidInput

    with assets.Ledger(getattr(args, "state_dir", None)) as ledger:
        if ledger.release(args.id) is None:
            raise InvalidInput(f"no allocation {args.id!r} (see 'hypermesh assets allocations')")
    return 0


def run_allocations(args: argparse.Namespace) -> int:
    from hypermesh import assets

    with assets.Ledger(getattr(args, "state_dir", None)) as ledger:
        grants = ledger.allocations()
    if args.json:
        _dump([g.to_dict() for g in grants])
        return 0
    print(f"{'ID':<34} {'OWNER':<16} {'KIND':<8} {'ASSET':<24} {'AMOUNT':>14} {'PID':>8}  ENFORCED")
    for g in grants:
        print(
            f"{g.id:<34} {g.owner:<16} {g.kind:<8} {g.asset_id:<24} {g.amount:>14.6g} "
            f"{g.pid if g.pid is not None else '-':>8}  {g.enforced or '-'}"
        )
    return 0
