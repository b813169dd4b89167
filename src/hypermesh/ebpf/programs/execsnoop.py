"""``execsnoop``: exec events (time, pid, ppid, uid, comm, filename, argv) streamed through a BPF ring buffer.

The kernel stamps each event with bpf_ktime_get_ns(), which is CLOCK_MONOTONIC (time.monotonic_ns() here);
it becomes wall-clock time through the offset between CLOCK_REALTIME and CLOCK_MONOTONIC read at each
poll, so a clock stepped (NTP, ``date -s``) between two polls moves later events, never earlier ones.
The argv is bounded as libbpf-tools' execsnoop bounds it: at most ARGS_BYTES of the argument block are
copied, and at most MAX_ARGS whole arguments are kept; ``argv_truncated`` says when there were more.

The parent pid is read from task_struct with CO-RE. libbpf needs the kernel's BTF to relocate it;
parsing the whole of /sys/kernel/btf/vmlinux costs ~10 ms per load, so the first load in a boot writes
a minimised BTF (only the types this object touches, via ``bpftool gen min_core_btf``) to a cache
keyed by the kernel build, and later loads use it. Without bpftool the full BTF is used.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import platform
import struct
import subprocess
import threading
import time

from hypermesh.ebpf import libbpf
from hypermesh.ebpf.link import Link
from hypermesh.ebpf.object import Collection
from hypermesh.ebpf.probe import BTF_PATH
from hypermesh.ebpf.program import Program
from hypermesh.errors import Unsupported
from hypermesh.model import Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["ARGS_BYTES", "MAX_ARGS", "ExecEvent", "ExecsnoopProgram", "minimised_btf", "wall_clock_offset"]

_EVENT = struct.Struct("<QIIIIII16s256s1024s")  # execsnoop.bpf.c's struct exec_event
_FILENAME_TRUNCATED = 1  # execsnoop.bpf.c's flags
ARGS_BYTES = 1024  # execsnoop.bpf.c's ARGS_LEN: bytes of the argument block copied per exec
MAX_ARGS = 20  # arguments kept per event (libbpf-tools' default too)
BTF_CACHE_DIR = "/run/hypermesh/btf"  # HYPERMESH_BTF_CACHE moves it (read at each use)
_BTF_HEADER = struct.Struct("<HBBIIIII")  # struct btf_header: magic, version, flags, hdr_len, type/str off+len
_BTF_MAGIC = 0xEB9F


def btf_cache_dir() -> str:
    return os.environ.get("HYPERMESH_BTF_CACHE") or BTF_CACHE_DIR


def _looks_like_btf(path: str) -> bool:
    """A whole BTF file, as far as its header tells: magic, version 1, and a size matching the
    sections it announces (catches a file cut short or emptied, e.g. by a full /run)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_BTF_HEADER.size)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    if len(head) < _BTF_HEADER.size:
        return False
    magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = _BTF_HEADER.unpack(head)
    return bool(
        magic == _BTF_MAGIC
        and version == 1
        and hdr_len >= _BTF_HEADER.size
        and size == hdr_len + max(type_off + type_len, str_off + str_len)
    )


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


_btf_lock = threading.Lock()


def minimised_btf(object_path: str, *, rebuild: bool = False) -> str | None:
    """Path of a BTF holding only the kernel types ``object_path`` relocates against, made once per
    kernel build and object; None (use the full vmlinux BTF) when it cannot be made. A cached file
    that is not a whole BTF, or ``rebuild``, makes it again."""
    if not os.path.exists(BTF_PATH):
        return None
    try:
        st = os.stat(BTF_PATH)
        with open(object_path, "rb") as f:
            obj_digest = hashlib.sha256(f.read()).hexdigest()[:16]
    except OSError:
        return None
    kernel = hashlib.sha256(f"{platform.release()} {platform.version()} {st.st_size}".encode()).hexdigest()[:16]
    cache = btf_cache_dir()
    path = os.path.join(cache, f"{kernel}-{obj_digest}.btf")
    if not rebuild and _looks_like_btf(path):
        return path
    with _btf_lock:
        if not rebuild and _looks_like_btf(path):
            return path
        bpftool = next((p for p in ("/usr/sbin/bpftool", "/usr/bin/bpftool") if os.access(p, os.X_OK)), None)
        if bpftool is None:
            return None
        try:
            os.makedirs(cache, mode=0o755, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            subprocess.run(
                [bpftool, "gen", "min_core_btf", BTF_PATH, tmp, object_path],
                check=True,
                capture_output=True,
                timeout=30,
            )
            if not _looks_like_btf(tmp):
                os.unlink(tmp)
                return None
            os.replace(tmp, path)
        except (OSError, subprocess.SubprocessError):
            return None
    return path


class ExecsnoopProgram(Program):
    name = "execsnoop"

    def __init__(self, minimise_btf: bool = True) -> None:
        super().__init__()
        self.minimise_btf = minimise_btf
        self._pending: list[ExecEvent] = []
        self._ring: int | None = None
        self._callback_error: BaseException | None = None
        self._wall_offset = 0.0  # CLOCK_REALTIME - CLOCK_MONOTONIC, seconds: read at each poll

    def _btf_custom_path(self) -> str | None:
        return minimised_btf(self.object_path) if self.minimise_btf else None

    def _btf_fallbacks(self, failed: str) -> list[str | None]:
        # The cached minimised BTF did not load although its header looked whole (corrupt inside, or
        # made from other types): make it again for the next loads, and use the full BTF should the
        # new one fail too.
        rebuilt = minimised_btf(self.object_path, rebuild=True)
        return [rebuilt, None] if rebuilt is not None else [None]

    def _after_load(self, collection: Collection) -> None:
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
            fields = _EVENT.unpack(ctypes.string_at(data, _EVENT.size))
            monotonic_ns, pid, ppid, uid, flags, copied, total, comm, filename, args = fields
            argv, argv_truncated = _argv(args, copied, total)
            self._pending.append(
                ExecEvent(
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
            )
        except BaseException as exc:
            self._callback_error = exc
            return -errno.EINTR
        return 0

    def _attach(self, collection: Collection) -> list[Link]:
        return [collection.attach_tracepoint("on_exec", "sched", "sched_process_exec")]

    def poll(self, timeout: float) -> list[ExecEvent]:
        """Wait up to ``timeout`` seconds for events; returns those that arrived (maybe none)."""
        with self._read_lock:
            self._require_loaded()  # under the lock: close() takes it too
            if self._ring is None:
                return []
            self._wall_offset = wall_clock_offset()
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
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            left = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
            yield from self.poll(left)

    def lost(self) -> int:
        """Events dropped so far because the ring buffer was full (the reader fell behind)."""
        with self._read_lock:
            self._require_loaded()  # under the lock: close() takes it too
            if not self._lost.lookup_into(self._lost_key, self._lost_value):
                return 0
            return sum(memoryview(self._lost_value).cast("B").cast("Q"))

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
