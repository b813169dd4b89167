"""Reading a BPF ring buffer (BPF_MAP_TYPE_RINGBUF) through libbpf's ``ring_buffer__poll``: the one loop
behind every program that streams events (execsnoop, execguard; ``RingProgram`` is their common base).

Each record reaches a ctypes callback, which hands ``parse`` the record where it lies in the ring's memory:
no bytes copy per event (``struct.unpack_from`` reads it in place). It is valid only during that call: once
the callback returns, libbpf hands the space back to the kernel, which may write the next record there, so
``parse`` copies what it keeps (unpacking and ``bytes()`` do).

The record is a char array of its own size, the cheapest view ctypes makes (execsnoop, 200 execs read by
three readers in one process: 7.5 us an event against 8.6 with a memoryview cut from a longer array and 8.8
with a bytes copy). An array type per size is kept by ctypes for good (~3 KiB each) and execguard's records
vary with the file name, so past ``SIZES_TYPED`` sizes a reader cuts a memoryview from one array type longer
than any record (a record's length is a 30-bit field of its header).

ctypes prints and swallows an exception raised inside a callback: a KeyboardInterrupt (or the CLI's SIGTERM
exception) landing there would be lost. So the callback keeps it, stops the poll (a negative return ends
``ring_buffer__poll``) and ``poll()`` raises it in the caller.
"""

from __future__ import annotations

import ctypes
import errno
import threading
import time
from typing import Generic, TypeVar

from hypermesh.ebpf import libbpf
from hypermesh.ebpf.program import Program
from hypermesh.errors import BackendError, Unsupported

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from hypermesh.ebpf.object import Collection

__all__ = ["SIZES_TYPED", "RingProgram", "RingReader", "RingRecord"]

T = TypeVar("T")
RingRecord = ctypes.Array[ctypes.c_char] | memoryview  # a buffer: len(), struct.unpack_from, memoryview()
SIZES_TYPED = 32  # record sizes a reader gives an array type of their own
_ANY_RECORD = ctypes.c_char * (1 << 30)  # laid over a record of another size, never read past it


class RingReader(Generic[T]):
    """Polls one ring buffer map; ``parse(record)`` turns a record (its bytes in the ring, as a char array or a
    memoryview, valid during the call only) into an item, or None to drop it. Not thread-safe: its owner serialises
    ``poll()`` and ``close()``."""

    def __init__(self, map_fd: int, parse: Callable[[RingRecord], T | None], what: str, *, lib: libbpf.Lib) -> None:
        self._lib = lib
        self._parse = parse
        self._what = what
        self._pending: list[T] = []
        self._error: BaseException | None = None
        self._arrays: dict[int, type[ctypes.Array[ctypes.c_char]]] = {}  # record size -> its array type
        self._callback = libbpf.RINGBUF_SAMPLE_FN(self._on_sample)  # referenced while the ring lives
        ring = lib.ring_buffer__new(map_fd, self._callback, None, None)
        if not ring:
            raise Unsupported(what, f"cannot create the ring buffer reader: {lib.strerror(lib.errno())}")
        self._ring: int | None = ring

    def _on_sample(self, _ctx: int | None, data: int | None, size: int) -> int:
        try:
            if data is not None:
                array = self._arrays.get(size)
                if array is None and len(self._arrays) < SIZES_TYPED:
                    array = self._arrays[size] = ctypes.c_char * size
                record = (
                    memoryview(_ANY_RECORD.from_address(data))[:size] if array is None else array.from_address(data)
                )
                item = self._parse(record)
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


class RingProgram(Program, Generic[T]):
    """A built-in program whose events come up through a ring buffer map named ``events``: the reader's
    ``poll``, ``stream`` and ``close``, under the program's read lock (a poll never runs into a close).
    A subclass implements ``_parse`` and opens the reader with ``_open_reader`` (at load or at attach);
    ``_before_poll`` sets what its ``_parse`` needs for the records of one poll."""

    def __init__(self) -> None:
        super().__init__()
        self._ring: RingReader[T] | None = None

    def _parse(self, record: RingRecord) -> T | None:
        raise NotImplementedError

    def _before_poll(self) -> None:
        pass

    def _open_reader(self, collection: Collection) -> None:
        if self._ring is None:
            self._ring = RingReader(collection.map("events").fd, self._parse, self.name, lib=libbpf.lib())

    def poll(self, timeout: float) -> list[T]:
        """Wait up to ``timeout`` seconds for events; returns those that arrived (maybe none)."""
        with self._read_lock:
            self._require_loaded()  # under the lock: close() takes it too
            if self._ring is None:
                return []
            self._before_poll()
            return self._ring.poll(int(timeout * 1000))

    def stream(self, timeout: float | None = None, interval: float = 0.1) -> Iterator[T]:
        """Events as they come; ends after ``timeout`` seconds (never when None)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            left = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
            yield from self.poll(left)

    def close(self, wait: bool = True) -> threading.Event:
        ring, self._ring = self._ring, None
        if ring is not None:
            with self._read_lock:
                ring.close()
        return super().close(wait)
