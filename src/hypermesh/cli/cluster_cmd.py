"""``hypermesh cluster``: many agents as one (docs/cluster.md)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

from hypermesh.cli.cluster_access import make_client
from hypermesh.cli.main import EPILOG, positive_float, positive_int
from hypermesh.errors import InvalidInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["register"]

DESCRIPTION = """\
Ask every agent of a cluster at once and show one view: what answered, what did not and why.
Agents come from etcd (--etcd: those started with `hypermesh agent --etcd URL`), from URLs (--node, repeatable)
or from a file (--nodes: one URL, or NODE-ID URL, per line). A node that does not answer within --timeout is
listed with the reason (refused, timed out, tls, auth, bad answer); a node whose last sample is older than three
of its intervals is listed as stale and left out of every total."""

EXAMPLES = """\
examples:
  hypermesh cluster status --etcd http://127.0.0.1:2379        health and utilisation of every registered agent
  hypermesh cluster assets --node http://10.0.0.5:9137 --node http://10.0.0.6:9137 --json
  hypermesh cluster profile --nodes agents.txt                 totals, and what differs between the nodes
  hypermesh cluster sample --etcd http://127.0.0.1:2379 --quorum 2   exit 1 if fewer than 2 nodes are current

exit codes for these commands: 0 an answer (maybe partial: see "failed" and "stale"), 1 --strict or --quorum
not met, etcd unreachable or no agent found, 2 bad input.

