"""``hypermesh sample``: what this machine does, live."""

from __future__ import annotations

import argparse
import signal
import sys

from hypermesh.cli.main import EPILOG, interval_seconds, positive_int

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from hypermesh.model import Sample

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


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager, ``timeout``, ``kill``) ends a run as Ctrl-C does: exit 0, not 143."""


# Set by a stop signal: a KeyboardInterrupt raised while a weak reference's callback or a finalizer runs is printed
# as "Exception ignored" and dropped (the agent kept serving after one); the stream then ends at its next sample.
_STOPPED: list[int] = []


def _on_stop_signal(signum: int, _frame: object) -> None:
    _STOPPED.append(signum)
    raise _Terminated if signum == signal.SIGTERM else KeyboardInterrupt


def _until_stopped(stream: Iterator[Sample]) -> Iterator[Sample]:
    for sample in stream:
        if _STOPPED:
            return
        yield sample


def run(args: argparse.Namespace) -> int:
    _STOPPED.clear()
    # Imported while Ctrl-C is still held: a KeyboardInterrupt raised inside an import can be dropped, and one raised
    # while a module runs code it built as a string (dataclasses, namedtuple) makes Python end by SIGINT (-2) at exit.
    import hypermesh

    if args.json:
        import json  # noqa: F401
    else:
        import hypermesh.cli.render  # noqa: F401

    previous_term = signal.signal(signal.SIGTERM, _on_stop_signal)
    # Ctrl-C is held from the command's start (hold_ctrl_c; main.INTERRUPT_IS_A_STOP) until here.
    held = signal.signal(signal.SIGINT, _on_stop_signal)
    try:
        if getattr(held, "held", False) is True:
            return 0
        return _sample(args)
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, held)


def _sample(args: argparse.Namespace) -> int:
    import hypermesh

    sampler = None
    try:
        # Inside the try: Ctrl-C while the Sampler opens its files (or rich loads) ends the run like any other.
        backend = None
        if args.root != "/":
            from hypermesh.platform.linux import LinuxBackend

            backend = LinuxBackend(root=args.root)
        sampler = hypermesh.Sampler(min_interval=min(args.interval, 0.1), backend=backend)
        stream = _until_stopped(sampler.stream(args.interval, args.count))
        if args.json:
            import json

            out = sys.stdout
            for sample in stream:
                out.write(json.dumps(sample.to_dict(), separators=(",", ":")) + "\n")
                out.flush()
        else:
            from hypermesh.cli.render import live_samples

            live_samples(stream, args.interval)
    except KeyboardInterrupt:
        pass  # Ctrl-C (or SIGTERM) is how a live view ends: not an error
    finally:
        if sampler is not None:
            sampler.close()
    return 0
