"""The ``hypermesh`` command.

argparse rather than typer/click: typer costs ~34 ms to import against a 100 ms budget for a whole
``hypermesh profile --json``, and click's usage errors are several lines where we promise one.
Each command lives in its own module with ``register(subparsers)``; its handler takes the parsed
arguments and returns an exit code. Errors are raised as HypermeshError and become one stderr line.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import re
import sys

from hypermesh.cli import hold_ctrl_c
from hypermesh.errors import HypermeshError, InvalidInput, Unsupported
from hypermesh.sampling.sampler import MAX_SECONDS, MIN_INTERVAL

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = ["EPILOG", "interface_name", "interval_seconds", "positive_float", "positive_int", "require_modules"]

# Command modules, imported only to build the parser: each keeps its heavy imports inside its handler.
COMMAND_MODULES = (
    "hypermesh.cli.profile_cmd",
    "hypermesh.cli.sample_cmd",
    "hypermesh.cli.ebpf_cmd",
    "hypermesh.cli.agent_cmd",
    "hypermesh.cli.assets_cmd",
    "hypermesh.cli.cluster_cmd",
)

EPILOG = """\
exit codes: 0 ok, 1 runtime error, 2 bad usage or input, 3 permission denied, 4 unsupported here.
environment: HYPERMESH_BACKEND=linux|portable forces a backend (default: the native one).
Add --debug to any command to see the full traceback of an error."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with errors as one line on stderr and exit code 2.

    The message does not start with the command's name: main() prefixes every error with "hypermesh: error: ", and
    "hypermesh: error: hypermesh profile: ..." said it twice. The command is named in the help it points to."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The deepest (sub)command's defaults win, so after parsing this names the command a user typed: where
        # an unrecognized option sends them for help.
        self.set_defaults(help_prog=self.prog)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InvalidInput(f"{message} (see '{self.prog} --help')")


# What a user types for seconds: ASCII digits with an optional fraction and exponent. float() and int() take far more:
# "1_0" (10), " 5 ", other scripts' digits ("١" is 1) and full-width ones; "²" they refuse. Nobody means those, and
# a flag that silently reads "١٠" as 10 is worse than one that says no.
DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
WHOLE = re.compile(r"[+-]?[0-9]+")


def positive_float(text: str) -> float:
    """Seconds for --interval/--duration: positive, at most MAX_SECONDS (sleep() overflows far above that)."""
    number = text.removesuffix("s")
    if not DECIMAL.fullmatch(number):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds, e.g. 0.5 or 2s")
    value = float(number)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_SECONDS:g} seconds (about 11 days), got {text!r}")
    return value


def interval_seconds(text: str) -> float:
    """A sampling interval: as positive_float, and at least the Sampler's MIN_INTERVAL (1 kHz)."""
    value = positive_float(text)
    if value < MIN_INTERVAL:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_INTERVAL:g} seconds (1 kHz), got {text!r}")
    return value


def positive_int(text: str) -> int:
    if not WHOLE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (ASCII digits 0-9)")
    if len(text) > 18:  # past 4300 digits int() raises; no count, pid or cap here is near 10**18
        raise argparse.ArgumentTypeError(f"{text[:20]}... is too large")
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text!r}")
    return value


def interface_name(text: str) -> str:
    """A network interface name as the kernel accepts one; whether it exists is checked where it is used."""
    from hypermesh.platform.linux.net import interface_name_problem

    problem = interface_name_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


# Modules of an optional extra (pyproject's [project.optional-dependencies]) -> that extra. A base install
# (`pip install hypermesh`) lacks them: a command that needs one says which extra to install and exits 4.
OPTIONAL_MODULES = {
    "starlette": "agent",
    "uvicorn": "agent",
    "prometheus_client": "agent",
    "bcrypt": "agent",
    "httpx": "cluster",
}


def require_modules(command: str, *modules: str) -> None:
    """Unsupported (exit 4) naming the extra to install, unless every one of ``modules`` can be imported.

    Checked before a command starts rather than left to its imports: some run only on a first request
    (prometheus_client on the first scrape), long after the command said it was serving.
    """
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise _missing_extra(command, missing[0])


def _missing_extra(command: str, module: str) -> Unsupported:
    extra = OPTIONAL_MODULES.get(module, "")
    return Unsupported(
        command,
        f"it needs {module}, from the optional {extra!r} extra, which is not installed: pip install 'hypermesh[{extra}]'",
    )