"""

VIEWS = {
    "status": ("/v1/sample", "/healthz"),
    "sample": ("/v1/sample", "/healthz"),
    "profile": ("/v1/profile", "/healthz"),
    "assets": ("/v1/assets",),
}
HELP = {
    "status": "health, version and utilisation per node, cluster mean and max",
    "sample": "each node's latest sample and cluster totals of rates",
    "profile": "each node's profile, totals, and what differs between nodes (heterogeneity)",
    "assets": "capacity, allocated and allocatable per kind, summed over nodes",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    access_parser = argparse.ArgumentParser(add_help=False)
    access = access_parser.add_argument_group("how to ask the agents")
    access.add_argument(
        "--timeout", type=positive_float, default=3.0, metavar="SECONDS", help="per node, whole request (default 3)"
    )
    access.add_argument("--user", metavar="NAME", help="basic-auth user, for agents with basic_auth_users")
    access.add_argument(
        "--password-file",
        metavar="FILE",
        help="file whose first line is --user's password (or set HYPERMESH_PASSWORD); never a flag's value",
    )
    access.add_argument("--cacert", metavar="FILE", help="CA certificate(s) that signed the agents' TLS certificates")
    targets = argparse.ArgumentParser(add_help=False, parents=[access_parser])
    group = targets.add_argument_group("which agents (one of)")
    group.add_argument("--etcd", metavar="URL", help="find them in etcd, e.g. http://127.0.0.1:2379")
    group.add_argument("--node", action="append", metavar="URL", help="an agent's URL; repeatable")
    group.add_argument("--nodes", metavar="FILE", help="a file with one agent URL (or NODE-ID URL) per line")
    group.add_argument(
        "--source",
        metavar="prometheus=URL",
        help="status only: read the view from Prometheus' query API, for fleets too large to ask node by node",
    )
    group.add_argument("--job", default="hypermesh", metavar="NAME", help="with --source: the agents' scrape job")
    answers = argparse.ArgumentParser(add_help=False)
    answer = answers.add_argument_group("what counts as an answer")
    answer.add_argument("--strict", action="store_true", help="exit 1 unless every node answers with current data")
    answer.add_argument("--quorum", type=positive_int, metavar="N", help="exit 1 if fewer than N nodes are current")
    answer.add_argument("--json", action="store_true", help="print the view as JSON")

    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "cluster",
        parents=[common],
        help="many agents as one: status, profile, sample, assets; cluster-wide limits and allocations",
        description=DESCRIPTION,
        epilog=EXAMPLES + EPILOG,
        formatter_class=fmt,
    )
    views = p.add_subparsers(title="views", metavar="VIEW")
    views.required = True
    from hypermesh.cli.cluster_alloc_cmd import add_commands

    add_commands(views, common, access_parser, targets)
    t = views.add_parser(
        "targets",
        parents=[common, targets],
        help="the agents as a Prometheus file_sd target list (JSON), for file-based service discovery",
        description="Write the agents (from --etcd, --node or --nodes) as a Prometheus file_sd_configs file: "
        "one target group per agent, labelled node_id and the agent's labels. With --output the file is "
        "replaced atomically, so Prometheus never reads half of it; run it from a timer to follow membership.",
        epilog="example (deploy/prometheus/prometheus-cluster.yml reads the file):\n"
        "  hypermesh cluster targets --etcd http://127.0.0.1:2379 --output /etc/prometheus/hypermesh-agents.json\n",
        formatter_class=fmt,
    )
    t.add_argument("--output", metavar="FILE", help="write here (atomically) instead of stdout")
    t.set_defaults(handler=run_targets)
    for name in VIEWS:
        v = views.add_parser(
            name,
            parents=[common, targets, answers],
            help=HELP[name],
            description=HELP[name],
            epilog=EXAMPLES,
            formatter_class=fmt,
        )
        v.set_defaults(handler=run_view, view=name)


def run_view(args: argparse.Namespace) -> int:
    from hypermesh.cluster import aggregate
    from hypermesh.cluster.fanout import collect
    from hypermesh.cluster.targets import resolve

    if args.source is not None:
        view = _from_prometheus(args)
        _print(args, view)
        return _verdict(view["summary"], args)
    client = make_client(args)
    nodes, intervals = resolve(args.etcd, args.node, args.nodes)
    rows = collect(client, nodes, VIEWS[args.view])
    if args.view == "status":
        view = aggregate.status_view(rows, intervals)
    elif args.view == "sample":
        view = aggregate.sample_view(rows, intervals)
    elif args.view == "profile":
        view = aggregate.profile_view(rows)
    else:
        view = aggregate.assets_view(rows)
    _print(args, view)
    return _verdict(view["summary"], args)


def _print(args: argparse.Namespace, view: dict[str, Any]) -> None:
    if args.json:
        sys.stdout.write(json.dumps(view, indent=2) + "\n")
    else:
        from hypermesh.cli.cluster_render import render

        sys.stdout.write(render(args.view, view))


def _from_prometheus(args: argparse.Namespace) -> dict[str, Any]:
    from hypermesh.cluster.prometheus import PrometheusSource, check_source

    url = check_source(args.source)
    if args.view != "status":
        raise InvalidInput(f"--source works with 'cluster status'; 'cluster {args.view}' asks the agents themselves")
    if args.etcd is not None or args.node or args.nodes is not None:
        raise InvalidInput("give --source or the agents (--etcd, --node, --nodes), not both")
    return PrometheusSource(url, args.job, max(args.timeout, 5.0)).status_view()


def run_targets(args: argparse.Namespace) -> int:
    from hypermesh.cluster.targets import file_sd, resolve

    nodes, _ = resolve(args.etcd, args.node, args.nodes)
    text = json.dumps(file_sd(nodes), indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
        return 0
    directory = os.path.dirname(os.path.abspath(args.output))
    temporary = os.path.join(directory, f".{os.path.basename(args.output)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w") as file:
            file.write(text)
        os.replace(temporary, args.output)  # Prometheus re-reads on change: never a half-written file
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise InvalidInput(f"--output: cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"hypermesh: cluster targets: {len(nodes)} agents written to {args.output}", file=sys.stderr)
    return 0


def _verdict(summary: dict[str, Any], args: argparse.Namespace) -> int:
    current, total = summary["current"], summary["nodes"]
    if args.strict and current < total:
        print(
            f"hypermesh: cluster: {total - current} of {total} nodes did not answer with current data (--strict)",
            file=sys.stderr,
        )
        return 1
    if args.quorum is not None and current < args.quorum:
        print(f"hypermesh: cluster: {current} of {total} nodes current, below --quorum {args.quorum}", file=sys.stderr)
        return 1
    return 0
