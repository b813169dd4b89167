"""Pure parsers for /proc files: bytes in, typed values out, no I/O.

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
else:
    # typing costs ~7 ms to import; at run time LineMemo[...] only needs to be subscriptable.
    class Generic:
        def __class_getitem__(cls, _item: object) -> type:
            return cls

    K = V = None

# /proc/stat counts in USER_HZ (clock ticks visible to userspace), not CONFIG_HZ.
USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's block size (block/genhd.c)


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


def parse_diskstats_line(line: bytes, wanted: frozenset[bytes] | None = None) -> tuple[str, tuple[int, ...]] | None:
    """(device, (read_ops, read_bytes, read_ms, write_ops, write_bytes, write_ms, busy_ms)) (block/genhd.c).

    Columns after the name: reads, reads merged, sectors read, ms reading, writes, writes merged, sectors written,
    ms writing, in flight, ms doing I/O (io_ticks), weighted ms; discard (4.18+) and flush (5.5+) columns follow
    and are ignored. ``wanted`` limits parsing to those device names.
    """
    parts = line.split()
    if len(parts) < 14 or (wanted is not None and parts[2] not in wanted):
        return None
    return parts[2].decode(), (
        int(parts[3]),
        int(parts[5]) * SECTOR_BYTES,
        int(parts[6]),
        int(parts[7]),
        int(parts[9]) * SECTOR_BYTES,
        int(parts[10]),
        int(parts[12]),
    )


def parse_diskstats(data: bytes, wanted: frozenset[bytes] | None = None) -> dict[str, tuple[int, ...]]:
    """Every (wanted) line of /proc/diskstats: see parse_diskstats_line."""
    return dict(p for line in data.split(b"\n") if (p := parse_diskstats_line(line, wanted)) is not None)


def parse_net_dev_line(line: bytes) -> tuple[str, tuple[int, ...]] | None:
    """(interface, (rx_bytes, rx_packets, rx_errors, rx_drops, tx_bytes, tx_packets, tx_errors, tx_drops)).

    net/core/net-procfs.c: "name: 8 receive columns 8 transmit columns". The name may be glued to the first
    number when the counter is wide ("eth0:123"), so split on the colon first. Header lines give None.
    """
    name, sep, rest = line.partition(b":")
    if not sep:
        return None
    f = rest.split()
    if len(f) < 16:
        return None
    # Interface names are bytes to the kernel (anything but "/", ":", whitespace): decoded as os.listdir decodes
    # /sys/class/net, so a non-UTF-8 name is the profile's name, not an error that stops every sample.
    return name.strip().decode(errors="surrogateescape"), (
        int(f[0]),
        int(f[1]),
        int(f[2]),
        int(f[3]),
        int(f[8]),
        int(f[9]),
        int(f[10]),
        int(f[11]),
    )


def parse_net_dev(data: bytes) -> dict[str, tuple[int, ...]]:
    """Every interface of /proc/net/dev: see parse_net_dev_line."""
    return dict(p for line in data.split(b"\n")[2:] if (p := parse_net_dev_line(line)) is not None)


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


def _unescape_mount(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo (fs/proc_namespace.c, mangle()) and nothing else:
    # every other character, UTF-8 included, is as the path has it (so no "unicode_escape", which reads UTF-8 bytes
    # as Latin-1).
    if "\\" not in path:
        return path
    first, *rest = path.split("\\")
    out = [first]
    for part in rest:
        code = part[:3]
        if len(code) == 3 and all("0" <= c <= "7" for c in code):
            out.append(chr(int(code, 8)) + part[3:])
        else:
            out.append("\\" + part)
    return "".join(out)


def parse_mountinfo(text: str) -> list[tuple[int, int, str, str, str]]:
    """[(major, minor, mountpoint, fstype, source)] from /proc/self/mountinfo (Documentation/filesystems/proc.rst).

    Fields: id parent major:minor root mountpoint options [optional fields...] - fstype source super-options.
    """
    mounts: list[tuple[int, int, str, str, str]] = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        f = left.split()
        major, _, minor = f[2].partition(":")
        r = right.split()
        mounts.append((int(major), int(minor), _unescape_mount(f[4]), r[0], r[1] if len(r) > 1 else ""))
    return mounts


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
