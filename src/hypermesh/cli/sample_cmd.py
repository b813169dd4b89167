"""``hypermesh sample``: what this machine does, live."""

from __future__ import annotations

import argparse
import signal
import sys
import time

from hypermesh.cli.main import EPILOG, interval_seconds, positive_int

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "sample",
        parents=[common],
        help="live CPU, memory, pressure, disk and network rates",
        description="Sample CPU (total and per core), memory and pressure (PSI), disk and network rates every "
        "--interval seconds. The first sample covers a real interval: there is no fake 0 % first line. "
        "Without --count it runs until Ctrl-C or SIGTERM, which exit 0. On a terminal the table redraws in place; "
        "into a file or a pipe it prints one line per sample.",
        epilog="examples:\n  hypermesh sample                       live table, once a second\n"
        "  hypermesh sample --interval 0.01 --count 500 --json > samples.jsonl   100 Hz, JSON lines\n"
        "  hypermesh sample --count 1 --json | jq .cpu.per_core   one sample over 1 s\n\n" + EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--interval",
        type=interval_seconds,
        default=1.0,
        metavar="S",
        help="seconds between samples, 0.001 (1 kHz) or more; '2s' works too (default 1)",
    )
    p.add_argument(
        "--count",
        type=positive_int,
        default=None,
        metavar="N",
        help="stop after N samples (default: run until Ctrl-C)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per sample (JSON lines)")
    p.add_argument(
        "--root", default="/", metavar="DIR", help="sample the machine mounted at DIR, e.g. /host (default /)"
    )
    p.set_defaults(handler=run)


class _StopSignal:
    """SIGINT and SIGTERM end a run (exit 0, not 130 or 143): the handler only notes the signal, and the stream ends
    at its next look (Sampler.stream's ``stop``: every 0.1 s at most while it waits, after each sample otherwise).

    Raising KeyboardInterrupt from the handler, as Python's own does, lost stops and exit codes: one raised while a
    weak reference's callback or a finalizer runs is printed as "Exception ignored" and dropped, and one raised while
    code built from a string runs (dataclasses, namedtuple: exec) makes Python end by SIGINT at exit (-2, silently),
    even when caught (1 run in 200 with Ctrl-C in the first 0.3 s, under load). threading.Event cannot be set from
    the handler either: the handler may run while the same thread holds the Event's lock."""

    def __init__(self) -> None:
        self.signals: list[int] = []

    def __call__(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)

    def is_set(self) -> bool:
        return bool(self.signals)

    def wait(self, timeout: float | None = None) -> bool:
        if not self.signals:
            time.sleep(0.1 if timeout is None else timeout)  # a signal's handler runs, then the sleep goes on (PEP 475)
        return bool(self.signals)


def run(args: argparse.Namespace) -> int:
    # Imported while Ctrl-C is still held: a KeyboardInterrupt raised inside an import can be dropped, and one raised
    # while a module runs code it built as a string (dataclasses, namedtuple) makes Python end by SIGINT (-2) at exit.
    import hypermesh

    if args.json:
        import json  # noqa: F401
    else:
        import hypermesh.cli.render  # noqa: F401

    stop = _StopSignal()
    previous_term = signal.signal(signal.SIGTERM, stop)
    # Ctrl-C is held from the command's start (hold_ctrl_c; main.INTERRUPT_IS_A_STOP) until here.
    held = signal.signal(signal.SIGINT, stop)
    try:
        if getattr(held, "held", False) is True:
            return 0
        return _sample(args, stop)
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, held)


def _sample(args: argparse.Namespace, stop: _StopSignal) -> int:
    import hypermesh

    sampler = None
    try:
        # A stop noted while the Sampler opens its files (or rich loads) ends the stream before its first sample.
        backend = None
        if args.root != "/":
            from hypermesh.platform.linux import LinuxBackend

            backend = LinuxBackend(root=args.root)
        sampler = hypermesh.Sampler(min_interval=min(args.interval, 0.1), backend=backend)
        stream = sampler.stream(args.interval, args.count, stop=stop)
        if args.json:
            import json

            out = sys.stdout
            for sample in stream:
                out.write(json.dumps(sample.to_dict(), separators=(",", ":")) + "\n")
                out.flush()
        else:
            from hypermesh.cli.render import live_samples

            live_samples(stream, args.interval)
    finally:
        if sampler is not None:
            sampler.close()
    return 0
