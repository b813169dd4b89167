"""Reading a BPF ring buffer (BPF_MAP_TYPE_RINGBUF) through libbpf's ``ring_buffer__poll``: the one loop
behind every program that streams events (execsnoop, execguard).

Each record reaches a ctypes callback, which hands ``parse`` a ctypes char array laid over the record where
it lies in the ring's memory: no bytes copy per event (``struct.unpack_from`` reads it in place). The array
is valid only during that call: once the callback returns, libbpf hands the space back to the kernel, which
may write the next record there, so ``parse`` copies what it keeps (unpacking and slicing do).

ctypes prints and swallows an exception raised inside a callback: a KeyboardInterrupt (or the CLI's SIGTERM
exception) landing there would be lost. So the callback keeps it, stops the poll (a negative return ends
``ring_buffer__poll``) and ``poll()`` raises it in the caller.
"""

from __future__ import annotations

import ctypes
import errno
from typing import Generic, TypeVar

from hypermesh.ebpf import libbpf
from hypermesh.errors import BackendError, Unsupported

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["RingReader", "RingRecord"]

T = TypeVar("T")
RingRecord = ctypes.Array[ctypes.c_char]


class RingReader(Generic[T]):
    """Polls one ring buffer map; ``parse(record)`` turns a record (a char array over its bytes in the ring,
    valid during the call only) into an item, or None to drop it. Not thread-safe: its owner serialises
    ``poll()`` and ``close()``."""

    def __init__(self, map_fd: int, parse: Callable[[RingRecord], T | None], what: str, *, lib: libbpf.Lib) -> None:
        self._lib = lib
        self._parse = parse
        self._what = what
        self._pending: list[T] = []
        self._error: BaseException | None = None
        self._arrays: dict[int, type[RingRecord]] = {}  # record size -> its array type: one per size, made once
        self._callback = libbpf.RINGBUF_SAMPLE_FN(self._on_sample)  # referenced while the ring lives
        ring = lib.ring_buffer__new(map_fd, self._callback, None, None)
        if not ring:
            raise Unsupported(what, f"cannot create the ring buffer reader: {lib.strerror(lib.errno())}")
        self._ring: int | None = ring

    def _on_sample(self, _ctx: int | None, data: int | None, size: int) -> int:
        try:
            if data is not None:
                array = self._arrays.get(size)
                if array is None:
                    array = self._arrays[size] = ctypes.c_char * size
                item = self._parse(array.from_address(data))
                if item is not None:
                    self._pending.append(item)
        except BaseException as exc:
            self._error = exc
            return -errno.EINTR
        return 0

    def poll(self, timeout_ms: int) -> list[T]:
        """Wait up to ``timeout_ms`` for records; returns every one that arrived (maybe none)."""
        if self._ring is None:
            return []
        rc = self._lib.ring_buffer__poll(self._ring, timeout_ms)
        items, self._pending = self._pending, []
        error, self._error = self._error, None
        if error is not None:
            raise error
        if rc < 0 and rc != -errno.EINTR:  # EINTR: a signal (Ctrl-C) woke us; the caller decides
            raise BackendError(f"polling the {self._what} ring buffer: {self._lib.strerror(rc)}")
        return items

    def close(self) -> None:
        ring, self._ring = self._ring, None
        if ring is not None:
            self._lib.ring_buffer__free(ring)
