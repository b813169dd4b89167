"""``hypermesh ebpf run execguard``: audit or refuse execs under path prefixes for one cgroup (BPF LSM).

Registered by cli/ebpf_cmd.py. Prints one line on stderr once the guard is attached, then each decision
as one JSON object a line on stdout (pid, tid, uid, comm, filename, action, prefix, unresolved,
cgroup_id) until --duration ends, Ctrl-C or SIGTERM; then the counts on stderr, and detaches. Exit codes:
0 ok, 2 bad input (cgroup, prefixes, mode), 3 permission denied, 4 BPF LSM not usable on this kernel.
"""

from __future__ import annotations

import argparse
import json
import sys

from hypermesh.cli.main import positive_float

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from hypermesh.ebpf.programs.execguard import ExecguardProgram

__all__ = ["register_execguard"]


def register_execguard(
    run_sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    formatter: type[argparse.HelpFormatter],
    epilog: Callable[..., str],
) -> None:
    g = run_sub.add_parser(
        "execguard",
        parents=[common],
        help="audit or refuse (EPERM) execs under path prefixes for one cgroup (BPF LSM)",
        description="Guard exec for the processes of one cgroup v2 directory and its descendants: a BPF LSM "
        "program on bprm_check_security reports (--mode audit, the default) or refuses with EPERM (--mode "
        "enforce) the execution of any file whose resolved path lies under a --deny prefix, on whole path "
        "components (/tmp/den covers /tmp/den/x, not /tmp/denied). Processes outside the cgroup are never "
        "affected. Each decision is printed as one JSON line. The guard lasts as long as this command: it "
        "detaches on exit, Ctrl-C, SIGTERM or a kill. Needs root (CAP_BPF + CAP_PERFMON), a kernel with BPF LSM "
        "active ('hypermesh ebpf probe' says, and how to enable it) and cgroup2 mounted.",
        epilog=epilog(
            "hypermesh ebpf run execguard --cgroup /sys/fs/cgroup/untrusted --deny /tmp --deny /dev/shm",
            "hypermesh ebpf run execguard --cgroup /sys/fs/cgroup/ci --deny /usr/bin/curl --mode enforce",
        ),
        formatter_class=formatter,
    )
    g.add_argument("--cgroup", required=True, metavar="PATH", help="a cgroup v2 directory (its descendants too)")
    g.add_argument(
        "--deny",
        required=True,
        action="append",
        metavar="PREFIX",
        help="an absolute path prefix to guard (repeat for more, at most 16; symlinks in it are resolved)",
    )
    g.add_argument(
        "--mode",
        choices=("audit", "enforce"),
        default="audit",
        help="audit: allow and report (default); enforce: refuse with EPERM and report",
    )
    g.add_argument(
        "--duration", type=positive_float, default=None, metavar="S", help="seconds to run (default: until stopped)"
    )
    g.set_defaults(handler=_run_execguard)


class _Stop(KeyboardInterrupt):
    """SIGTERM before the guard is attached: the same exit as an interrupted command (130)."""


def _raise_stop(_signum: int, _frame: object) -> None:
    raise _Stop


def _run_execguard(args: argparse.Namespace) -> int:
    import signal
    import time

    from hypermesh.ebpf.programs.execguard import ExecguardProgram

    prog = ExecguardProgram(cgroup=args.cgroup, deny=args.deny, mode=args.mode)  # bad input: exit 2 here
    previous_term = signal.signal(signal.SIGTERM, _raise_stop)
    previous_int = signal.getsignal(signal.SIGINT)
    # From the attach on, signals are only noted: one raised inside the ring buffer's ctypes callback
    # would be lost, and the loop sees a noted one within one poll (the poll returns at once, EINTR).
    stop: list[int] = []

    def note(signum: int, _frame: object) -> None:
        stop.append(signum)

    try:
        prog.load()
        signal.signal(signal.SIGINT, note)
        signal.signal(signal.SIGTERM, note)
        prog.attach()
        how_long = f"running {args.duration:g} s" if args.duration else "Ctrl-C to stop"
        print(f"hypermesh: {_attached_line(prog)}; {how_long}", file=sys.stderr, flush=True)
        started = time.monotonic()
        deadline = None if args.duration is None else started + args.duration
        while not stop:
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                break
            _print_events(prog, left)
        _print_events(prog, 0)  # what the ring still holds
        stats = prog.stats()
        stopped = f"stopped after {time.monotonic() - started:.2f} s: " if stop else ""
        lost = f", {stats.lost} events lost (the ring buffer was full)" if stats.lost else ""
        print(
            f"hypermesh: execguard {stopped}{stats.checked} execs checked in the cgroup, "
            f"{stats.matched} {'refused' if prog.mode == 'enforce' else 'reported'}{lost}",
            file=sys.stderr,
            flush=True,
        )
        return 0
    finally:
        # A second signal must not cut the detach short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            prog.close()
        finally:
            signal.signal(signal.SIGTERM, previous_term)
            signal.signal(signal.SIGINT, previous_int)


def _attached_line(prog: ExecguardProgram) -> str:
    return (
        f"execguard attached to lsm {prog.links[0].target} in {prog.mode} mode for cgroup {prog.cgroup} "
        f"(id {prog.cgroup_id}), denying {', '.join(prog.prefixes)}"
    )


def _print_events(prog: ExecguardProgram, timeout: float) -> None:
    for event in prog.poll(timeout):
        print(json.dumps(event.to_dict()), flush=True)
