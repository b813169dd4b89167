"""Picks the OS backend once, on first use.

``HYPERMESH_BACKEND=linux|portable`` forces one; otherwise Linux gets the native procfs/sysfs backend and
every other OS the psutil-based portable one (Windows, macOS, the BSDs).
"""

from __future__ import annotations

import os
import sys

from hypermesh.errors import InvalidInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hypermesh.platform.base import Backend

__all__ = ["BACKENDS", "backend", "create"]

BACKENDS = ("linux", "portable")
_chosen: Backend | None = None


def create(name: str | None = None) -> Backend:
    """A new backend by name (``linux`` or ``portable``); None means the native choice for this OS."""
    if name is None:
        name = os.environ.get("HYPERMESH_BACKEND") or ("linux" if sys.platform.startswith("linux") else "portable")
    if name == "linux":
        if not sys.platform.startswith("linux"):
            raise InvalidInput(f"HYPERMESH_BACKEND=linux needs Linux, this is {sys.platform}; use 'portable'")
        from hypermesh.platform.linux import LinuxBackend

        return LinuxBackend()
    if name == "portable":
        from hypermesh.platform.portable import PortableBackend

        return PortableBackend()
    raise InvalidInput(f"unknown backend {name!r} in HYPERMESH_BACKEND; choose one of: {', '.join(BACKENDS)}")


def backend() -> Backend:
    """The process-wide backend, created on first call."""
    global _chosen
    if _chosen is None:
        _chosen = create()
    return _chosen
