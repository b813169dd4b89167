"""Pure parsers for /proc files (and the few text formats beside them): bytes in, typed values out, no I/O.

One parser per file format, used by every reader that needs the file: the Sampler's counter reader and the agent's
node stats reader both come here. Where they want different columns of one format, the parser takes a projection
(``columns``) and the format's rules (which lines count, how a name is decoded) stay in one place. /proc/net/* is in
procnet.py, mountinfo in mounts.py.

Hot-path parsers (stat, meminfo, diskstats, net/dev, loadavg, pressure) run up to 100 times a second, so they
parse only the fields we emit and avoid building intermediate dicts. Each names the kernel source that defines
its format.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Generic, TypeVar

    K = TypeVar("K")
    V = TypeVar("V")
    T = TypeVar("T")
else:
    # typing costs ~7 ms to import; at run time LineMemo[...] only needs to be subscriptable.
    class Generic:
        def __class_getitem__(cls, _item: object) -> type:
            return cls

    K = V = None

__all__ = [
    "PAGE_BYTES",
    "SECTOR_BYTES",
    "USER_HZ",
    "LineMemo",
    "diskstats_all",
    "diskstats_counters",
    "parse_cpuinfo",
    "parse_cpulist",
    "parse_diskstats",
    "parse_diskstats_line",
    "parse_file_nr",
    "parse_loadavg",
    "parse_meminfo",
    "parse_meminfo_sample",
    "parse_number",
    "parse_os_release",
    "parse_pressure",
    "parse_proc_cgroup",
    "parse_schedstat",
    "parse_softirqs",
    "parse_stat_btime",
    "parse_stat_cpu_line",
    "parse_stat_cpus",
    "parse_stat_kernel",
    "parse_vmstat",
    "pressure_seconds",
    "stat_cpu_lines",
]

# /proc/stat counts in USER_HZ (clock ticks visible to userspace), not CONFIG_HZ.
USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's block size (block/genhd.c)
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def parse_stat_cpu_line(line: bytes) -> tuple[int, tuple[float, ...]] | None:
    """(cpu, seconds in user, nice, system, idle, iowait, irq, softirq, steal) for a "cpuN" line (fs/proc/stat.c).

    Kernels before 2.6.11 lack steal; missing columns count as 0. guest/guest_nice are already inside user/nice.
    """
    if not line.startswith(b"cpu") or line.startswith(b"cpu "):
        return None
    parts = line.split()
    values = [int(v) / USER_HZ for v in parts[1:9]]  # division: 91256 ticks are 912.56 s, not 912.5600000000001
    while len(values) < 8:
        values.append(0.0)
    return int(parts[0][3:]), tuple(values)


def stat_cpu_lines(data: bytes) -> list[bytes]:
    """The per-CPU lines of /proc/stat, without splitting the long interrupt lines that follow them."""
    end = data.find(b"\nintr ")
    return (data[:end] if end > 0 else data).split(b"\n")[1:]


def parse_stat_cpus(data: bytes) -> dict[int, tuple[float, ...]]:
    """{cpu: seconds per mode} for every online CPU; offline CPUs have no line and are absent (hot-plug)."""
    return dict(p for line in stat_cpu_lines(data) if (p := parse_stat_cpu_line(line)) is not None)


def parse_stat_btime(data: bytes) -> float | None:
    """Boot time in seconds since the epoch (the ``btime`` line of /proc/stat)."""
    start = data.find(b"\nbtime ")
    if start < 0:
        return None
    return float(data[start + 7 : data.index(b"\n", start + 7)])


_STAT_KEYS = {
    b"ctxt": "context_switches",
    b"processes": "forks",
    b"procs_running": "procs_running",
    b"procs_blocked": "procs_blocked",
    b"btime": "boot_time_seconds",
}


def parse_stat_kernel(data: bytes) -> tuple[dict[str, float], dict[int, list[float]]]:
    """Kernel-wide lines of /proc/stat (fs/proc/stat.c) and each CPU's guest/guest_nice seconds.

    ``intr`` starts with the total of all interrupts (its per-IRQ columns are left out); ``processes`` counts
    forks since boot; guest time (columns 9 and 10 of a cpuN line, 2.6.24+/2.6.33+) is in USER_HZ ticks.
    """
    kernel: dict[str, float] = {}
    guest: dict[int, list[float]] = {}
    for line in data.split(b"\n"):
        if line.startswith(b"cpu"):
            parts = line.split()
            if parts[0] != b"cpu" and len(parts) > 9:
                nice = int(parts[10]) / USER_HZ if len(parts) > 10 else 0.0
                guest[int(parts[0][3:])] = [int(parts[9]) / USER_HZ, nice]
            continue
        key, _, rest = line.partition(b" ")
        if key == b"intr":
            kernel["interrupts"] = float(rest.split(b" ", 1)[0])
        elif key in _STAT_KEYS:
            kernel[_STAT_KEYS[key]] = float(rest)
    return kernel, guest


def parse_softirqs(data: bytes) -> dict[str, list[int]]:
    """{type: [count per CPU]} from /proc/softirqs (kernel/softirq.c show_softirqs): a CPU header, one row per type."""
    lines = data.split(b"\n")
    out: dict[str, list[int]] = {}
    for line in lines[1:]:
        name, _, counts = line.partition(b":")
        if counts:
            out[name.strip().decode()] = [int(c) for c in counts.split()]
    return out


# The sample's fields, each found by name with bytes.find (a C scan of ~1.5 KB, cheaper than splitting the file
# into lines). The leading newline keeps "Cached:" from matching "SwapCached:"; MemTotal is the first line.
_MEMINFO_SAMPLE_KEYS = (
    b"MemTotal:",
    b"\nMemAvailable:",
    b"\nCached:",
    b"\nSwapTotal:",
    b"\nSwapFree:",
    b"\nSReclaimable:",
)


def parse_meminfo_sample(data: bytes) -> tuple[int, int, int, int, int]:
    """(total, available, cached, used, swap_used) bytes from /proc/meminfo (fs/proc/meminfo.c).

    ``used`` is total - available: memory the kernel cannot hand out without swapping, the figure `free` shows
    since procps 3.3.10. ``cached`` is the page cache plus reclaimable slab (Cached + SReclaimable), what `free`
    counts as cache and psutil as ``cached``. Kernels before 3.14 have no MemAvailable: it is estimated as
    MemFree + Buffers + Cached, as procps does (the slower path below, also taken by any other missing field).
    """
    values = []
    find = data.find
    for key in _MEMINFO_SAMPLE_KEYS:
        at = find(key)
        if at < 0:
            return _meminfo_sample_by_name(data)
        at += len(key)
        values.append(int(data[at : data.index(b"kB", at)]) * 1024)
    total, available, cached, swap_total, swap_free, reclaimable = values
    return total, available, cached + reclaimable, total - available, swap_total - swap_free


def _meminfo_sample_by_name(data: bytes) -> tuple[int, int, int, int, int]:
    kib = {}
    for line in data.split(b"\n"):
        key, _, rest = line.partition(b":")
        if rest.split():
            kib[key] = int(rest.split()[0]) * 1024
    total = kib.get(b"MemTotal", 0)
    cached = kib.get(b"Cached", 0)
    available = kib.get(b"MemAvailable")
    if available is None:
        available = kib.get(b"MemFree", 0) + kib.get(b"Buffers", 0) + cached
    cached += kib.get(b"SReclaimable", 0)  # absent before 2.6.19
    swap_used = kib.get(b"SwapTotal", 0) - kib.get(b"SwapFree", 0)
    return total, available, cached, total - available, swap_used


def parse_meminfo(data: bytes) -> dict[str, int]:
    """Every /proc/meminfo field, in bytes where the kernel says kB (HugePages_* are counts)."""
    out: dict[str, int] = {}
    for line in data.decode().splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if not fields:
            continue
        value = int(fields[0])
        out[key] = value * 1024 if len(fields) > 1 and fields[1] == "kB" else value
    return out


def parse_vmstat(data: bytes) -> dict[str, int]:
    """Every /proc/vmstat field: ``name value`` lines (mm/vmstat.c, vmstat_text[]); counts, mostly pages."""
    words = data.split()
    names = words[0::2]
    # The kernel prints the same names in the same order every time: decode them once.
    decoded = _VMSTAT_NAMES.get(len(names))
    if decoded is None or decoded[0] != names:
        decoded = _VMSTAT_NAMES[len(names)] = (names, [n.decode() for n in names])
    return dict(zip(decoded[1], map(int, words[1::2]), strict=False))


_VMSTAT_NAMES: dict[int, tuple[list[bytes], list[str]]] = {}


def parse_diskstats_line(
    line: bytes, wanted: frozenset[bytes] | None, columns: Callable[[list[bytes]], T]
) -> tuple[str, T] | None:
    """(device, ``columns`` of its line) for a /proc/diskstats line of a wanted device (block/genhd.c diskstats_show).

    Fields: major minor name, then 11 columns since 2.6 (reads, reads merged, sectors read, ms reading, writes,
    writes merged, sectors written, ms writing, in flight, ms doing I/O (io_ticks), weighted ms), discard columns
    since 4.18, flush columns since 5.5 (Documentation/admin-guide/iostats.rst). ``wanted`` (None: all) limits
    parsing to those device names. Names are bytes to the kernel; they are decoded as os.listdir decodes
    /sys/block, so a device has the profile's name in every sample, and a name that is not UTF-8 is that name,
    not an error that stops every sample.
    """
    parts = line.split()
    if len(parts) < 14 or (wanted is not None and parts[2] not in wanted):
        return None
    return parts[2].decode(errors="surrogateescape"), columns(parts)


def diskstats_counters(parts: list[bytes]) -> tuple[int, ...]:
    """The Sampler's columns: (read_ops, read_bytes, read_ms, write_ops, write_bytes, write_ms, busy_ms)."""
    return (
        int(parts[3]),
        int(parts[5]) * SECTOR_BYTES,
        int(parts[6]),
        int(parts[7]),
        int(parts[9]) * SECTOR_BYTES,
        int(parts[10]),
        int(parts[12]),
    )


