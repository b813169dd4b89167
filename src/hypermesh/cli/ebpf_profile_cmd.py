"""``hypermesh ebpf profile``: sample on-CPU stacks for a while, write folded stacks, an SVG flame graph
or JSON.

Progress goes to stderr for the whole duration (a countdown line on a terminal, a start and an end
line otherwise); Ctrl-C or SIGTERM ends the profile early and the output is still written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from hypermesh.cli.main import positive_float, positive_int

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from hypermesh.ebpf.programs.profile import ProfileProgram, ProfileReport

__all__ = ["register"]

FORMATS = ("folded", "svg", "json")
DEFAULT_DURATION_S = 10.0


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
    *,
    formatter: type[argparse.HelpFormatter],
    epilog: Callable[..., str],
    needs: str,
) -> None:
    """Add ``profile`` under ``hypermesh ebpf`` (``formatter``, ``epilog`` and ``needs`` are that command's)."""
    p = sub.add_parser(
        "profile",
        parents=[common],
        help="sample on-CPU stacks (kernel and user) and write a flame graph, folded stacks or JSON",
        description="Sample the stacks of what runs on every CPU with a software cpu-clock perf event "
        "(99 Hz by default) and a BPF stack map, then name the frames: kernel ones from /proc/kallsyms, user "
        "ones from the ELF symbols of the mapped files, JIT ones from /tmp/perf-PID.map. Writes FlameGraph's "
        "folded stacks, a self-contained interactive SVG flame graph or JSON. Samples and stacks that could "
        f"not be recorded and frames without a name are counted and shown. {needs}. Ctrl-C ends early and "
        "still writes the output.",
        epilog=epilog(
            "hypermesh ebpf profile --duration 10 --format svg -o profile.svg",
            "hypermesh ebpf profile --pid 1234 --duration 30 > stacks.folded",
            "hypermesh ebpf profile --cgroup /sys/fs/cgroup/cpu/web --format json -o web.json",
        ),
        formatter_class=formatter,
    )
    who = p.add_mutually_exclusive_group()
    who.add_argument("--pid", type=positive_int, metavar="PID", help="only this process (filtered in the kernel)")
    who.add_argument(
        "--cgroup",
        metavar="PATH",
        help="only processes in this cgroup directory or below it (v1 controller hierarchy or cgroup2; in the kernel)",
    )
    p.add_argument(
        "--duration",
        type=positive_float,
        default=DEFAULT_DURATION_S,
        metavar="S",
        help=f"seconds to sample (default {DEFAULT_DURATION_S:g}); Ctrl-C or SIGTERM ends early",
    )
    p.add_argument(
        "--frequency", type=positive_int, default=99, metavar="HZ", help="samples per second per CPU (default 99)"
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="output format (default: from --output's suffix .svg/.json, else folded)",
    )
    p.add_argument("--output", "-o", metavar="FILE", default=None, help="write here instead of stdout")
    p.set_defaults(handler=_profile)


def _format_of(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    suffix = os.path.splitext(args.output or "")[1].lower()
    return {".svg": "svg", ".json": "json"}.get(suffix, "folded")


def _profile(args: argparse.Namespace) -> int:
    import signal

    import hypermesh.ebpf
    from hypermesh.ebpf.programs.profile import ProfileProgram

    fmt = _format_of(args)
    if args.output:
        _check_writable(args.output)
    stop: list[int] = []

    def note(signum: int, _frame: object) -> None:
        stop.append(signum)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    prog = hypermesh.ebpf.load("profile", pid=args.pid, cgroup=args.cgroup, frequency_hz=args.frequency)
    assert isinstance(prog, ProfileProgram)
    try:
        for sig in previous:
            signal.signal(sig, note)
        prog.attach()
        _wait(prog, args.duration, stop)
        report = prog.read()
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the detach short
        try:
            prog.close()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    _write(args, fmt, report)
    return 0


def _check_writable(path: str) -> None:
    from hypermesh.errors import InvalidInput

    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InvalidInput(f"--output {path}: no such directory {directory}")
    if os.path.isdir(path):
        raise InvalidInput(f"--output {path} is a directory: give a file name")
    if not os.access(directory, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise InvalidInput(f"--output {path} is not writable: choose another path")


def _wait(prog: ProfileProgram, duration: float, stop: list[int]) -> None:
    import time

    tty = sys.stderr.isatty()
    where = f"pid {prog.pid}" if prog.pid else f"cgroup {prog.cgroup.path}" if prog.cgroup else "every process"
    print(
        f"hypermesh: profiling {where} on {len(prog.cpus)} CPUs at {prog.frequency_hz} Hz for {duration:g} s "
        "(Ctrl-C ends early)",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    deadline = started + duration
    next_snapshot = started
    while not stop:
        now = time.monotonic()
        if now >= deadline:
            break
        if now >= next_snapshot:  # the maps of the processes seen so far, while they still run
            seen = prog.remember_processes()
            next_snapshot = now + 1.0
            if tty:
                left = deadline - now
                sys.stderr.write(f"\rhypermesh: {left:5.0f} s left, {seen} processes sampled so far \x1b[K")
                sys.stderr.flush()
        time.sleep(min(0.1, max(0.0, deadline - now)))
    prog.remember_processes()
    if tty:
        sys.stderr.write("\r\x1b[K")
    if stop:
        print(f"hypermesh: stopped after {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)


def _write(args: argparse.Namespace, fmt: str, report: ProfileReport) -> None:
    from hypermesh.ebpf.programs.profile import folded, report_summary, report_svg

    if fmt == "json":
        text = json.dumps(report.to_dict()) + "\n"
    elif fmt == "svg":
        text = report_svg(report)
    else:
        text = folded(report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    for note in report.notes:
        print(f"hypermesh: {note}", file=sys.stderr, flush=True)
    target = f"; wrote {args.output}" if args.output else ""
    print(f"hypermesh: {report_summary(report)}{target}", file=sys.stderr, flush=True)
