"""perf_event_open(2) through ctypes: the software cpu-clock sampling event a profiler attaches to.

libc has no wrapper for perf_event_open, so it goes through syscall(2). Only the first 64 bytes of
``struct perf_event_attr`` (PERF_ATTR_SIZE_VER0) are filled: every kernel since 2.6.31 accepts that size
and zero-extends the rest. The event is opened disabled; libbpf enables it once the program is attached
(``bpf_program__attach_perf_event``), and the link owns the fd from then on.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from ctypes import c_int, c_long, c_uint32, c_uint64

from hypermesh.ebpf.probe import permission_refused
from hypermesh.errors import BackendError, InvalidInput, Unsupported

__all__ = ["CpuOffline", "PerfEventAttr", "online_cpus", "open_cpu_clock", "parse_cpu_list"]

PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_CPU_CLOCK = 0
PERF_FLAG_FD_CLOEXEC = 1 << 3
# perf_event_attr bit fields, in the order of include/uapi/linux/perf_event.h
ATTR_DISABLED = 1 << 0
ATTR_FREQ = 1 << 10
PERF_ATTR_SIZE_VER0 = 64
_SYSCALL_NUMBERS = {"x86_64": 298, "aarch64": 241, "ppc64le": 319, "s390x": 331, "riscv64": 241}
MAX_SAMPLE_RATE_FILE = "/proc/sys/kernel/perf_event_max_sample_rate"


class CpuOffline(BackendError):
    """The CPU went offline between reading the online list and opening its event (ENODEV)."""


class PerfEventAttr(ctypes.Structure):
    """struct perf_event_attr up to PERF_ATTR_SIZE_VER0."""

    _fields_ = [
        ("type", c_uint32),
        ("size", c_uint32),
        ("config", c_uint64),
        ("sample_freq", c_uint64),  # a union with sample_period; a frequency with ATTR_FREQ set
        ("sample_type", c_uint64),
        ("read_format", c_uint64),
        ("flags", c_uint64),
        ("wakeup_events", c_uint32),
        ("bp_type", c_uint32),
        ("config1", c_uint64),
    ]


def parse_cpu_list(text: str) -> list[int]:
    """The kernel's cpu list format (``0-3,8,10-11``), as in /sys/devices/system/cpu/online."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return cpus


def online_cpus(sysfs: str = "/sys") -> list[int]:
    with open(os.path.join(sysfs, "devices/system/cpu/online")) as f:
        return parse_cpu_list(f.read())


_libc: ctypes.CDLL | None = None


def _syscall() -> ctypes._NamedFuncPointer:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fn = _libc.syscall
    fn.restype = c_long
    return fn


def open_cpu_clock(cpu: int, frequency_hz: int) -> int:
    """A disabled cpu-clock sampling event on ``cpu`` for every process, firing ``frequency_hz`` times
    a second of CPU time; returns its fd (close-on-exec)."""
    number = _SYSCALL_NUMBERS.get(platform.machine())
    if number is None:
        raise Unsupported("CPU profiling", f"perf_event_open's syscall number on {platform.machine()} is not known")
    attr = PerfEventAttr(
        type=PERF_TYPE_SOFTWARE,
        size=PERF_ATTR_SIZE_VER0,
        config=PERF_COUNT_SW_CPU_CLOCK,
        sample_freq=frequency_hz,
        flags=ATTR_DISABLED | ATTR_FREQ,
    )
    fd = int(
        _syscall()(c_long(number), ctypes.byref(attr), c_int(-1), c_int(cpu), c_int(-1), c_long(PERF_FLAG_FD_CLOEXEC))
    )
    if fd >= 0:
        return fd
    err = ctypes.get_errno()
    if err in (errno.EACCES, errno.EPERM):
        raise permission_refused(
            f"perf_event_open on CPU {cpu} was refused",
            ("CAP_PERFMON",),
            "kernel.perf_event_paranoid or an LSM policy forbids system-wide sampling",
        )
    if err == errno.EINVAL and frequency_hz > _max_sample_rate():
        raise InvalidInput(
            f"--frequency {frequency_hz} is above the kernel's limit of {_max_sample_rate()} Hz "
            f"({MAX_SAMPLE_RATE_FILE}): choose a lower frequency"
        )
    if err == errno.ENODEV:
        raise CpuOffline(f"CPU {cpu} is offline")
    if err in (errno.ENOENT, errno.EOPNOTSUPP, errno.ENOSYS):
        raise Unsupported("CPU profiling", f"this kernel has no software cpu-clock perf event: {os.strerror(err)}")
    raise BackendError(f"perf_event_open(cpu-clock, cpu {cpu}) failed: {os.strerror(err)}")


def _max_sample_rate() -> int:
    try:
        with open(MAX_SAMPLE_RATE_FILE) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 31
