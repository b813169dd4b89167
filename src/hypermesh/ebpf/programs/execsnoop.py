"""``execsnoop``: exec events (pid, ppid, uid, comm, filename) streamed through a BPF ring buffer,
with pid and cgroup filters applied in the kernel.

The parent pid (and, at the raw tracepoint, the file name) is read with CO-RE, against a minimised
copy of the kernel's BTF (``hypermesh.ebpf.btf``). The hook is the raw tracepoint sched_process_exec
(no tracefs needed) where the kernel has raw tracepoints, else the tracefs tracepoint
sched:sched_process_exec; ``attach_type`` says which.
"""

from __future__ import annotations

import ctypes
import errno
import struct
import threading

from hypermesh.ebpf import libbpf
from hypermesh.ebpf.btf import minimised_btf
from hypermesh.ebpf.filters import check_cgroup, check_process, positive_int_or_none, set_cgroup_filter
from hypermesh.ebpf.link import Link
from hypermesh.ebpf.object import Collection, ObjectSpec
from hypermesh.ebpf.probe import raw_tracepoints
from hypermesh.ebpf.program import Program
from hypermesh.errors import Unsupported
from hypermesh.model import Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["ExecEvent", "ExecsnoopProgram", "minimised_btf"]  # minimised_btf: from hypermesh.ebpf.btf

_EVENT = struct.Struct("<IIII16s256s")
_EVENT_BYTES = ctypes.c_char * _EVENT.size
_FILENAME_TRUNCATED = 1  # execsnoop.bpf.c's flags
HOOK_PROGRAMS = {"raw_tracepoint": "raw_exec", "tracepoint": "on_exec"}


@record
class ExecEvent(Record):
    pid: int
    ppid: int
    uid: int
    comm: str
    filename: str  # at most 255 bytes: the start of a longer path, with filename_truncated set
    filename_truncated: bool


@record
class ExecEvents(Record):
    events: tuple[ExecEvent, ...]
    lost: int  # events the kernel dropped since the attach because the ring buffer was full


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


class ExecsnoopProgram(Program):
    """``pid``: only execs of that process or of its children (a shell's pid shows the commands it
    runs); ``cgroup``: only processes in that cgroup v2 directory or below it."""

    name = "execsnoop"
    co_re = True

    def __init__(self, minimise_btf: bool = True, pid: int | None = None, cgroup: str | None = None) -> None:
        super().__init__()
        self.minimise_btf = minimise_btf
        self.pid = positive_int_or_none("pid", pid)
        if self.pid is not None:
            check_process(self.pid)
        self.cgroup = None if cgroup is None else check_cgroup(cgroup)
        self.attach_type = "raw_tracepoint" if raw_tracepoints().supported else "tracepoint"
        self._pending: list[ExecEvent] = []
        self._ring: int | None = None
        self._callback_error: BaseException | None = None

    def _configure(self, spec: ObjectSpec) -> None:
        for hook, program in HOOK_PROGRAMS.items():
            spec.set_autoload(program, hook == self.attach_type)

    def _after_load(self, collection: Collection) -> None:
        # The kernel zeroes a new array's values: with no filter, exec_config[0] already lets all through.
        if self.cgroup is not None:
            set_cgroup_filter(collection.map("cgroup_filter"), self.cgroup)
        if self.pid is not None or self.cgroup is not None:
            config = struct.pack("<II", self.pid or 0, self.cgroup is not None)
            collection.map("exec_config").update(struct.pack("<I", 0), config)

    def _open_ring(self, collection: Collection) -> None:
        """The ring buffer reader and the lost-events buffers: made at the attach, when events can
        come, not in the load (an epoll instance and two mappings of the ring)."""
        if self._ring is not None:
            return
        lib = libbpf.lib()
        self._callback = libbpf.RINGBUF_SAMPLE_FN(self._on_sample)  # referenced while the ring lives
        ring = lib.ring_buffer__new(collection.map("events").fd, self._callback, None, None)
        if not ring:
            raise Unsupported(
                "execsnoop", f"cannot create the ring buffer reader: {libbpf.strerror(libbpf.get_errno())}"
            )
        self._ring = ring
        self._lost = collection.map("lost")
        self._lost_key = ctypes.create_string_buffer(4)  # key 0
        self._lost_value = ctypes.create_string_buffer(self._lost.value_buffer_size)

    def _on_sample(self, _ctx: int | None, data: int | None, size: int) -> int:
        # ctypes prints and swallows an exception raised in a callback: a KeyboardInterrupt (or the
        # CLI's SIGTERM exception) landing here would be lost. Keep it, stop the poll (a negative
        # return ends ring_buffer__poll) and let poll() raise it in the caller.
        try:
            if data is None or size < _EVENT.size:
                return 0
            # Unpacked in place, from the ring buffer's own memory (no bytes copy of the event).
            pid, ppid, uid, flags, comm, filename = _EVENT.unpack_from(_EVENT_BYTES.from_address(data))
            self._pending.append(
                ExecEvent(
                    pid=pid,
                    ppid=ppid,
                    uid=uid,
                    comm=_text(comm),
                    filename=_text(filename),
                    filename_truncated=bool(flags & _FILENAME_TRUNCATED),
                )
            )
        except BaseException as exc:
            self._callback_error = exc
            return -errno.EINTR
        return 0

    def _attach(self, collection: Collection) -> list[Link]:
        self._open_ring(collection)
        if self.attach_type == "raw_tracepoint":
            return [collection.attach_raw_tracepoint("raw_exec", "sched_process_exec")]
        return [collection.attach_tracepoint("on_exec", "sched", "sched_process_exec")]

    def poll(self, timeout: float) -> list[ExecEvent]:
        """Wait up to ``timeout`` seconds for events; returns those that arrived (maybe none)."""
        with self._read_lock:
            self._require_loaded()  # under the lock: close() takes it too
            if self._ring is None:
                return []
            rc = libbpf.lib().ring_buffer__poll(self._ring, int(timeout * 1000))
            events, self._pending = self._pending, []
            error, self._callback_error = self._callback_error, None
        if error is not None:
            raise error
        if rc < 0 and rc != -4:  # -EINTR: a signal (Ctrl-C) woke us; the caller decides
            raise OSError(-rc, f"polling the exec ring buffer: {libbpf.strerror(rc)}")
        return events

    def stream(self, timeout: float | None = None, interval: float = 0.1) -> Iterator[ExecEvent]:
        """Events as they come; ends after ``timeout`` seconds (never when None)."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            left = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
            yield from self.poll(left)

    def lost(self) -> int:
        """Events dropped so far because the ring buffer was full (the reader fell behind)."""
        with self._read_lock:
            collection = self._require_loaded()  # under the lock: close() takes it too
            self._open_ring(collection)
            if not self._lost.lookup_into(self._lost_key, self._lost_value):
                return 0
            return sum(memoryview(self._lost_value).cast("B").cast("Q"))

    def lost_events(self) -> dict[str, int]:
        return {"events": self.lost()}

    def read(self) -> ExecEvents:
        """Events that arrived since the last read (without waiting), and the count lost so far."""
        return ExecEvents(events=tuple(self.poll(0)), lost=self.lost())

    def close(self, wait: bool = True) -> threading.Event:
        ring, self._ring = self._ring, None
        if ring is not None:
            with self._read_lock:
                libbpf.lib().ring_buffer__free(ring)
        return super().close(wait)


PROGRAM = ExecsnoopProgram
