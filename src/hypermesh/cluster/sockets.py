"""One question both cluster clients ask of a connection: has the other side sent something yet?"""

from __future__ import annotations

import select
import socket

__all__ = ["readable_now"]


def readable_now(sock: socket.socket) -> bool:
    """Whether reading ``sock`` would return at once: bytes (or the peer's close) have arrived, or TLS holds
    decrypted bytes in its buffer (which select() cannot see). Never waits."""
    pending = getattr(sock, "pending", None)
    return bool((pending is not None and pending()) or select.select([sock], [], [], 0)[0])
