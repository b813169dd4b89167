"""Ctrl-C while the ``hypermesh`` command starts is held back until the command can handle it.

The command's modules take tens to hundreds of milliseconds to import (argparse, the command modules, the agent's web
stack); a KeyboardInterrupt raised inside an import escaped main() as a traceback, and one raised while a weak
reference's callback runs (importlib's module locks have one) is printed as "Exception ignored" and lost: the agent then
kept serving after its Ctrl-C. ``hypermesh.cli``'s ``__init__`` holds SIGINT as soon as the package is imported by
the command itself (the console script or ``python -m hypermesh.cli.main``), never when a program imports these
modules for its own use. Holding means a handler that only notes the signal: nothing is raised, so nothing is lost.

- ``release()`` (main() calls it for most commands) restores Python's handler and raises the held interrupt where
  main() turns it into the command's exit code.
- A command with its own stop (the agent) keeps holding until it installs its handler: ``signal.signal`` returns
  the holding handler, whose ``held`` attribute says whether a Ctrl-C came meanwhile, and the command then stops at
  once (agent/server.py reads the attribute: the agent does not import the command line).

The hold starts while this module is imported (its last line), so once the import of ``hypermesh.cli.hold_ctrl_c``
has completed (what ``python -X importtime`` reports), Ctrl-C is held: the start-up test waits for exactly that.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

__all__ = ["hold", "release"]


class _Hold:
    """The SIGINT handler while Ctrl-C is held: notes the signal and raises nothing."""

    def __init__(self) -> None:
        self.held = False

    def __call__(self, _signum: int, _frame: FrameType | None) -> None:
        self.held = True


def _started_as_the_command() -> bool:
    name = sys.argv[0].replace("\\", "/").rpartition("/")[2] if sys.argv else ""
    # python -m hypermesh.cli.main: sys.argv[0] is the module's path while it is being found ("-m" before that).
    return name in ("hypermesh", "hypermesh.exe", "-m") or sys.argv[0].endswith("/hypermesh/cli/main.py")


def hold() -> None:
    if _started_as_the_command() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _Hold())


def release() -> None:
    """Restore Python's Ctrl-C (KeyboardInterrupt); raise it here if one came while it was held."""
    current = signal.getsignal(signal.SIGINT)
    if isinstance(current, _Hold):
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if current.held:
            raise KeyboardInterrupt


hold()
