"""``hypermesh cluster limit|allocate|release|allocations``: cluster-wide limits through etcd (docs/cluster.md)."""

from __future__ import annotations

import argparse
import json
import sys

from hypermesh.cli.main import positive_float, positive_int, require_modules

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


ROLLOUT = """\
Push a live agent config to the nodes one at a time (or --max-unavailable at a time): each node must report
healthy under the new config (status ok, a fresh sample, every eBPF program of the config loaded) within
--health-timeout before the next is touched. A node that does not is put back on its previous config and the
roll-out stops there. The config file is TOML with any of: interval, history, ebpf, [labels]; other keys need a
restart of the agent. Writes need --user (agents with basic auth) unless the agents are on loopback.

example:
  printf 'interval = 0.5\\nebpf = ["syscalls"]\\n' > live.toml
  hypermesh cluster rollout --config live.toml --etcd http://127.0.0.1:2379 --user ops --password-file pw

exit codes: 0 every node updated, 1 a node failed or was rolled back (the table says which node runs what), 2 bad input.
"""


def add_commands(
    views: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    access: argparse.ArgumentParser,
    targets: argparse.ArgumentParser,
) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    ro = views.add_parser(
        "rollout",
        parents=[common, targets],
        help="push a live config to every node, one at a time, rolling back a node that turns unhealthy",
        description=ROLLOUT,
        formatter_class=fmt,
    )
    ro.add_argument("--config", required=True, metavar="FILE", help="TOML: interval, history, ebpf, [labels]")
    ro.add_argument("--max-unavailable", type=positive_int, default=1, metavar="N", help="nodes changed at once (1)")
    ro.add_argument(
        "--health-timeout", type=positive_float, default=30.0, metavar="SECONDS", help="per node (default 30)"
    )
    ro.add_argument("--json", action="store_true", help="print each node's outcome as JSON")
    ro.set_defaults(handler=run_rollout)
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
        parents=[common, etcd, access],
        help="every cluster allocation (repairs abandoned ones, asking their nodes: give --user as for allocate)",
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
    from hypermesh.cli.cluster_access import make_client
    from hypermesh.cluster.allocate import allocate, wait_confirmed
    from hypermesh.cluster.etcd import Etcd

    amount = _amount(args.kind, args.amount)
    record = allocate(Etcd(args.etcd), make_client(args), args.kind, amount, args.owner, args.node)
    if args.json:
        sys.stdout.write(json.dumps(record, indent=2) + "\n")
    else:
        print(record["id"])
        print(f"hypermesh: {args.kind} {amount:g} for {args.owner} on {record['node_id']}", file=sys.stderr)
    sys.stdout.flush()  # granted: say so now; etcd's record of it is confirmed meanwhile
    for problem in wait_confirmed():
        print(f"hypermesh: {problem}", file=sys.stderr)
    return 0


def run_release(args: argparse.Namespace) -> int:
    from hypermesh.cli.cluster_access import make_client
    from hypermesh.cluster.allocate import release
    from hypermesh.cluster.etcd import Etcd

    record = release(Etcd(args.etcd), make_client(args), args.id)
    print(
        f"hypermesh: released {args.id} ({record['kind']} {record['amount']:g} on {record['node_id']})", file=sys.stderr
    )
    return 0


def run_allocations(args: argparse.Namespace) -> int:
    from hypermesh.cli.cluster_access import make_client
    from hypermesh.cluster.allocate import node_holds

    limits = _limits(args)
    repaired = limits.repair(node_holds(make_client(args)))
    rows = limits.allocations()
    if args.json:
        sys.stdout.write(
            json.dumps({"allocations": rows, "repaired": repaired, "unverified": limits.unverified}, indent=2) + "\n"
        )
        return 0
    for row in rows:
        print(
            f"{row['id']}  {row['kind']:<8} {row['amount']:<10g} {row['owner']:<16} {row['node_id']:<16} {row['state']}"
        )
    if repaired:
        print(f"hypermesh: repaired {len(repaired)} abandoned reservation(s): {', '.join(repaired)}", file=sys.stderr)
    if limits.unverified:
        print(
            f"hypermesh: kept {len(limits.unverified)} abandoned reservation(s) whose node could not be asked "
            f"whether it granted them (give --user as for allocate, or retry): {', '.join(limits.unverified)}",
            file=sys.stderr,
        )
    return 0


def _live_config(path: str) -> dict[str, Any]:
    import tomllib

    from hypermesh.agent.config import read_config_bytes
    from hypermesh.errors import InvalidInput

    live = ("interval", "history", "ebpf", "labels")
    try:
        data = tomllib.loads(read_config_bytes(path).decode("utf-8", errors="strict"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"--config {path}: not valid TOML: {exc}") from None
    other = sorted(set(data) - set(live))
    if other:
        raise InvalidInput(
            f"--config {path}: {other[0]} cannot change while agents run; a roll-out sets: {', '.join(live)}"
        )
    if not data:
        raise InvalidInput(f"--config {path}: sets nothing; give any of: {', '.join(live)}")
    return data


def run_rollout(args: argparse.Namespace) -> int:
    require_modules("hypermesh cluster rollout", "httpx")
    from hypermesh.cli.cluster_access import make_client
    from hypermesh.cluster.rollout import rollout
    from hypermesh.cluster.targets import resolve

    config = _live_config(args.config)
    nodes, _ = resolve(args.etcd, args.node, args.nodes)

    def progress(result: Any) -> None:
        print(f"hypermesh: rollout: {result.node.node_id}: {result.outcome} {result.detail}".rstrip(), file=sys.stderr)

    results = rollout(make_client(args), nodes, config, args.max_unavailable, args.health_timeout, progress)
    if args.json:
        sys.stdout.write(json.dumps([r.to_dict() for r in results], indent=2) + "\n")
    else:
        for r in results:
            print(f"{r.node.node_id:<20} {r.outcome:<12} config {r.hash or '-':<12} {r.detail}".rstrip())
    return 0 if all(r.outcome == "updated" for r in results) else 1
