"""``hypermesh cluster limit|allocate|release|allocations``: cluster-wide limits through etcd (docs/cluster.md)."""

from __future__ import annotations

import argparse
import json
import sys

from hypermesh.cli.main import require_modules

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["add_commands"]

EXAMPLES = """\
examples:
  hypermesh cluster limit set cpu 8 --etcd http://127.0.0.1:2379              8 cores in all, every owner
  hypermesh cluster limit set memory 16GiB --owner team-a --etcd http://127.0.0.1:2379
  hypermesh cluster allocate cpu 2 --owner team-a --etcd http://127.0.0.1:2379 --user ops --password-file pw
  hypermesh cluster allocations --etcd http://127.0.0.1:2379 --json
  hypermesh cluster release c-0123456789abcdef --etcd http://127.0.0.1:2379 --user ops --password-file pw

A refused allocation (a cluster limit or the node's own room) exits 2 saying what is left; etcd unreachable
exits 1 and nothing is allocated (fail closed). Writes to an agent need --user unless the agent is on loopback.

"""


def add_commands(
    views: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    access: argparse.ArgumentParser,
) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    etcd = argparse.ArgumentParser(add_help=False)
    etcd.add_argument("--etcd", required=True, metavar="URL", help="the cluster's etcd, e.g. http://127.0.0.1:2379")
    limit = views.add_parser(
        "limit", parents=[common], help="cluster-wide limits per kind (and owner)", epilog=EXAMPLES, formatter_class=fmt
    )
    actions = limit.add_subparsers(title="actions", metavar="ACTION")
    actions.required = True
    s = actions.add_parser("set", parents=[common, etcd], help="set a limit", epilog=EXAMPLES, formatter_class=fmt)
    s.add_argument("kind", metavar="KIND", help="cpu, memory, storage, network or gpu")
    s.add_argument("amount", metavar="AMOUNT", help="as `hypermesh assets allocate` takes it: 8, 0.5, 16GiB")
    s.add_argument("--owner", metavar="NAME", help="a limit for this owner only (default: every owner together)")
    s.set_defaults(handler=run_limit_set)
    r = actions.add_parser("remove", parents=[common, etcd], help="remove a limit", formatter_class=fmt)
    r.add_argument("kind", metavar="KIND")
    r.add_argument("--owner", metavar="NAME")
    r.set_defaults(handler=run_limit_remove)
    ls = actions.add_parser("list", parents=[common, etcd], help="limits, used and left", formatter_class=fmt)
    ls.add_argument("--json", action="store_true", help="print them as JSON")
    ls.set_defaults(handler=run_limit_list)

    a = views.add_parser(
        "allocate",
        parents=[common, etcd, access],
        help="allocate within the cluster's limits on a node with room; prints the allocation id",
        epilog=EXAMPLES,
        formatter_class=fmt,
    )
    a.add_argument("kind", metavar="KIND", help="cpu, memory, storage, network or gpu")
    a.add_argument("amount", metavar="AMOUNT", help="2, 0.5, 500m (cores); 1.5GiB (bytes); 1 (GPU)")
    a.add_argument("--owner", required=True, metavar="NAME", help="who holds the grant (per-owner limits count it)")
    a.add_argument("--node", metavar="ID", help="this node (default: the one with the most room for KIND)")
    a.add_argument("--json", action="store_true", help="print the allocation as JSON")
    a.set_defaults(handler=run_allocate)
    rel = views.add_parser(
        "release", parents=[common, etcd, access], help="release a cluster allocation", formatter_class=fmt
    )
    rel.add_argument("id", metavar="ID")
    rel.set_defaults(handler=run_release)
    al = views.add_parser(
        "allocations",
        parents=[common, etcd],
        help="every cluster allocation (repairs abandoned ones)",
        formatter_class=fmt,
    )
    al.add_argument("--json", action="store_true", help="print them as JSON")
    al.set_defaults(handler=run_allocations)


def _limits(args: argparse.Namespace) -> Any:
    from hypermesh.cluster.etcd import Etcd
    from hypermesh.cluster.limits import ClusterLimits

    return ClusterLimits(Etcd(args.etcd))


def _amount(kind: str, text: str) -> float:
    from hypermesh.assets.amounts import parse_amount

    return parse_amount(kind, text)


def run_limit_set(args: argparse.Namespace) -> int:
    amount = _amount(args.kind, args.amount)
    _limits(args).set_limit(args.kind, amount, args.owner)
    who = f" for {args.owner}" if args.owner else ""
    print(f"hypermesh: cluster limit for {args.kind}{who} set to {amount:g}", file=sys.stderr)
    return 0


def run_limit_remove(args: argparse.Namespace) -> int:
    from hypermesh.errors import NotFound

    if not _limits(args).remove_limit(args.kind, args.owner):
        raise NotFound(f"no cluster limit for {args.kind}{f' of {args.owner}' if args.owner else ''}")
    return 0


def run_limit_list(args: argparse.Namespace) -> int:
    rows = _limits(args).limits()
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    if not rows:
        print("no cluster limits set (hypermesh cluster limit set KIND AMOUNT --etcd URL)")
    for row in rows:
        who = row["owner"] or "(every owner)"
        print(f"{row['kind']:<8} {who:<20} limit {row['amount']:<12g} used {row['used']:<12g} left {row['left']:g}")
    return 0


def run_allocate(args: argparse.Namespace) -> int:
    require_modules("hypermesh cluster allocate", "httpx")
    from hypermesh.cli.cluster_cmd import make_client
    from hypermesh.cluster.allocate import allocate
    from hypermesh.cluster.etcd import Etcd

    amount = _amount(args.kind, args.amount)
    record = allocate(Etcd(args.etcd), make_client(args), args.kind, amount, args.owner, args.node)
    if args.json:
        sys.stdout.write(json.dumps(record, indent=2) + "\n")
    else:
        print(record["id"])
        print(f"hypermesh: {args.kind} {amount:g} for {args.owner} on {record['node_id']}", file=sys.stderr)
    return 0


def run_release(args: argparse.Namespace) -> int:
    require_modules("hypermesh cluster release", "httpx")
    from hypermesh.cli.cluster_cmd import make_client
    from hypermesh.cluster.allocate import release
    from hypermesh.cluster.etcd import Etcd

    record = release(Etcd(args.etcd), make_client(args), args.id)
    print(
        f"hypermesh: released {args.id} ({record['kind']} {record['amount']:g} on {record['node_id']})", file=sys.stderr
    )
    return 0


def run_allocations(args: argparse.Namespace) -> int:
    limits = _limits(args)
    repaired = limits.repair()
    rows = limits.allocations()
    if args.json:
        sys.stdout.write(json.dumps({"allocations": rows, "repaired": repaired}, indent=2) + "\n")
        return 0
    for row in rows:
        print(
            f"{row['id']}  {row['kind']:<8} {row['amount']:<10g} {row['owner']:<16} {row['node_id']:<16} {row['state']}"
        )
    if repaired:
        print(f"hypermesh: repaired {len(repaired)} abandoned reservation(s): {', '.join(repaired)}", file=sys.stderr)
    return 0