def build_parser() -> ArgumentParser:
    common = ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser = ArgumentParser(
        prog="hypermesh",
        description="One honest, fast view of this machine: what it is (profile), what it does "
        "(sample), what the kernel sees (ebpf), served by a node agent.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"hypermesh {_version()}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue  # a command still being built is simply absent
        module.register(sub, common)
    return parser


def _parse(parser: ArgumentParser, args_list: list[str]) -> argparse.Namespace:
    """parse_args, with unrecognized options blamed on the command they were given to."""
    try:
        args, extras = parser.parse_known_args(args_list)
    except InvalidInput:
        # argparse reports a missing command before an unknown option: "hypermesh --bogus" would say only that
        # COMMAND is required.
        options = [a for a in args_list if a.startswith("-") and a not in ("--debug", "-h", "--help", "--version")]
        if options and not any(a in _COMMANDS for a in args_list):
            raise InvalidInput(
                f"unrecognized option {options[0]!r}; a command comes first: "
                f"{', '.join(_COMMANDS)} (see 'hypermesh --help')"
            ) from None
        raise
    if extras:
        prog = args.help_prog
        raise InvalidInput(f"unrecognized arguments: {' '.join(extras)} (see '{prog} --help')")
    return args


_COMMANDS = tuple(m.rpartition(".")[2].removesuffix("_cmd") for m in COMMAND_MODULES)

# Commands whose help promises that Ctrl-C ends them cleanly (exit 0): a long-running view or server, where Ctrl-C
# is how a user stops it, however early it comes (the agent's start takes a few hundred ms of imports and setup, and
# an interrupt there was exit 130). Other commands keep the shell's convention for an interrupted command: 130.
# These also keep Ctrl-C held (hold_ctrl_c) through their start, until their own stop handler takes it over.
INTERRUPT_IS_A_STOP = ("agent", "sample")


def _command(args_list: list[str]) -> str | None:
    """The command a user typed (the first word that is not an option), whether or not parsing got that far."""
    return next((a for a in args_list if not a.startswith("-")), None)


def _print_traceback() -> None:
    import traceback  # only on an error with --debug: not worth its import on every run

    traceback.print_exc()


def _version() -> str:
    from hypermesh import __version__

    return __version__


def _run(args_list: list[str]) -> int:
    parser = build_parser()
    args = _parse(parser, args_list)
    try:
        return int(args.handler(args))
    except ModuleNotFoundError as exc:
        # The backstop behind require_modules(): an optional module imported where no check looked.
        module = (exc.name or "").partition(".")[0]
        if module not in OPTIONAL_MODULES:
            raise
        raise _missing_extra(args.help_prog, module) from exc


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list or os.environ.get("HYPERMESH_DEBUG") == "1"
    try:
        if _command(args_list) not in INTERRUPT_IS_A_STOP:
            hold_ctrl_c.release()  # raises KeyboardInterrupt here if one came while the CLI was starting
        return _main(args_list, debug)
    except KeyboardInterrupt:  # between the two lines above, or held back since the start
        return _interrupted_code(args_list)


def _interrupted_code(args_list: list[str]) -> int:
    return 0 if _command(args_list) in INTERRUPT_IS_A_STOP else 130


def _main(args_list: list[str], debug: bool) -> int:
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        # Names the kernel holds as bytes (an interface "caf\xe9") reach us decoded as os.listdir decodes them;
        # print them back as those bytes, as ip(8) does and as Python itself does under the C locale, rather
        # than fail on them under a strict UTF-8 locale.
        sys.stdout.reconfigure(errors="surrogateescape")
    try:
        code = _run(args_list)
    except HypermeshError as exc:
        if debug:
            _print_traceback()  # and still the error's own exit code: --debug shows more, it changes nothing
        print(f"hypermesh: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = _interrupted_code(args_list)
    except BrokenPipeError:
        # The reader went away (`| head`): not an error of ours. Point stdout at /dev/null so the interpreter's
        # final flush does not fail again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except Exception as exc:
        if debug:
            _print_traceback()
        print(f"hypermesh: error: {type(exc).__name__}: {exc} (rerun with --debug for details)", file=sys.stderr)
        code = 1
    return code


if __name__ == "__main__":
    sys.exit(main())
