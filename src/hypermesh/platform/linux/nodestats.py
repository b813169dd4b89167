"""The node's kernel statistics beyond the Sampler's counters: pure parsers and one reader.

What node_exporter's default collectors read (meminfo, vmstat, stat, netdev, diskstats, netstat, sockstat,
filefd, entropy, pressure, filesystem, cpufreq, netclass, softnet, conntrack, arp, uname, os), written from the
kernel's formats. Each ``parse_*`` takes the file's bytes and returns plain values in base units; no I/O.
``NodeStatsReader`` keeps the procfs files open and re-reads them with pread(2) like the counter reader, but it
is never on the sampling hot path: only ``Backend.node_stats()`` (the agent's /metrics) calls it.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
import time

from hypermesh.model import CpuIdleState, FilesystemStats, InterfaceStats, NodeStats
from hypermesh.platform.linux import block, procfs, sysfs

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_HZ = procfs.USER_HZ

# ------------------------------------------------------------------------------------------ parsers


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
                nice = int(parts[10]) / _HZ if len(parts) > 10 else 0.0
                guest[int(parts[0][3:])] = [int(parts[9]) / _HZ, nice]
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


def parse_softnet(data: bytes) -> dict[int, list[int]]:
    """{cpu: [processed, dropped, time_squeeze]} from /proc/net/softnet_stat (net/core/net-procfs.c).

    Hexadecimal columns, one row per online CPU; kernels since 5.10 put the CPU id in column 13, older ones
    list online CPUs in order, so the row number stands in for it.
    """
    out: dict[int, list[int]] = {}
    for row, line in enumerate(data.split(b"\n")):
        parts = line.split()
        if len(parts) < 3:
            continue
        cpu = int(parts[12], 16) if len(parts) >= 13 else row
        out[cpu] = [int(parts[0], 16), int(parts[1], 16), int(parts[2], 16)]
    return out


NET_DEV_COLUMNS = (
    "receive_bytes",
    "receive_packets",
    "receive_errors",
    "receive_drops",
    "receive_fifo",
    "receive_frame",
    "receive_compressed",
    "receive_multicast",
    "transmit_bytes",
    "transmit_packets",
    "transmit_errors",
    "transmit_drops",
    "transmit_fifo",
    "transmit_collisions",
    "transmit_carrier",
    "transmit_compressed",
)


def parse_net_dev_full(data: bytes) -> dict[str, dict[str, int]]:
    """All 16 columns of each /proc/net/dev interface (net/core/net-procfs.c dev_seq_printf_stats)."""
    out: dict[str, dict[str, int]] = {}
    for line in data.split(b"\n")[2:]:
        name, sep, rest = line.partition(b":")
        values = rest.split()
        if sep and len(values) >= 16:
            # Names are bytes to the kernel: not-UTF-8 ones decode as os.listdir and the Sampler decode them.
            out[name.strip().decode(errors="surrogateescape")] = dict(
                zip(NET_DEV_COLUMNS, map(int, values), strict=False)
            )
    return out


def parse_diskstats_full(data: bytes, wanted: frozenset[bytes] | None = None) -> dict[str, dict[str, float]]:
    """Every /proc/diskstats column in base units (block/genhd.c diskstats_show; Documentation/admin-guide/iostats).

    11 columns after the name since 2.6, discard columns since 4.18, flush columns since 5.5: each group is
    present only where the kernel has it. Sectors are 512 bytes whatever the device; times are milliseconds.
    """
    out: dict[str, dict[str, float]] = {}
    for line in data.split(b"\n"):
        p = line.split()
        if len(p) < 14 or (wanted is not None and p[2] not in wanted):
            continue
        v = [int(x) for x in p[3:]]
        row: dict[str, float] = {
            "reads_completed": v[0],
            "reads_merged": v[1],
            "read_bytes": v[2] * procfs.SECTOR_BYTES,
            "read_time_seconds": v[3] / 1000,
            "writes_completed": v[4],
            "writes_merged": v[5],
            "written_bytes": v[6] * procfs.SECTOR_BYTES,
            "write_time_seconds": v[7] / 1000,
            "io_now": v[8],
            "io_time_seconds": v[9] / 1000,
            "io_time_weighted_seconds": v[10] / 1000,
        }
        if len(v) >= 15:
            row["discards_completed"] = v[11]
            row["discards_merged"] = v[12]
            row["discarded_bytes"] = v[13] * procfs.SECTOR_BYTES
            row["discard_time_seconds"] = v[14] / 1000
        if len(v) >= 17:
            row["flush_requests"] = v[15]
            row["flush_time_seconds"] = v[16] / 1000
        out[p[2].decode(errors="surrogateescape")] = row
    return out


def parse_snmp(data: bytes) -> dict[str, dict[str, int]]:
    """{protocol: {field: value}} from /proc/net/snmp and /proc/net/netstat (net/ipv4/proc.c).

    Each protocol is a pair of lines, ``Proto: names...`` then ``Proto: values...``. Values are signed
    (Tcp MaxConn is -1).
    """
    out: dict[str, dict[str, int]] = {}
    lines = data.split(b"\n")
    for names, values in zip(lines[0::2], lines[1::2], strict=False):
        proto, _, header = names.partition(b":")
        vproto, _, numbers = values.partition(b":")
        if not header or proto != vproto:
            continue
        decoded = _HEADERS.get(names)
        if decoded is None:
            decoded = [n.decode() for n in header.split()]
            if len(_HEADERS) < 64:  # a kernel has ~10 header lines; the bound guards against garbage
                _HEADERS[names] = decoded
        fields = out.setdefault(proto.decode(), {})
        for name, number in zip(decoded, numbers.split(), strict=False):
            fields[name] = int(number)
    return out


# Header lines of /proc/net/snmp and netstat never change while the kernel runs: decode each once.
_HEADERS: dict[bytes, list[str]] = {}


_SNMP6_PROTOCOLS = frozenset(("Ip6", "Icmp6", "UdpLite6", "Udp6"))


def parse_snmp6(data: bytes) -> dict[str, dict[str, int]]:
    """{protocol: {field: value}} from /proc/net/snmp6 (net/ipv6/proc.c): ``Ip6InReceives  55`` lines."""
    words = data.split()
    names = words[0::2]
    cached = _SNMP6_NAMES.get(len(names))
    if cached is None or cached[0] != names:
        # Ip6..., Icmp6..., Udp6..., UdpLite6...: the protocol ends at the first "6". The kernel prints the same
        # names in the same order every time, so they are split once.
        split = []
        for name in names:
            six = name.find(b"6") + 1
            split.append((name[:six].decode(), name[six:].decode()))
        cached = _SNMP6_NAMES[len(names)] = (names, split)
    out: dict[str, dict[str, int]] = {}
    for (proto, field), value in zip(cached[1], words[1::2], strict=False):
        if proto in _SNMP6_PROTOCOLS:
            fields = out.get(proto)
            if fields is None:
                fields = out[proto] = {}
            fields[field] = int(value)
    return out


_SNMP6_NAMES: dict[int, tuple[list[bytes], list[tuple[str, str]]]] = {}


def parse_sockstat(data: bytes) -> dict[str, dict[str, int]]:
    """{protocol: {field: value}} from /proc/net/sockstat(6) (net/ipv4/proc.c sockstat_seq_show).

    ``mem`` of TCP/UDP counts pages and becomes ``mem_bytes``; FRAG ``memory`` is already bytes.
    ``sockets: used N`` becomes {"sockets": {"used": N}}.
    """
    out: dict[str, dict[str, int]] = {}
    for line in data.split(b"\n"):
        proto, _, rest = line.partition(b":")
        parts = rest.split()
        if not parts:
            continue
        fields = out.setdefault(proto.decode(), {})
        for key, value in zip(parts[0::2], parts[1::2], strict=False):
            if key == b"mem":
                fields["mem_bytes"] = int(value) * PAGE_BYTES
            else:
                fields[key.decode()] = int(value)
    return out


def parse_pressure_full(data: bytes) -> dict[str, float]:
    """some/full totals (seconds) and avg10 (percent) of one /proc/pressure/* file (kernel/sched/psi.c)."""
    parsed = procfs.parse_pressure(data)
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


def parse_arp(data: bytes) -> dict[str, int]:
    """{interface: neighbour entries} from /proc/net/arp (net/ipv4/arp.c): header, then one row per entry."""
    out: dict[str, int] = {}
    for line in data.split(b"\n")[1:]:
        parts = line.split()
        if len(parts) >= 6:
            name = parts[5].decode(errors="surrogateescape")
            out[name] = out.get(name, 0) + 1
    return out


# Like node_exporter's defaults: pseudo and kernel-internal filesystems carry no capacity worth alerting on,
# and mounts under these directories are the system's plumbing or removable media.
PSEUDO_FSTYPES = frozenset(
    [
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devpts",
        "devtmpfs",
        "fusectl",
        "hugetlbfs",
        "iso9660",
        "mqueue",
        "nsfs",
        "overlay",
        "proc",
        "procfs",
        "pstore",
        "rpc_pipefs",
        "securityfs",
        "selinuxfs",
        "squashfs",
        "sysfs",
        "tracefs",
    ]
)
EXCLUDED_MOUNT_DIRS = ("/dev", "/proc", "/run", "/sys", "/mnt", "/media")
EXCLUDED_MOUNT_PREFIXES = ("/var/lib/docker/", "/var/lib/containers/storage/")


def parse_mounts(text: str) -> list[tuple[str, str, str, bool]]:
    """(device, mountpoint, fstype, readonly) of the real filesystems in a mountinfo (fs/proc_namespace.c).

    mountinfo fields: id parent major:minor root mountpoint options [optional...] - fstype source super-options.
    A mountpoint listed twice (mounted over) keeps its last, visible entry.
    """
    mounts: dict[str, tuple[str, str, str, bool]] = {}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 6 or len(tail) < 2:
            continue
        mountpoint = fields[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        fstype = tail[0]
        if fstype in PSEUDO_FSTYPES or mountpoint.startswith(EXCLUDED_MOUNT_PREFIXES):
            continue
        if any(mountpoint == d or mountpoint.startswith(d + "/") for d in EXCLUDED_MOUNT_DIRS):
            continue
        # Read-only for the mount's owner (the host): the mount's own flag, or its superblock's (a filesystem the
        # kernel turned read-only after errors shows ro only in the super options, mountinfo's last field).
        readonly = "ro" in fields[5].split(",") or (len(tail) > 2 and "ro" in tail[2].split(","))
        mounts[mountpoint] = (tail[1], mountpoint, fstype, readonly)
    return list(mounts.values())


# How long one statvfs call of a network or FUSE mount may take. A hard NFS mount of a dead server blocks statvfs in
# the kernel for good: past this the mount being asked is "stuck", reported as a device error and not asked again
# until that call returns (node_exporter's --collector.filesystem.mount-timeout, 5 s there).
STATVFS_TIMEOUT_S = 1.0
# Filesystems whose statvfs waits on a server or a user-space daemon; only these go through StatvfsWorker (local ones
# answer from memory, and the hand-over to a thread would cost more than all their calls together).
NETWORK_FSTYPES = frozenset(
    [
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "ceph",
        "glusterfs",
        "9p",
        "afs",
        "coda",
        "lustre",
        "gpfs",
        "beegfs",
        "orangefs",
        "davfs",
        "virtiofs",
    ]
)


def may_hang(fstype: str) -> bool:
    return fstype in NETWORK_FSTYPES or fstype.startswith("fuse")


class _StatvfsJob:
    __slots__ = ("abandoned", "current", "done", "paths", "results")

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.results: dict[str, os.statvfs_result | None] = {}
        self.current: str | None = None
        self.abandoned = False
        self.done = threading.Event()


class StatvfsWorker:
    """statvfs(3) of mounts in a worker thread, so that a hung mount cannot hang the reader (and the agent with it).

    One thread does a read's calls in a row (one hand-over per read, not one per mount). When a call does not return
    within the limit (no progress for ``timeout_s``), the path being asked is stuck: the thread is left to it, and
    the next read gets a new thread and skips the stuck path until its call returns (the left thread then ends).
    At most one thread per stuck mount.
    """

    def __init__(self, timeout_s: float = STATVFS_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._stuck: set[str] = set()
        self._queue: queue.SimpleQueue[_StatvfsJob | None] | None = None

    def stat(self, paths: list[str]) -> dict[str, os.statvfs_result | None]:
        """path -> statvfs result, or None where it failed, is stuck, or was not reached in time."""
        with self._lock:
            todo = [p for p in paths if p not in self._stuck]
        if not todo:
            return {}
        if self._queue is None:
            self._queue = queue.SimpleQueue()
            threading.Thread(target=self._run, args=(self._queue,), name="hypermesh-statvfs", daemon=True).start()
        job = _StatvfsJob(todo)
        self._queue.put(job)
        answered = 0
        while not job.done.wait(self.timeout_s):  # the limit is per call: slow but moving mounts are waited for
            with self._lock:
                if job.done.is_set():
                    break
                if len(job.results) > answered:
                    answered = len(job.results)
                    continue
                job.abandoned = True
                if job.current is not None:
                    self._stuck.add(job.current)
                self._queue = None  # that thread is blocked: the next read starts another
                break
        with self._lock:
            return dict(job.results)

    def _run(self, jobs: queue.SimpleQueue[_StatvfsJob | None]) -> None:
        while (job := jobs.get()) is not None:
            for path in job.paths:
                with self._lock:
                    if job.abandoned:
                        break
                    job.current = path
                try:
                    result: os.statvfs_result | None = os.statvfs(path)
                except OSError:
                    result = None
                with self._lock:
                    self._stuck.discard(path)
                    if job.abandoned:
                        return  # the reader gave up on this thread while it was blocked: a newer one serves it
                    job.results[path] = result
            with self._lock:
                job.current = None
                job.done.set()

    def close(self) -> None:
        if self._queue is not None:
            self._queue.put(None)
            self._queue = None


def filesystem_stats(
    device: str, mountpoint: str, fstype: str, readonly: bool, st: os.statvfs_result | None
) -> FilesystemStats:
    """Sizes from statvfs(3): f_frsize units for blocks; f_bfree counts root's reserve, f_bavail does not."""
    if st is None:
        return FilesystemStats(device, mountpoint, fstype, 0, 0, 0, 0, 0, readonly, True)
    unit = st.f_frsize or st.f_bsize
    return FilesystemStats(
        device=device,
        mountpoint=mountpoint,
        fstype=fstype,
        size_bytes=st.f_blocks * unit,
        free_bytes=st.f_bfree * unit,
        available_bytes=st.f_bavail * unit,
        files=st.f_files,
        files_free=st.f_ffree,
        # Not statvfs's ST_RDONLY: that is this process's view, read-only everywhere under a hardened unit
        # (systemd's ProtectSystem=strict), which would call every filesystem read-only (node_exporter reads the
        # mount table alike).
        readonly=readonly,
        error=False,
    )


def parse_os_release(text: str) -> dict[str, str]:
    return procfs.parse_os_release(text)


# Error counters /proc/net/dev sums into errs/drop/frame/fifo/carrier: the breakdown tells a bad cable (CRC) from
# a full ring (missed, over) from traffic for an unknown protocol (nohandler). include/uapi/linux/if_link.h.
INTERFACE_ERROR_COUNTERS = (
    "rx_crc_errors",
    "rx_length_errors",
    "rx_missed_errors",
    "rx_over_errors",
    "rx_nohandler",
    "tx_aborted_errors",
    "tx_heartbeat_errors",
    "tx_window_errors",
)

# The /proc/net/dev column each error counter is summed into (rx_nohandler is in none of them).
_ERROR_TOTALS = {
    "rx_crc_errors": "receive_frame",
    "rx_length_errors": "receive_frame",
    "rx_over_errors": "receive_frame",
    "rx_missed_errors": "receive_drops",
    "tx_aborted_errors": "transmit_carrier",
    "tx_heartbeat_errors": "transmit_carrier",
    "tx_window_errors": "transmit_carrier",
}

# ------------------------------------------------------------------------------------------- reader


class NodeStatsReader:
    """Reads NodeStats from a LinuxBackend's roots; procfs files stay open and are pread from offset 0.

    sysfs directories (interfaces, cpuidle states, cpufreq) and mounts change at run time, so they are listed on
    every read. A non-live root has no statvfs of its own: ``<root>/statvfs.json`` ({mountpoint: [frsize, blocks,
    bfree, bavail, files, ffree]}) stands in for it when present (fixture trees), else ``<root><mountpoint>`` is
    asked (a host's root mounted into a container, like node_exporter's --path.rootfs). Thread-safe.

    ``unreadable`` names the procfs files (relative to proc) that could not be opened or read, with the path and the
    reason: those in _ALWAYS_PRESENT whatever the error, the others unless simply absent (a kernel without PSI,
    netfilter or IPv6). Their part of NodeStats is then empty; the agent reports the collectors reading them as
    failed rather than as a host with no such data. A file that reads again leaves the dict.
    """

    _PROC_FILES = (
        "meminfo",
        "vmstat",
        "stat",
        "softirqs",
        "net/dev",
        "diskstats",
        "net/snmp",
        "net/snmp6",
        "net/netstat",
        "net/sockstat",
        "net/sockstat6",
        "net/softnet_stat",
        "net/arp",
        "sys/fs/file-nr",
        "sys/kernel/random/entropy_avail",
        "sys/kernel/random/poolsize",
        "sys/net/netfilter/nf_conntrack_count",
        "sys/net/netfilter/nf_conntrack_max",
        "pressure/cpu",
        "pressure/io",
        "pressure/memory",
        "1/mountinfo",
        "self/mountinfo",
    )

    # In every kernel this package supports (4.x+), built-in (not modules) and readable by any user.
    _ALWAYS_PRESENT = frozenset(
        {
            "meminfo",
            "vmstat",
            "stat",
            "softirqs",
            "net/dev",
            "diskstats",
            "net/snmp",
            "net/netstat",
            "net/sockstat",
            "net/softnet_stat",
            "net/arp",
            "sys/fs/file-nr",
        }
    )

    def __init__(self, proc: str, sys: str, root: str, live: bool) -> None:
        self._proc = proc
        self._sys = sys
        self._root = root
        self._live = live
        self._lock = threading.Lock()
        self._closed = False
        self._fds: dict[str, int] = {}
        self.unreadable: dict[str, str] = {}
        for name in self._PROC_FILES:
            try:
                self._fds[name] = os.open(f"{proc}/{name}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                # Absent on this kernel (no PSI, no netfilter, no IPv6): that part stays empty. Else say so.
                if name in self._ALWAYS_PRESENT or not isinstance(exc, FileNotFoundError):
                    self.unreadable[name] = f"{proc}/{name}: {exc.strerror or exc}"
        self._disk_names: frozenset[bytes] | None = None
        self._disk_lines = -1
        # sysfs attributes of interfaces and CPUs, kept open like the procfs files; those not asked for in a read
        # (an interface or CPU that went away) are closed at its end.
        self._attr_fds: dict[str, int] = {}
        self._attrs_used: set[str] = set()
        self._statvfs_json: dict[str, list[int]] | None = None
        self._mountinfo = ""
        self._mounts: list[tuple[str, str, str, bool]] = []
        self._statvfs = StatvfsWorker()
        if not live:
            import json

            text = sysfs.read_str(f"{root}/statvfs.json")
            self._statvfs_json = json.loads(text) if text else None
        self._uname, self._os_release = self._identity()

    def _identity(self) -> tuple[dict[str, str], dict[str, str]]:
        kernel = f"{self._proc}/sys/kernel"
        uname = {
            "sysname": sysfs.read_str(f"{kernel}/ostype") or "Linux",
            "release": sysfs.read_str(f"{kernel}/osrelease") or "",
            "version": sysfs.read_str(f"{kernel}/version") or "",
            # A recorded tree names its machine in <root>/arch; a real host's root seen from a container (--root /host)
            # has none, and runs the kernel this process runs on.
            "machine": os.uname().machine
            if self._live
            else (sysfs.read_str(f"{self._root}/arch") or os.uname().machine),
            "nodename": sysfs.read_str(f"{kernel}/hostname") or "",
            "domainname": sysfs.read_str(f"{kernel}/domainname") or "(none)",
        }
        text = sysfs.read_str(f"{self._root}/etc/os-release") or sysfs.read_str(f"{self._root}/usr/lib/os-release")
        return uname, parse_os_release(text or "")

    def _read(self, name: str) -> bytes:
        fd = self._fds.get(name)
        if fd is None:
            return b""
        try:
            data = sysfs.pread_seq(fd)
        except OSError as exc:
            self.unreadable[name] = f"{self._proc}/{name}: {exc.strerror or exc}"
            return b""
        self.unreadable.pop(name, None)
        return data

    def _attr(self, path: str) -> bytes | None:
        """A sysfs attribute through a kept fd; None where it is absent or the driver refuses (EINVAL while down).

        A kept fd answers ENODEV once its object is gone: an interface deleted between two reads, perhaps created
        again under the same name (a container's veth, a VPN's tun). The path is then opened afresh.
        """
        self._attrs_used.add(path)
        fd = self._attr_fds.get(path)
        if fd is not None:
            try:
                return os.pread(fd, 4096, 0)
            except OSError as exc:
                if exc.errno != errno.ENODEV:
                    return None  # the driver refuses now (carrier, duplex while down): the fd stays good
                os.close(self._attr_fds.pop(path))
        try:
            fd = self._attr_fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return os.pread(fd, 4096, 0)
        except OSError:
            return None

    def _attr_int(self, path: str) -> int | None:
        data = self._attr(path)
        try:
            return None if data is None else int(data)
        except ValueError:
            return None

    def _attr_str(self, path: str) -> str | None:
        data = self._attr(path)
        return None if data is None else data.decode(errors="replace").strip()

    @property
    def may_block(self) -> bool:
        """Whether a read may wait on a network or FUSE filesystem (statvfs in StatvfsWorker, up to its limit).

        As of the last read's mount table: True before the first read; a remote mount added since is found by the
        next read, which waits for it at most STATVFS_TIMEOUT_S.
        """
        if self._statvfs_json is not None:
            return False
        if not self._mountinfo:
            return True
        return any(may_hang(fstype) for _, _, fstype, _ in self._mounts)

    def read(self) -> NodeStats:
        with self._lock:
            if self._closed:
                raise OSError(f"node stats reader for {self._proc} is closed")
            self._attrs_used = set()
            try:
                return self._read_all()
            finally:
                for path in [p for p in self._attr_fds if p not in self._attrs_used]:
                    os.close(self._attr_fds.pop(path))

    def _read_all(self) -> NodeStats:
        read = self._read
        kernel, guest = parse_stat_kernel(read("stat"))
        kernel.update(parse_file_nr(read("sys/fs/file-nr")))
        for key, name in (
            ("entropy_available_bits", "sys/kernel/random/entropy_avail"),
            ("entropy_pool_size_bits", "sys/kernel/random/poolsize"),
            ("conntrack_entries", "sys/net/netfilter/nf_conntrack_count"),
            ("conntrack_limit", "sys/net/netfilter/nf_conntrack_max"),
        ):
            data = read(name).strip()
            if data:
                kernel[key] = float(data)
        snmp = parse_snmp(read("net/snmp"))
        snmp.update(parse_snmp(read("net/netstat")))
        snmp.update(parse_snmp6(read("net/snmp6")))
        sockstat = parse_sockstat(read("net/sockstat"))
        sockstat.update(parse_sockstat(read("net/sockstat6")))
        pressure = {}
        for resource in ("cpu", "io", "memory"):
            values = parse_pressure_full(read(f"pressure/{resource}"))
            if values:
                pressure[resource] = values
        # The init process's mounts are the host's, as node_exporter reads them (/proc/1/mounts): an agent in a
        # container with the host's /proc at --root sees the host's filesystems. Unreadable (hidepid): our own.
        mountinfo = (read("1/mountinfo") or read("self/mountinfo")).decode(errors="replace")
        diskstats = read("diskstats")
        lines = diskstats.count(b"\n")
        if self._disk_names is None or lines != self._disk_lines:
            # A device came or went: the same whole disks the Sampler reports (its rule, its mount namespace).
            own = read("self/mountinfo").decode(errors="replace")
            self._disk_names = block.sample_disk_names(self._sys, own)
            self._disk_lines = lines
        net_dev = parse_net_dev_full(read("net/dev"))
        return NodeStats(
            timestamp=time.time(),
            meminfo=procfs.parse_meminfo(read("meminfo")),
            vmstat=parse_vmstat(read("vmstat")),
            kernel=kernel,
            cpu_guest=guest,
            softirqs=parse_softirqs(read("softirqs")),
            softnet=parse_softnet(read("net/softnet_stat")),
            net_dev=net_dev,
            diskstats=parse_diskstats_full(diskstats, self._disk_names),
            snmp=snmp,
            sockstat=sockstat,
            pressure=pressure,
            filesystems=self._filesystems(mountinfo),
            cpuidle=self._cpuidle(),
            cpu_frequency_hz=self._cpufreq(),
            interfaces=self._interfaces(net_dev),
            arp_entries=parse_arp(read("net/arp")),
            uname=self._uname,
            os_release=self._os_release,
        )

    def _filesystems(self, mountinfo: str) -> list[FilesystemStats]:
        if mountinfo != self._mountinfo:  # mounts change rarely; statvfs must be fresh every time
            self._mounts = parse_mounts(mountinfo)
            self._mountinfo = mountinfo
        results: dict[str, os.statvfs_result | None] = {}
        if self._statvfs_json is None:
            remote = [f"{self._root}{mountpoint}" for _, mountpoint, fstype, _ in self._mounts if may_hang(fstype)]
            if remote:
                results = self._statvfs.stat(remote)
        out = []
        for device, mountpoint, fstype, readonly in self._mounts:
            st: os.statvfs_result | None
            if self._statvfs_json is not None:
                values = self._statvfs_json.get(mountpoint)
                if values is None:
                    continue
                frsize, blocks, bfree, bavail, files, ffree = values
                st = os.statvfs_result((frsize, frsize, blocks, bfree, bavail, files, ffree, ffree, 0, 255))
            elif may_hang(fstype):
                st = results.get(f"{self._root}{mountpoint}")
            else:
                try:
                    st = os.statvfs(f"{self._root}{mountpoint}")
                except OSError:
                    st = None
            out.append(filesystem_stats(device, mountpoint, fstype, readonly, st))
        return out

    def _cpu_dirs(self) -> list[tuple[int, str]]:
        base = sysfs.cpu_dir(self._sys)
        cpus = [int(n[3:]) for n in sysfs.listdir(base) if n.startswith("cpu") and n[3:].isdigit()]
        return [(cpu, f"{base}/cpu{cpu}") for cpu in sorted(cpus)]

    def _cpuidle(self) -> list[CpuIdleState]:
        """cpuidle residency (drivers/cpuidle/sysfs.c): ``time`` in µs, ``usage`` = times the state was entered."""
        out = []
        for cpu, path in self._cpu_dirs():
            states = sorted(
                (n for n in sysfs.listdir(f"{path}/cpuidle") if n.startswith("state")), key=lambda n: int(n[5:])
            )
            for state in states:
                d = f"{path}/cpuidle/{state}"
                usec, usage = self._attr_int(f"{d}/time"), self._attr_int(f"{d}/usage")
                if usec is not None and usage is not None:
                    name = self._attr_str(f"{d}/name") or state
                    out.append(CpuIdleState(cpu, name, usec / 1e6, usage))
        return out

    def _cpufreq(self) -> dict[int, list[float]]:
        """[current, min, max] Hz per CPU from cpufreq (kHz in sysfs), where a cpufreq driver runs."""
        out: dict[int, list[float]] = {}
        if not sysfs.listdir(f"{sysfs.cpu_dir(self._sys)}/cpufreq"):  # policyN appear only with a cpufreq driver
            return out
        for cpu, path in self._cpu_dirs():
            values = [
                self._attr_int(f"{path}/cpufreq/{f}")
                for f in ("scaling_cur_freq", "cpuinfo_min_freq", "cpuinfo_max_freq")
            ]
            if values[0] is not None:
                out[cpu] = [float(v * 1000) if v is not None else float("nan") for v in values]
        return out

    def _interfaces(self, net_dev: dict[str, dict[str, int]]) -> list[InterfaceStats]:
        """/sys/class/net/<if> attributes (net/core/net-sysfs.c); carrier and duplex refuse a read while down."""
        base = f"{self._sys}/class/net"
        out = []
        for name in sorted(sysfs.listdir(base)):
            d = f"{base}/{name}"
            out.append(
                InterfaceStats(
                    name=name,
                    address=self._attr_str(f"{d}/address") or "",
                    operstate=self._attr_str(f"{d}/operstate") or "unknown",
                    duplex=self._attr_str(f"{d}/duplex") or "",
                    mtu=self._attr_int(f"{d}/mtu"),
                    carrier=self._attr_int(f"{d}/carrier"),
                    tx_queue_length=self._attr_int(f"{d}/tx_queue_len"),
                    carrier_changes=self._attr_int(f"{d}/carrier_changes"),
                    carrier_up_changes=self._attr_int(f"{d}/carrier_up_count"),
                    carrier_down_changes=self._attr_int(f"{d}/carrier_down_count"),
                    error_counters=self._error_counters(d, net_dev.get(name, {})),
                )
            )
        return out

    def _error_counters(self, d: str, totals: dict[str, int]) -> dict[str, int]:
        """The breakdown of an interface's errors; a part whose /proc/net/dev total is 0 is 0 without a read.

        /proc/net/dev sums them (net/core/net-procfs.c dev_seq_printf_stats): drop = rx_dropped + rx_missed_errors,
        frame = rx_length_errors + rx_over_errors + rx_crc_errors + rx_frame_errors, carrier = tx_carrier_errors +
        tx_aborted_errors + tx_window_errors + tx_heartbeat_errors. Counters never go below 0, so a zero sum
        means zero parts: most interfaces cost one read (rx_nohandler) instead of eight.
        """
        out = {}
        for counter in INTERFACE_ERROR_COUNTERS:
            total = _ERROR_TOTALS.get(counter)
            if total is not None and totals.get(total) == 0:
                out[counter] = 0
                continue
            value = self._attr_int(f"{d}/statistics/{counter}")
            if value is not None:
                out[counter] = value
        return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._statvfs.close()
            fds, self._fds = self._fds, {}
            attrs, self._attr_fds = self._attr_fds, {}
            for fd in [*fds.values(), *attrs.values()]:
                os.close(fd)

    def __del__(self) -> None:
        statvfs = getattr(self, "_statvfs", None)
        if statvfs is not None:
            statvfs.close()  # its idle thread ends
        for name in ("_fds", "_attr_fds"):
            fds = getattr(self, name, None)
            if fds:
                for fd in fds.values():
                    os.close(fd)
                setattr(self, name, {})