def diskstats_all(parts: list[bytes]) -> dict[str, float]:
    """Every column the kernel has, in base units: bytes (sectors are 512 bytes whatever the device), seconds."""
    v = [int(x) for x in parts[3:]]
    row: dict[str, float] = {
        "reads_completed": v[0],
        "reads_merged": v[1],
        "read_bytes": v[2] * SECTOR_BYTES,
        "read_time_seconds": v[3] / 1000,
        "writes_completed": v[4],
        "writes_merged": v[5],
        "written_bytes": v[6] * SECTOR_BYTES,
        "write_time_seconds": v[7] / 1000,
        "io_now": v[8],
        "io_time_seconds": v[9] / 1000,
        "io_time_weighted_seconds": v[10] / 1000,
    }
    if len(v) >= 15:
        row["discards_completed"] = v[11]
        row["discards_merged"] = v[12]
        row["discarded_bytes"] = v[13] * SECTOR_BYTES
        row["discard_time_seconds"] = v[14] / 1000
    if len(v) >= 17:
        row["flush_requests"] = v[15]
        row["flush_time_seconds"] = v[16] / 1000
    return row


def parse_diskstats(
    data: bytes, columns: Callable[[list[bytes]], T], wanted: frozenset[bytes] | None = None
) -> dict[str, T]:
    """Every (wanted) device of /proc/diskstats: see parse_diskstats_line."""
    return dict(p for line in data.split(b"\n") if (p := parse_diskstats_line(line, wanted, columns)) is not None)


