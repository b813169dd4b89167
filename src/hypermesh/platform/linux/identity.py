"""Who the machine is, as the profile and the agent's node stats both report it: kernel names and os-release.

Read once per profile or reader; the parsing is procfs.parse_os_release.
"""

from __future__ import annotations

import os

from hypermesh.platform.linux.files import read_str
from hypermesh.platform.linux.procfs import parse_os_release

__all__ = ["machine", "os_release"]


def os_release(root: str) -> dict[str, str]:
    """os-release(5) of the tree at ``root``: /etc/os-release, else /usr/lib/os-release (the vendor's copy)."""
    text = read_str(f"{root}/etc/os-release") or read_str(f"{root}/usr/lib/os-release")
    return parse_os_release(text or "")


def machine(root: str, live: bool) -> str:
    """The hardware name uname(2) reports ("x86_64").

    A recorded tree names its machine in <root>/arch; a real host's root seen from a container (--root /host) has
    none, and runs the kernel this process runs on.
    """
    if live:
        return os.uname().machine
    return read_str(f"{root}/arch") or os.uname().machine
