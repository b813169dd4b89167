"""``hypermesh ebpf run execsnoop``'s output: exec events as they come, a table line or a JSON line each."""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from hypermesh.ebpf import Program
    from hypermesh.ebpf.programs.execsnoop import ExecEvent, ExecsnoopProgram

__all__ = ["HEADER", "exec_line", "stream_exec"]

HEADER = f"{'TIME':<12} {'PID':>7} {'PPID':>7} {'UID':>5} {'COMM':<16} FILENAME  ARGV"


def stream_exec(prog: Program, args: argparse.Namespace, stop: list[int], handlers: dict[int, Any]) -> None:
    """Print exec events until the duration ends or a signal is noted in ``stop`` (maybe already
    before the first poll), then what the ring buffer still holds; ``handlers`` are restored last."""
    from hypermesh.ebpf.programs.execsnoop import ExecsnoopProgram

    assert isinstance(prog, ExecsnoopProgram)
    # Events arrive through a ctypes callback, and an exception a signal handler raises inside one is
    # printed and swallowed by ctypes: Ctrl-C or SIGTERM would be lost under a burst of execs. While
    # streaming, the handlers (installed by the caller before the attach) only note the signal; the
    # loop sees it within one poll (the poll itself returns at once, EINTR) and ends the run through
    # the usual KeyboardInterrupt path.
    reported, next_check = 0, 0.0
    try:
        if not args.json:
            print(HEADER, flush=True)
        deadline = None if args.duration is None else time.monotonic() + args.duration
        while not stop:
            now = time.monotonic()
            left = 0.1 if deadline is None else min(0.1, deadline - now)
            if left <= 0:
                break
            if now >= next_check:  # at most once a second: say so when the kernel had to drop events
                reported, next_check = _report_lost(prog, reported), now + 1.0
            _print_exec_events(prog.poll(left), args.json)
        # What the kernel delivered before the stop is still in the ring (a few hundred events when the
        # output was slow): print it, do not drop it. One poll consumes all that is there.
        _print_exec_events(prog.poll(0), args.json)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        lost = _report_lost(prog, reported, final=True)
        if args.json:
            print(json.dumps({"lost": lost}), flush=True)
    if stop:
        raise KeyboardInterrupt


def exec_line(event: ExecEvent) -> str:
    """One table line. Filename and arguments are shell-quoted: a space inside one is not a column break; a
    filename or an argv cut short ends with '...'."""
    clock = time.strftime("%H:%M:%S", time.localtime(event.timestamp)) + f".{int(event.timestamp % 1 * 1000):03d}"
    name = shlex.quote(event.filename) + ("..." if event.filename_truncated else "")
    argv = shlex.join(event.argv) + (" ..." if event.argv_truncated else "")
    return f"{clock:<12} {event.pid:>7} {event.ppid:>7} {event.uid:>5} {event.comm:<16} {name}  {argv}"


def _print_exec_events(events: list[ExecEvent], as_json: bool) -> None:
    for event in events:
        print(json.dumps(event.to_dict()) if as_json else exec_line(event), flush=True)


def _report_lost(prog: ExecsnoopProgram, reported: int, final: bool = False) -> int:
    """A line on stderr when the kernel dropped exec events (ring buffer full); returns the count so far."""
    lost = prog.lost()
    if lost > reported or (final and lost):
        what = f"{lost} exec events lost in total" if final else f"{lost - reported} exec events lost"
        print(
            f"hypermesh: {what}: the ring buffer was full because the output is read too slowly",
            file=sys.stderr,
            flush=True,
        )
    return lost