class LineMemo(Generic[K, V]):
    """Parses only the lines that changed since the last read of a file.

    On a quiet machine most lines of /proc/net/dev and /proc/diskstats are byte-identical between two samples;
    their parsed value is reused, and since it is the very same tuple, the rate code can tell "no change" by
    identity. The memo holds only the lines of the latest read, so it never grows.
    """

    __slots__ = ("_lines",)

    def __init__(self) -> None:
        self._lines: dict[bytes, tuple[K, V] | None] = {}

    def parse(self, lines: list[bytes], parse_line: Callable[[bytes], tuple[K, V] | None]) -> dict[K, V]:
        old = self._lines
        new: dict[bytes, tuple[K, V] | None] = {}
        out: dict[K, V] = {}
        for line in lines:
            hit = old[line] if line in old else parse_line(line)
            new[line] = hit
            if hit is not None:
                out[hit[0]] = hit[1]
        self._lines = new
        return out


def parse_loadavg(data: bytes) -> tuple[float, float, float]:
    """(1, 5, 15)-minute load averages (fs/proc/loadavg.c)."""
    f = data.split(None, 3)
    return float(f[0]), float(f[1]), float(f[2])


def parse_pressure(data: bytes) -> tuple[float, float | None, int, int | None] | None:
    """(some_avg10, full_avg10, some_total_us, full_total_us) from /proc/pressure/* (kernel/sched/psi.c, 4.20+).

    The ``full`` line exists for memory and io since 4.20 and for cpu since 5.13; None where absent.
    """
    some_avg = full_avg = None
    some_total = full_total = None
    for line in data.split(b"\n"):
        if not line:
            continue
        kind, avg10, _avg60, _avg300, total = line.split()
        if kind == b"some":
            some_avg, some_total = float(avg10[6:]), int(total[6:])
        elif kind == b"full":
            full_avg, full_total = float(avg10[6:]), int(total[6:])
    if some_avg is None or some_total is None:
        return None
    return some_avg, full_avg, some_total, full_total


