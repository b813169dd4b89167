"""``hypermesh ebpf``: probe the kernel, run the built-in programs, load a user's object, manage pins.

Every ``run`` prints one line on stderr once the program is attached, then waits for ``--duration`` or
Ctrl-C (SIGINT) or SIGTERM; either way it reads the maps, prints the result and detaches. Exit codes are
the usual ones: 0 ok, 1 runtime error (and a verifier rejection), 2 bad input, 3 permission denied,
4 unsupported here.
"""

from __future__ import annotations

import argparse
import json
import sys

from hypermesh.cli.ebpf_tc_cmd import detach_tc, register_tc
from hypermesh.cli.main import interface_name, positive_float, positive_int

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hypermesh.ebpf import ObjectInfo, Program

__all__ = ["register"]


EXIT_CODES = "exit codes: 0 ok, 1 runtime error (or a verifier rejection), 2 bad usage or input, 3 permission denied, 4 unsupported here."
NEEDS = "Needs root, or CAP_BPF + CAP_PERFMON"


class _Formatter(argparse.HelpFormatter):
    """Descriptions wrapped to the terminal; epilogs (examples, one a line) kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _epilog(*examples: str) -> str:
    return "examples:\n" + "\n".join(f"  {e}" for e in examples) + "\n\n" + EXIT_CODES


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    raw = _Formatter
    p = sub.add_parser(
        "ebpf",
        parents=[common],
        help="what the kernel sees: eBPF probes and built-in programs (Linux, root or CAP_BPF)",
        description="eBPF through libbpf: probe the kernel, run the built-in programs, load an object "
        f"file, list and remove pins. {NEEDS} (+ CAP_NET_ADMIN for xdp); 'probe' needs nothing.",
        epilog=_epilog(
            "hypermesh ebpf probe                                what this kernel supports",
            "hypermesh ebpf run syscalls --duration 5 --top 10   the busiest syscalls for 5 s",
            "hypermesh ebpf run xdp -i eth0 --duration 10        packets by protocol on eth0",
        ),
        formatter_class=raw,
    )
    p.set_defaults(handler=lambda _args: _usage(p))
    ebpf_sub = p.add_subparsers(title="ebpf commands", metavar="COMMAND")

    q = ebpf_sub.add_parser(
        "probe",
        parents=[common],
        help="kernel, BTF, mounts, capabilities and each program/attach type: supported or why not",
        description="Report what this kernel and process can do with eBPF: kernel release, libbpf version, "
        "BTF, whether bpffs and tracefs are mounted, the capabilities held, unprivileged_bpf_disabled, and for "
        "each program/attach type (xdp, tracepoint, raw_tp, fentry, kprobe, ringbuf) supported or why not. "
        "Needs no privileges (without CAP_BPF the features read as unsupported, with the reason).",
        epilog=_epilog("hypermesh ebpf probe", "hypermesh ebpf probe --json | jq '.features[] | select(.supported)'"),
        formatter_class=raw,
    )
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(handler=_probe)

    run = ebpf_sub.add_parser(
        "run",
        parents=[common],
        help="run a built-in program and print what it saw",
        description="Load and attach one of the built-in programs (xdp, tc, syscalls, biolatency, execsnoop), "
        "wait for --duration seconds or Ctrl-C/SIGTERM, print what it counted and detach. "
        f"{NEEDS} (+ CAP_NET_ADMIN for xdp and tc).",
        epilog=_epilog(
            "hypermesh ebpf run syscalls --duration 5",
            "hypermesh ebpf run biolatency --duration 10 --json   histogram as JSON",
            "hypermesh ebpf run execsnoop                         until Ctrl-C",
        ),
        formatter_class=raw,
    )
    run.set_defaults(handler=lambda _args: _usage(run))
    run_sub = run.add_subparsers(title="programs", metavar="PROGRAM")
    timing = argparse.ArgumentParser(add_help=False)
    timing.add_argument(
        "--duration",
        type=positive_float,
        default=None,
        metavar="S",
        help="seconds to run, at most 1e6 (default: until Ctrl-C or SIGTERM, which exit 0)",
    )
    timing.add_argument("--json", action="store_true", help="print JSON")
    timing.add_argument(
        "--pin",
        action="store_true",
        help="pin links and maps under /sys/fs/bpf/hypermesh/NAME (the program's name; xdp: xdp-IFNAME, one per "
        "interface): the program stays attached after exit until 'hypermesh ebpf detach NAME' (needs bpffs mounted)",
    )

    x = run_sub.add_parser(
        "xdp",
        parents=[common, timing],
        help="packet and byte counts by protocol on an interface (XDP_PASS)",
        description="Count packets and bytes arriving on one interface by protocol (ipv4/ipv6 x tcp/udp/icmp/"
        "other, arp, other); every packet is passed on (XDP_PASS). Needs root, or CAP_BPF + CAP_PERFMON + CAP_NET_ADMIN. "
        "Native (driver) mode needs a driver with XDP support; generic mode works on every interface.",
        epilog=_epilog(
            "hypermesh ebpf run xdp -i eth0 --duration 10",
            "hypermesh ebpf run xdp -i lo --mode generic --duration 1 --json",
        ),
        formatter_class=raw,
    )
    x.add_argument(
        "--interface", "-i", type=interface_name, required=True, metavar="IF", help="network interface, e.g. eth0"
    )
    x.add_argument(
        "--mode",
        choices=("auto", "native", "generic"),
        default="auto",
        help="XDP mode (default auto: native, else generic); native on a driver without XDP support exits 4",
    )
    x.set_defaults(handler=_run, program="xdp")

    s = run_sub.add_parser(
        "syscalls",
        parents=[common, timing],
        help="syscall counts per name and per process",
        description="Count system calls per name and per process (pid, comm) while attached; --pid and --cgroup "
        f"filter in the kernel. {NEEDS}; only --attach tracepoint needs tracefs mounted.",
        epilog=_epilog(
            "hypermesh ebpf run syscalls --duration 5 --top 10",
            "hypermesh ebpf run syscalls --pid 1234 --duration 2 --json",
        ),
        formatter_class=raw,
    )
    s.add_argument(
        "--pid", type=positive_int, default=None, metavar="PID", help="count only this process (filtered in the kernel)"
    )
    s.add_argument("--top", type=positive_int, default=None, metavar="N", help="show only the N largest counts")
    s.add_argument(
        "--attach",
        choices=("auto", "kprobe", "raw_tracepoint", "tracepoint"),
        default="auto",
        help="hook: auto takes a kprobe where the kernel has kprobes, else the raw tracepoint sys_enter (no "
        "tracefs needed), else the tracefs tracepoint raw_syscalls:sys_enter",
    )
    s.set_defaults(handler=_run, program="syscalls")

    b = run_sub.add_parser(
        "biolatency",
        parents=[common, timing],
        help="block I/O latency as a log2 histogram per device",
        description="Measure block I/O latency (request issue to completion) as a log2 histogram of "
        f"microseconds per device. {NEEDS}; tracefs only where the kernel lacks raw tracepoints or BTF.",
        epilog=_epilog("hypermesh ebpf run biolatency --duration 10", "hypermesh ebpf run biolatency --json"),
        formatter_class=raw,
    )
    b.set_defaults(handler=_run, program="biolatency")

    e = run_sub.add_parser(
        "execsnoop",
        parents=[common, timing],
        help="exec events as they happen (--json: one JSON object a line)",
        description="Print every exec (time, pid, ppid, uid, comm, filename, and the first 20 arguments within "
        f"1 KiB, as libbpf-tools' execsnoop bounds them) as it happens, through a BPF ring buffer; --pid and "
        f"--cgroup filter in the kernel. {NEEDS}. --json: one event a line, then "
        '{"lost": N} (events the full ring buffer dropped).',
        epilog=_epilog(
            "hypermesh ebpf run execsnoop", "hypermesh ebpf run execsnoop --duration 60 --json > execs.jsonl"
        ),
        formatter_class=raw,
    )
    e.add_argument(
        "--pid", type=positive_int, default=None, metavar="PID", help="only execs of this process or its children"
    )
    for parser in (s, e):
        parser.add_argument(
            "--cgroup",
            default=None,
            metavar="PATH",
            help="only processes in this cgroup v2 directory or below it (e.g. /sys/fs/cgroup/unified/NAME)",
        )
    e.set_defaults(handler=_run, program="execsnoop")
    register_tc(run_sub, [common, timing], _run, raw, _epilog)

    from hypermesh.cli.ebpf_profile_cmd import register as register_profile

    register_profile(ebpf_sub, common, formatter=raw, epilog=_epilog, needs=NEEDS)

    from hypermesh.cli.ebpf_execguard_cmd import register_execguard

    register_execguard(run_sub, common, raw, _epilog)

    ld = ebpf_sub.add_parser(
        "load",
        parents=[common],
        help="open a .bpf.o, list its programs and maps, load it into the kernel and unload it",
        description="Check a compiled BPF object (built with clang -target bpf): open it, list its programs "
        "and maps, load it into the kernel (the verifier runs; a rejection prints the log's last 20 lines and "
        f"exits 1) and unload it again. Nothing is attached. {NEEDS}.",
        epilog=_epilog(
            "hypermesh ebpf load prog.bpf.o",
            "hypermesh ebpf load prog.bpf.o --json | jq '.programs[].name'",
        ),
        formatter_class=raw,
    )
    ld.add_argument("file", metavar="FILE.bpf.o", help="a compiled BPF ELF object (regular file, at most 64 MiB)")
    ld.add_argument("--json", action="store_true", help="print JSON")
    ld.set_defaults(handler=_load)

    st = ebpf_sub.add_parser(
        "status",
        parents=[common],
        help="what hypermesh pinned under /sys/fs/bpf/hypermesh",
        description="List what 'hypermesh ebpf run --pin' left pinned under /sys/fs/bpf/hypermesh (links and "
        "maps, with their kernel ids; for xdp the interface and whether the link is still attached: deleting "
        "the interface detaches it). Needs read access to bpffs (root); the ids need CAP_BPF.",
        epilog=_epilog("hypermesh ebpf status", "hypermesh ebpf status --json"),
        formatter_class=raw,
    )
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(handler=_status)

    d = ebpf_sub.add_parser(
        "detach",
        parents=[common],
        help="remove the pins of NAME (detaches it)",
        description="Remove the pins of NAME under /sys/fs/bpf/hypermesh: once no process holds it, the "
        "kernel detaches and frees the program. Needs root (write access to bpffs).",
        epilog=_epilog(
            "hypermesh ebpf detach syscalls",
            "hypermesh ebpf detach xdp-eth0   (xdp is pinned per interface)",
            "hypermesh ebpf status            (lists the NAMEs)",
        ),
        formatter_class=raw,
    )
    d.add_argument(
        "name", metavar="NAME", help="a pinned program's name, as 'hypermesh ebpf status' lists it (e.g. xdp-eth0)"
    )
    d.set_defaults(handler=_detach)


def _usage(parser: argparse.ArgumentParser) -> int:
    from hypermesh.errors import InvalidInput

    raise InvalidInput(f"a command is required (see '{parser.prog} --help')")


# ---------------------------------------------------------------------------------------- probe


def _probe(args: argparse.Namespace) -> int:
    import hypermesh.ebpf

    report = hypermesh.ebpf.probe()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    yes = {True: "yes", False: "no"}
    print(f"kernel            {report.kernel_release}")
    print(f"libbpf            {report.libbpf_version or 'not installed'}")
    print(f"BTF               {yes[report.btf_present]}")
    print(f"bpffs mounted     {yes[report.bpffs_mounted]}")
    print(f"tracefs mounted   {yes[report.tracefs_mounted]}")
    held = [name for name, ok in report.capabilities.items() if ok]
    print(f"capabilities      {', '.join(held) or 'none'}")
    print(f"unprivileged_bpf_disabled {report.unprivileged_bpf_disabled}")
    print(f"active LSMs       {','.join(report.lsm_modules) if report.lsm_modules is not None else 'unknown'}")
    print()
    for f in report.features:
        state = "supported" if f.supported else f"unsupported because {f.reason}"
        note = f" ({f.reason})" if f.supported and f.reason else ""
        print(f"{f.name:<12} {state}{note}")
    return 0


# ------------------------------------------------------------------------------------------ run


class _Stop(KeyboardInterrupt):
    """SIGTERM, turned into an exception so the same clean path as Ctrl-C runs (and, before the
    program is attached, the same exit as an interrupted command: 130, no traceback)."""


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise _Stop


def _run(args: argparse.Namespace) -> int:
    import signal
    import time

    import hypermesh.ebpf

    options: dict[str, object] = getattr(args, "options", {})  # set by a command of its own module (tc)
    if args.program == "xdp":
        options = {"interface": args.interface, "mode": args.mode}
    elif args.program == "syscalls":
        options = {"pid": args.pid, "attach": args.attach, "top": args.top, "cgroup": args.cgroup}
    elif args.program == "execsnoop":
        options = {"pid": args.pid, "cgroup": args.cgroup}

    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_int = signal.getsignal(signal.SIGINT)
    # From the attach until the "attached" line is out, SIGINT/SIGTERM are only noted: a stop landing
    # in between used to end the run (exit 0, a result) without ever saying what had been attached,
    # and execsnoop then printed no header and dropped what the ring buffer held. A noted stop ends
    # the run right after the line, through the same path as one that comes later. (A signal during
    # the load, before anything is attached, still interrupts: exit 130.)
    stop: list[int] = []

    def note(signum: int, _frame: object) -> None:
        stop.append(signum)

    prog: Program | None = None
    try:
        prog = hypermesh.ebpf.load(args.program, **options)
        if args.pin:
            prog.check_pin_free()
        how_long = f"running {args.duration:g} s" if args.duration else "Ctrl-C to stop"
        signal.signal(signal.SIGINT, note)
        signal.signal(signal.SIGTERM, note)
        prog.attach()
        pinned_at = prog.pin() if args.pin else None
        started = time.monotonic()
        pinned = "" if pinned_at is None else f", pinned at {pinned_at}"
        print(f"hypermesh: {_attached_line(prog)}{pinned}; {how_long}", file=sys.stderr, flush=True)
        try:
            if args.program == "execsnoop":
                from hypermesh.cli.execsnoop_view import stream_exec

                # keeps noting signals: raising inside the ring buffer's ctypes callback loses them
                stream_exec(prog, args, stop, {signal.SIGINT: previous_int, signal.SIGTERM: _on_sigterm})
            else:
                # Restored inside the try: a signal from here on raises where it is caught.
                signal.signal(signal.SIGINT, previous_int)
                signal.signal(signal.SIGTERM, _on_sigterm)
                if stop:
                    raise KeyboardInterrupt
                if args.duration:
                    time.sleep(args.duration)
                else:
                    _wait_forever()
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM as _Stop
            elapsed = time.monotonic() - started
            print(f"hypermesh: stopped after {elapsed:.2f} s", file=sys.stderr, flush=True)
        if args.program != "execsnoop":
            _print_result(args, prog)
        _warn_if_interface_gone(prog)
        if pinned_at is not None:
            print(
                f"hypermesh: {args.program} stays attached; 'hypermesh ebpf detach {prog.pin_name}' removes it",
                file=sys.stderr,
            )
        return 0
    finally:
        # A second Ctrl-C or SIGTERM while detaching must not cut close() short: the kernel's RCU wait
        # (up to ~90 ms) is all that is left.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if prog is not None:
                prog.close()
        finally:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, previous_int)


def _wait_forever() -> None:
    import threading

    threading.Event().wait()


def _attached_line(prog: Program) -> str:
    from hypermesh.ebpf.programs.syscalls import SyscallsProgram
    from hypermesh.ebpf.programs.xdp import XdpProgram

    if isinstance(prog, XdpProgram):
        fallback = f" (fell back: {prog.native_refused})" if prog.native_refused else ""
        return f"xdp attached to {prog.interface} in {prog.attached_mode} mode{fallback}"
    if isinstance(prog, SyscallsProgram):
        why = f" (auto: {prog.attach_reason})" if prog.requested_attach == "auto" else ""
        target = f"{prog.links[0].kind} {prog.links[0].target}"
        pid = f", pid {prog.pid}" if prog.pid else ""
        return f"syscalls attached to {target}{why}{pid}"
    targets = ", ".join(f"{link.kind} {link.target}" for link in prog.links)
    return f"{prog.name} attached to {targets}"


def _warn_if_interface_gone(prog: Program) -> None:
    from hypermesh.ebpf.programs.xdp import XdpProgram

    if isinstance(prog, XdpProgram) and prog.interface_gone():
        print(
            f"hypermesh: {prog.interface} was deleted during the run: the counts stop where it went",
            file=sys.stderr,
            flush=True,
        )


def _print_result(args: argparse.Namespace, prog: Program) -> None:
    from hypermesh.ebpf.programs.biolatency import BioLatency
    from hypermesh.ebpf.programs.syscalls import PROCESS_TABLE_SIZE, SyscallCounts
    from hypermesh.ebpf.programs.xdp import XdpCounts

    result = prog.read()
    if isinstance(result, SyscallCounts) and result.untracked:
        print(
            f"hypermesh: {result.untracked} syscalls came from processes beyond the first "
            f"{PROCESS_TABLE_SIZE} (the per-process table was full): in the total, in no process's count",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(result.to_dict()), flush=True)
        return

    if getattr(args, "print_text", None):  # a program registered from its own module (tc)
        args.print_text(result)
    elif isinstance(result, XdpCounts):
        print(f"{'PROTOCOL':<12} {'PACKETS':>12} {'BYTES':>14}")
        for proto, packets in result.packets.items():
            print(f"{proto:<12} {packets:>12} {result.bytes[proto]:>14}")
        print(f"{'total':<12} {result.total_packets:>12} {result.total_bytes:>14}")
    elif isinstance(result, SyscallCounts):
        print(f"{'SYSCALL':<24} {'COUNT':>10}")
        for name, count in result.syscalls.items():
            print(f"{name:<24} {count:>10}")
        print(f"\n{'PID':>7} {'COMM':<16} {'COUNT':>10}")
        for p in result.processes:
            print(f"{p.pid:>7} {p.comm:<16} {p.count:>10}")
        print(f"\ntotal {result.total} syscalls ({result.attach_type})")
    elif isinstance(result, BioLatency):
        if not result.devices:
            print("no block I/O completed while attached")
        for dev in result.devices:
            print(f"device {dev.name or '?'} ({dev.device}): {dev.total} requests")
            print(f"{'usecs':>22} : {'count':<8} distribution")
            peak = max(b.count for b in dev.buckets) or 1
            for bucket in dev.buckets:
                bar = "*" * round(40 * bucket.count / peak)
                print(f"{bucket.low_us:>10} -> {bucket.high_us:<9} : {bucket.count:<8} |{bar:<40}|")


# ---------------------------------------------------------------------------------- load, pins


def _load(args: argparse.Namespace) -> int:
    from hypermesh.ebpf import ObjectSpec
    from hypermesh.ebpf.probe import check_capabilities
    from hypermesh.errors import HypermeshError, VerifierError

    with ObjectSpec(args.file) as spec:
        before = spec.info()
        check_capabilities(("CAP_BPF",), what=f"loading {args.file}")
        try:
            collection = spec.load()
        except HypermeshError as exc:
            # What the object holds is still worth seeing, with the program the kernel refused marked.
            _print_object(args, before, refused=spec.refused_program, error=str(exc))
            if isinstance(exc, VerifierError):
                print(exc.log_tail(20), file=sys.stderr)
            raise
        with collection:
            info = collection.info()
    _print_object(args, info, refused=None, error=None)
    return 0


def _print_object(args: argparse.Namespace, info: ObjectInfo, refused: str | None, error: str | None) -> None:
    if args.json:
        extra = {"loaded": True, "unloaded": True} if error is None else {"loaded": False, "refused_program": refused}
        print(json.dumps({**info.to_dict(), **extra}, indent=2), flush=True)
        return
    if error is None:
        outcome = "loaded and unloaded"
    else:
        outcome = f"NOT loaded: the kernel refused program {refused!r}" if refused else "NOT loaded"
    print(f"{args.file}: {len(info.programs)} programs, {len(info.maps)} maps; {outcome}")
    for p in info.programs:
        mark = "  <- refused" if p.name == refused else ""
        print(f"  program {p.name:<24} section {p.section:<32} type {p.type:<14} {p.instructions} insns{mark}")
    for m in info.maps:
        print(f"  map     {m.name:<24} type {m.type:<16} key {m.key_size} B, value {m.value_size} B, "
              f"max {m.max_entries}")  # fmt: skip
    sys.stdout.flush()


def _status(args: argparse.Namespace) -> int:
    import hypermesh.ebpf
    from hypermesh.ebpf.pin import require_bpffs

    require_bpffs("listing pinned programs")
    entries = hypermesh.ebpf.pinned()
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    if not entries:
        print(f"nothing pinned under {hypermesh.ebpf.PIN_ROOT}")
    for e in entries:
        where = f"  interface {e.interface}" if e.interface else ""
        state = {None: "", True: ", attached", False: ", NOT attached (the kernel detached it: interface gone)"}
        print(f"{e.name}  {e.path}{where}{state[e.attached] if e.interface else ''}")
        for o in e.objects:
            detached = "  (detached)" if o.attached is False else ""
            print(f"  {o.kind:<5} id {o.id if o.id is not None else '?':<6} {o.path}{detached}")
    return 0


def _detach(args: argparse.Namespace) -> int:
    import hypermesh.ebpf

    if args.name.startswith("tc-"):  # also clsact filters a killed run left, which are not pins
        return detach_tc(args.name)
    entry = hypermesh.ebpf.detach_pinned(args.name)
    print(f"detached {entry.name}: removed {len(entry.objects)} pins from {entry.path}")
    return 0
