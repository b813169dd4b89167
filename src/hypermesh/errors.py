"""The errors hypermesh raises, each carrying what a person needs to act and the CLI exit code.

Exit codes (documented in the README and ``hypermesh --help``):
0 ok, 1 runtime error, 2 bad usage or input, 3 permission denied, 4 unsupported here.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "HypermeshError",
    "InvalidInput",
    "NotFound",
    "PermissionDenied",
    "Unsupported",
    "VerifierError",
]


class HypermeshError(Exception):
    """Base of every hypermesh error. ``str(err)`` is one line a person can act on."""

    exit_code = 1


class BackendError(HypermeshError):
    """The OS answered something we could not read or parse (a runtime failure, exit 1)."""

    exit_code = 1


class InvalidInput(HypermeshError):
    """A value given by the caller is wrong: the message names it and what would be right."""

    exit_code = 2


class NotFound(HypermeshError):
    """A named thing (interface, device, program, pin) does not exist; ``available`` lists what does."""

    exit_code = 2

    def __init__(self, message: str, available: list[str] | None = None) -> None:
        self.available = list(available or [])
        if self.available:
            message = f"{message} (available: {', '.join(self.available)})"
        super().__init__(message)


class PermissionDenied(HypermeshError):
    """A capability or privilege is missing; ``capability`` names it, the message says the fix."""

    exit_code = 3

    def __init__(self, message: str, capability: str | None = None) -> None:
        self.capability = capability
        super().__init__(message)


class Unsupported(HypermeshError):
    """This kernel, OS or build cannot do ``feature``; ``reason`` says why and how to tell."""

    exit_code = 4

    def __init__(self, feature: str, reason: str) -> None:
        self.feature = feature
        self.reason = reason
        super().__init__(f"{feature} is not supported here: {reason}")


class VerifierError(HypermeshError):
    """The kernel's BPF verifier rejected a program; ``log`` is the verifier's full output."""

    exit_code = 1

    def __init__(self, message: str, log: str = "") -> None:
        self.log = log
        super().__init__(message)

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the verifier log: where the verifier gave up."""
        return "\n".join(self.log.rstrip().splitlines()[-lines:])