def pressure_seconds(parsed: tuple[float, float | None, int, int | None] | None) -> dict[str, float]:
    """parse_pressure's figures by name, totals in seconds: {} without PSI; no full_* where the file has no full."""
    if parsed is None:
        return {}
    some_avg, full_avg, some_total, full_total = parsed
    out = {"some_avg10": some_avg, "some_total_seconds": some_total / 1e6}
    if full_avg is not None and full_total is not None:
        out["full_avg10"] = full_avg
        out["full_total_seconds"] = full_total / 1e6
    return out


def parse_file_nr(data: bytes) -> dict[str, float]:
    """``allocated  free(always 0 since 2.6)  max`` from /proc/sys/fs/file-nr (fs/file_table.c)."""
    parts = data.split()
    if len(parts) < 3:
        return {}
    return {"file_handles_allocated": float(parts[0]), "file_handles_maximum": float(parts[2])}


def parse_number(data: bytes) -> float | None:
    """A /proc/sys file of one number (entropy_avail, nf_conntrack_count...); None for an empty or absent file."""
    data = data.strip()
    return float(data) if data else None


def parse_schedstat(data: bytes) -> dict[int, float]:
    """{cpu: seconds spent running tasks} from /proc/schedstat version 15+ (kernel/sched/stats.c).

    A "cpuN" line's 7th number is rq_cpu_time in nanoseconds: time the CPU ran tasks other than idle.
    """
    out: dict[int, float] = {}
    for line in data.split(b"\n"):
        if line.startswith(b"cpu"):
            parts = line.split()
            if len(parts) >= 8:
                out[int(parts[0][3:])] = int(parts[7]) / 1e9
    return out


def parse_cpuinfo(text: str) -> dict[str, str]:
    """The fields of the first processor block of /proc/cpuinfo (all CPUs of a model share them)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if out:
                break
            continue
        key, _, value = line.partition(":")
        out.setdefault(key.strip(), value.strip())
    return out


def parse_cpulist(text: str) -> list[int]:
    """'0-3,8,10-11' -> [0, 1, 2, 3, 8, 10, 11] (the kernel's cpulist format, lib/bitmap.c)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def parse_proc_cgroup(text: str) -> list[tuple[str, list[str], str]]:
    """[(hierarchy id, controllers, path)] from /proc/self/cgroup; v2 is the line "0::/path"."""
    out: list[tuple[str, list[str], str]] = []
    for line in text.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        out.append((hid, [c for c in controllers.split(",") if c], path or "/"))
    return out


def parse_os_release(text: str) -> dict[str, str]:
    """KEY=value pairs of os-release(5), quotes removed."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            out[key.strip()] = value.strip().strip("\"'")
    return out
