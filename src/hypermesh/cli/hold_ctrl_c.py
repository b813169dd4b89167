"""Ctrl-C while the ``hypermesh`` command starts is held back until main() can handle it.

The command's modules take tens to hundreds of milliseconds to import (argparse, the command modules); a
KeyboardInterrupt raised inside an import escaped main() as a traceback. ``hypermesh.cli``'s ``__init__`` holds
SIGINT as soon as the package is imported by the command itself (the console script or ``python -m
hypermesh.cli.main``), never when a program imports these modules for its own use; ``release()`` in main() restores
Python's handler and raises the held interrupt where main() turns it into the command's exit code.

The hold starts while this module is imported (its last line), so once the import of ``hypermesh.cli.hold_ctrl_c``
has completed (what ``python -X importtime`` reports), Ctrl-C is held: the start-up test waits for exactly that.
"""

from __future__ import annotations

import signal
import sys

__all__ = ["hold", "release"]

_held: list[int] = []
_holding = False


def _started_as_the_command() -> bool:
    name = sys.argv[0].replace("\\", "/").rpartition("/")[2] if sys.argv else ""
    # python -m hypermesh.cli.main: sys.argv[0] is the module's path while it is being found ("-m" before that).
    return name in ("hypermesh", "hypermesh.exe", "-m") or sys.argv[0].endswith("/hypermesh/cli/main.py")


def hold() -> None:
    global _holding
    if _started_as_the_command() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, lambda signum, _frame: _held.append(signum))
        _holding = True


def release() -> None:
    global _holding
    if _holding:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _holding = False
        if _held:
            _held.clear()
            raise KeyboardInterrupt


hold()
