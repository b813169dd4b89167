"""``execsnoop``: exec events (time, pid, ppid, uid, comm, filename, argv) streamed through a BPF ring buffer,
with pid and cgroup filters applied in the kernel.

The kernel stamps each event with bpf_ktime_get_ns(), which is CLOCK_MONOTONIC (time.monotonic_ns() here);
it becomes wall-clock time through the offset between CLOCK_REALTIME and CLOCK_MONOTONIC read at each
poll, so a clock stepped (NTP, ``date -s``) between two polls moves later events, never earlier ones.
The argv is bounded as libbpf-tools' execsnoop bounds it: at most ARGS_BYTES of the argument block are
copied, and at most MAX_ARGS whole arguments are kept; ``argv_truncated`` says when there were more.

The parent pid (and, at the raw tracepoint, the file name) is read with CO-RE, against a minimised
copy of the kernel's BTF (``hypermesh.ebpf.btf``). The hook is the raw tracepoint sched_process_exec
(no tracefs needed) where the kernel has raw tracepoints, else the tracefs tracepoint
sched:sched_process_exec; ``attach_type`` says which.
"""

from __future__ import annotations

import ctypes
import struct
import time

from hypermesh.ebpf.btf import minimised_btf
from hypermesh.ebpf.filters import check_cgroup, check_process, positive_int_or_none, set_filters
from hypermesh.ebpf.link import Link
from hypermesh.ebpf.object import Collection, ObjectSpec
from hypermesh.ebpf.probe import raw_tracepoints
from hypermesh.ebpf.ringbuf import RingProgram, RingRecord
from hypermesh.model import Record, record

__all__ = ["ARGS_BYTES", "MAX_ARGS", "ExecEvent", "ExecsnoopProgram", "minimised_btf", "wall_clock_offset"]
# minimised_btf: from hypermesh.ebpf.btf

_EVENT = struct.Struct("<QIIIIII16s256s1024s")  # execsnoop.bpf.c's struct exec_event
_FILENAME_TRUNCATED = 1  # execsnoop.bpf.c's flags
ARGS_BYTES = 1024  # execsnoop.bpf.c's ARGS_LEN: bytes of the argument block copied per exec
MAX_ARGS = 20  # arguments kept per event (libbpf-tools' default too)
HOOK_PROGRAMS = {"raw_tracepoint": "raw_exec", "tracepoint": "on_exec"}


@record
class ExecEvent(Record):
    timestamp: float  # seconds since the epoch (wall clock) when the exec completed
    pid: int
    ppid: int
    uid: int
    comm: str
    filename: str  # at most 255 bytes: the start of a longer path, with filename_truncated set
    filename_truncated: bool
    argv: tuple[str, ...]  # the first MAX_ARGS arguments that fit whole in ARGS_BYTES, argv[0] first
    argv_truncated: bool  # the command had more arguments (or longer ones) than argv holds


def _argv(raw: bytes, copied: int, total: int) -> tuple[tuple[str, ...], bool]:
    """The argument block (NUL-terminated strings back to back) as whole arguments, and whether any was left out.

    A block copied in full ends with a NUL; one cut at ARGS_BYTES ends inside an argument, which is dropped
    rather than shown as a shorter, different one."""
    parts = raw[:copied].split(b"\0")
    whole, rest = parts[:-1], parts[-1]  # rest: b"" after a final NUL, else the start of a cut argument
    truncated = copied < total or rest != b"" or len(whole) > MAX_ARGS
    return tuple(p.decode("utf-8", "replace") for p in whole[:MAX_ARGS]), truncated


@record
class ExecEvents(Record):
    events: tuple[ExecEvent, ...]
    lost: int  # events the kernel dropped since the attach because the ring buffer was full


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def wall_clock_offset() -> float:
    """CLOCK_REALTIME minus CLOCK_MONOTONIC, in seconds: what turns bpf_ktime_get_ns() into wall time.

    Read as the smallest of a few bracketed pairs, so a preemption between the two reads costs nothing."""
    best_gap, offset = None, 0.0
    for _ in range(3):
        before = time.monotonic_ns()
        wall = time.time_ns()
        after = time.monotonic_ns()
        if best_gap is None or after - before < best_gap:
            best_gap, offset = after - before, (wall - (before + after) // 2) / 1e9
    return offset


class ExecsnoopProgram(RingProgram[ExecEvent]):
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
        self._wall_offset = 0.0  # CLOCK_REALTIME - CLOCK_MONOTONIC, seconds: read at each poll

    def _configure(self, spec: ObjectSpec) -> None:
        # Every program loads by default (no "?"-prefixed section): only the other hooks' are turned off.
        for hook, program in HOOK_PROGRAMS.items():
            if hook != self.attach_type:
                spec.set_autoload(program, False)

    def _after_load(self, collection: Collection) -> None:
        set_filters(collection, "exec_config", self.pid, self.cgroup)

    def _open_ring(self, collection: Collection) -> None:
        """The ring buffer reader and the lost-events buffers: made at the attach, when events can
        come, not in the load (an epoll instance and two mappings of the ring)."""
        if self._ring is not None:
            return
        self._open_reader(collection)
        self._lost = collection.map("lost")
        self._lost_key = ctypes.create_string_buffer(4)  # key 0
        self._lost_value = ctypes.create_string_buffer(self._lost.value_buffer_size)

    def _parse(self, data: RingRecord) -> ExecEvent | None:
        if len(data) < _EVENT.size:
            return None
        fields = _EVENT.unpack_from(data)  # in place, from the ring buffer's own memory
        monotonic_ns, pid, ppid, uid, flags, copied, total, comm, filename, args = fields
        argv, argv_truncated = _argv(args, copied, total)
        return ExecEvent(
            timestamp=round(self._wall_offset + monotonic_ns / 1e9, 6),
            pid=pid,
            ppid=ppid,
            uid=uid,
            comm=_text(comm),
            filename=_text(filename),
            filename_truncated=bool(flags & _FILENAME_TRUNCATED),
            argv=argv,
            argv_truncated=argv_truncated,
        )

    def _attach(self, collection: Collection) -> list[Link]:
        self._open_ring(collection)
        if self.attach_type == "raw_tracepoint":
            return [collection.attach_raw_tracepoint("raw_exec", "sched_process_exec")]
        return [collection.attach_tracepoint("on_exec", "sched", "sched_process_exec")]

    def _before_poll(self) -> None:
        self._wall_offset = wall_clock_offset()

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


PROGRAM = ExecsnoopProgram
