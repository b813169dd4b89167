"""Pure parsers for /proc files: bytes in, typed values out, no I/O.

Hot-path parsers (stat, meminfo, diskstats, net/dev, loadavg, pressure) run up to 100 times a second, so they
parse only the fields we emit and avoid building intermediate dicts. Each names the kernel source that defines
its format.
"""

from __future__ import annotations

import os

# /proc/stat counts in USER_HZ (clock ticks visible to userspace), not CONFIG_HZ.
USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's block size (block/genhd.c)


def parse_stat_cpus(data: bytes) -> dict[int, tuple[float, ...]]:
    """Per-CPU seconds in user, nice, system, idle, iowait, irq, softirq, steal (fs/proc/stat.c).

    Kernels before 2.6.11 lack steal; missing columns count as 0. guest/guest_nice are already inside user/nice.
    CPUs that are offline have no line: they are simply absent (hot-plug).
    """
    hz = float(USER_HZ)
    cpus: dict[int, tuple[float, ...]] = {}
    for line in data.split(b"\n")[1:]:
        if not line.startswith(b"cpu"):
            break  # the cpuN lines come first, together
        parts = line.split()
        values = [int(v) / hz for v in parts[1:9]]
        while len(values) < 8:
            values.append(0.0)
        cpus[int(parts[0][3:])] = tuple(values)
    return cpus


def parse_stat_btime(data: bytes) -> float | None:
    """Boot time in seconds since the epoch (the ``btime`` line of /proc/stat)."""
    start = data.find(b"\nbtime ")
    if start < 0:
        return None
    return float(data[start + 7 : data.index(b"\n", start + 7)])


_MEMINFO_KEYS = (b"MemTotal:", b"MemAvailable:", b"Cached:", b"SwapTotal:", b"SwapFree:", b"MemFree:", b"Buffers:")


def _meminfo_kib(data: bytes, key: bytes) -> int | None:
    # Keys are matched at a line start: "Cached:" must not match "SwapCached:".
    at = data.find(b"\n" + key)
    if at < 0:
        if not data.startswith(key):
            return None
        at = -1
    start = at + 1 + len(key)
    end = data.find(b"\n", start)
    return int(data[start:end].split()[0]) * 1024 if end > 0 else int(data[start:].split()[0]) * 1024


def parse_meminfo_sample(data: bytes) -> tuple[int, int, int, int, int]:
    """(total, available, cached, used, swap_used) in bytes (fs/proc/meminfo.c).

    ``used`` is total - available: memory the kernel cannot hand out without swapping, the figure `free` shows
    since procps 3.3.10. Kernels before 3.14 have no MemAvailable: we estimate it as MemFree + Buffers + Cached,
    as procps does.
    """
    total = _meminfo_kib(data, b"MemTotal:") or 0
    available = _meminfo_kib(data, b"MemAvailable:")
    cached = _meminfo_kib(data, b"Cached:") or 0
    if available is None:
        available = (_meminfo_kib(data, b"MemFree:") or 0) + (_meminfo_kib(data, b"Buffers:") or 0) + cached
    swap_total = _meminfo_kib(data, b"SwapTotal:") or 0
    swap_free = _meminfo_kib(data, b"SwapFree:") or 0
    return total, available, cached, total - available, swap_total - swap_free


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


def parse_diskstats(data: bytes, wanted: frozenset[bytes] | None = None) -> dict[str, tuple[int, ...]]:
    """{device: (read_ops, read_bytes, read_ms, write_ops, write_bytes, write_ms, busy_ms)} (block/genhd.c).

    Columns after the name: reads, reads merged, sectors read, ms reading, writes, writes merged, sectors written,
    ms writing, in flight, ms doing I/O (io_ticks), weighted ms; discard (4.18+) and flush (5.5+) columns follow
    and are ignored. ``wanted`` limits parsing to those device names.
    """
    out: dict[str, tuple[int, ...]] = {}
    for line in data.split(b"\n"):
        parts = line.split()
        if len(parts) < 14 or (wanted is not None and parts[2] not in wanted):
            continue
        out[parts[2].decode()] = (
            int(parts[3]),
            int(parts[5]) * SECTOR_BYTES,
            int(parts[6]),
            int(parts[7]),
            int(parts[9]) * SECTOR_BYTES,
            int(parts[10]),
            int(parts[12]),
        )
    return out


def parse_net_dev(data: bytes) -> dict[str, tuple[int, ...]]:
    """{interface: (rx_bytes, rx_packets, rx_errors, rx_drops, tx_bytes, tx_packets, tx_errors, tx_drops)}.

    net/core/net-procfs.c: two header lines, then "name: 8 receive columns 8 transmit columns". The name may be
    glued to the first number when the counter is wide ("eth0:123"), so split on the colon first.
    """
    out: dict[str, tuple[int, ...]] = {}
    for line in data.split(b"\n")[2:]:
        name, sep, rest = line.partition(b":")
        if not sep:
            continue
        f = rest.split()
        out[name.strip().decode()] = (
            int(f[0]),
            int(f[1]),
            int(f[2]),
            int(f[3]),
            int(f[8]),
            int(f[9]),
            int(f[10]),
            int(f[11]),
        )
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
    # mountinfo escapes space, tab, newline and backslash as \ooo (fs/proc_namespace.c, mangle()).
    if "\\" not in path:
        return path
    return path.encode().decode("unicode_escape")


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
