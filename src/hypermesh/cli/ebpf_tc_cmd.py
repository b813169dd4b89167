"""``hypermesh ebpf run tc``: packet and byte counts by protocol in each direction of an interface, and
``hypermesh ebpf detach tc-IF`` for what a killed run left there.

Registered by cli/ebpf_cmd.py, whose ``run`` loop (signals, duration, --json, --pin) it reuses: this
module adds the parser, turns the flags into the program's options, prints the text table and says when
clsact filters left by a killed run were removed.
"""

from __future__ import annotations

import argparse
import sys

from hypermesh.cli.main import interface_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from hypermesh.model import Record

__all__ = ["detach_tc", "print_tc_counts", "register_tc"]

PIN_PREFIX = "tc-"


def register_tc(
    run_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
    run: Callable[[argparse.Namespace], int],
    formatter: type[argparse.HelpFormatter],
    epilog: Callable[..., str],
) -> None:
    t = run_sub.add_parser(
        "tc",
        parents=list(parents),
        help="packet and byte counts by protocol in each direction of an interface (TC, never drops)",
        description="Count packets and bytes by protocol (ipv4/ipv6 x tcp/udp/icmp/other, arp, other) leaving "
        "and arriving on one interface, at the kernel's TC hooks; traffic is never changed (the programs leave "
        "the verdict to what follows them). Attached through tcx links where the kernel has them (Linux 6.6+: "
        "nothing stays on the interface after exit or a crash), through clsact + cls_bpf filters otherwise (a "
        "filter left by a killed run is removed by the next run on that interface or by 'hypermesh ebpf detach "
        "tc-IF'). The path taken is printed (and is 'attach' in --json). Needs root, or CAP_BPF + CAP_NET_ADMIN.",
        epilog=epilog(
            "hypermesh ebpf run tc -i eth0 --duration 10",
            "hypermesh ebpf run tc -i eth0 --direction egress --json",
            "hypermesh ebpf detach tc-eth0      (filters a killed run left, or a --pin)",
        ),
        formatter_class=formatter,
    )
    t.add_argument(
        "--interface", "-i", type=interface_name, required=True, metavar="IF", help="network interface, e.g. eth0"
    )
    t.add_argument(
        "--direction",
        choices=("ingress", "egress", "both"),
        default="both",
        help="which traffic to count (default both)",
    )
    t.add_argument(
        "--attach",
        choices=("auto", "tcx", "clsact"),
        default="auto",
        help="attach path (default auto: tcx links where the kernel has them, clsact filters otherwise); "
        "tcx on a kernel without it exits 4",
    )

    def run_tc(args: argparse.Namespace) -> int:
        _announce_leftovers(args.interface)
        args.options = {"interface": args.interface, "direction": args.direction, "attach": args.attach}
        return run(args)

    t.set_defaults(handler=run_tc, program="tc", print_text=print_tc_counts)


def _announce_leftovers(interface: str) -> None:
    """Remove (and say so) the clsact filters a killed run left on ``interface``, before this run's
    attach would do it silently."""
    from hypermesh.ebpf import clsact
    from hypermesh.ebpf.programs.xdp import interface_index

    for f in clsact.remove_leftovers(interface_index(interface)):
        print(f"hypermesh: removed a clsact filter left on {interface} by a run that is gone: {f.describe()}",
              file=sys.stderr, flush=True)  # fmt: skip


def print_tc_counts(result: Record) -> None:
    from hypermesh.ebpf.programs.tc import TcCounts

    assert isinstance(result, TcCounts)
    counted = [(name, d) for name, d in (("ingress", result.ingress), ("egress", result.egress)) if d is not None]
    header = "".join(f" {name.upper() + ' PKTS':>14} {name.upper() + ' BYTES':>15}" for name, _ in counted)
    print(f"{result.interface} ({result.attach})")
    print(f"{'PROTOCOL':<12}{header}")
    protocols = list((counted[0][1].packets if counted else {}).keys())
    for proto in [*protocols, "total"]:
        cells = []
        for _, d in counted:
            packets = d.total_packets if proto == "total" else d.packets[proto]
            size = d.total_bytes if proto == "total" else d.bytes[proto]
            cells.append(f" {packets:>14} {size:>15}")
        print(f"{proto:<12}{''.join(cells)}")


def detach_tc(name: str) -> int:
    """``hypermesh ebpf detach tc-IF``: the pins of a --pin run (tcx), and our clsact filters on IF whose
    run is gone. Filters of a run still going are left to it, and named."""
    import os

    import hypermesh.ebpf
    from hypermesh.ebpf import clsact
    from hypermesh.ebpf.pin import unpin_component
    from hypermesh.ebpf.programs.xdp import interface_index
    from hypermesh.errors import InvalidInput, NotFound

    interface = unpin_component(name[len(PIN_PREFIX) :])
    done = False
    if os.path.isdir(os.path.join(hypermesh.ebpf.PIN_ROOT, name)):
        entry = hypermesh.ebpf.detach_pinned(name)
        print(f"detached {entry.name}: removed {len(entry.objects)} pins from {entry.path}")
        done = True
    try:
        ifindex = interface_index(interface)
    except NotFound:
        if done:
            return 0
        raise
    for f in clsact.remove_leftovers(ifindex):
        print(f"detached {name}: removed the clsact filter {f.describe()}")
        done = True
    live = [f for f in clsact.filters(ifindex) if f.ours and f.owner_alive]
    if not done and live:
        pids = ", ".join(sorted({str(f.owner_pid) for f in live}))
        raise InvalidInput(
            f"tc on {interface} is attached by a run still going (pid {pids}), not left behind: stop that run "
            "(it detaches on exit)"
        )
    if not done:
        raise NotFound(f"nothing of hypermesh's tc is pinned as {name!r} or left attached to {interface}")
    for f in live:
        print(f"hypermesh: left alone a clsact filter of a run still going: {f.describe()}", file=sys.stderr)
    return 0
