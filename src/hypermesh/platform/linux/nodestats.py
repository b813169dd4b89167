"""The node's kernel statistics beyond the Sampler's counters, for the agent's /metrics: one reader.

What node_exporter's default collectors read (meminfo, vmstat, stat, netdev, diskstats, netstat, sockstat,
filefd, entropy, pressure, filesystem, cpufreq, netclass, softnet, conntrack, arp, uname, os). The reader only
opens, reads and hands bytes to the parsers (procfs.py, procnet.py, mounts.py), the same ones the Sampler uses.
``NodeStatsReader`` keeps the procfs files open and re-reads them with pread(2) like the counter reader, but it
is never on the sampling hot path: only ``Backend.node_stats()`` (the agent's /metrics) calls it.
"""

from __future__ import annotations

import os
import threading
import time

from hypermesh.model import CpuIdleState, FilesystemStats, InterfaceStats, PressureTotals
from hypermesh.model_node import (
    CpuFrequencyHz,
    CpuGuestTime,
    DiskStats,
    KernelStats,
    NetDevStats,
    NodePressure,
    NodeStats,
    SocketStats,
    Sockstat,
    SoftnetStats,
)
from hypermesh.platform.linux import block, files, identity, procfs, procnet, sysfs
from hypermesh.platform.linux.filesystems import StatvfsWorker, filesystem_stats, may_hang, real_filesystems
from hypermesh.platform.linux.mounts import MountEntry, parse_mountinfo
from hypermesh.platform.linux.net import link_up

__all__ = ["NodeStatsReader"]

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


def _net_dev_stats(columns: list[bytes]) -> NetDevStats:
    return NetDevStats(**procnet.net_dev_all(columns))


def _disk_stats(parts: list[bytes]) -> DiskStats:
    return DiskStats(**procfs.diskstats_all(parts))


def _sockstat(parsed: dict[str, dict[str, int]]) -> Sockstat:
    """parse_sockstat's {protocol: {field: value}} as records; ``sockets: used N`` is not a protocol."""
    protocols = []
    for protocol, fields in sorted(parsed.items()):
        if protocol == "sockets":
            continue
        get = fields.get
        memory = get("mem_bytes", get("memory"))  # TCP/UDP: pages made bytes by the parser; FRAG: bytes
        protocols.append(SocketStats(protocol, get("inuse"), get("orphan"), get("tw"), get("alloc"), memory))
    return Sockstat(parsed.get("sockets", {}).get("used"), tuple(protocols))


def _pressure(data: bytes) -> PressureTotals | None:
    values = procfs.pressure_seconds(procfs.parse_pressure(data))
    if not values:
        return None
    return PressureTotals(
        values["some_total_seconds"], values.get("full_total_seconds"), values["some_avg10"], values.get("full_avg10")
    )


def _hz(khz: int | None) -> float:
    return float("nan") if khz is None else float(khz * 1000)


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
        self._attrs = files.KeptAttributes()
        self._statvfs_json: dict[str, list[int]] | None = None
        self._mountinfo = ""
        self._mounts: list[MountEntry] = []
        self._statvfs = StatvfsWorker()
        if not live:
            import json

            text = files.read_str(f"{root}/statvfs.json")
            self._statvfs_json = json.loads(text) if text else None
        self._uname, self._os_release = self._identity()

    def _identity(self) -> tuple[dict[str, str], dict[str, str]]:
        kernel = f"{self._proc}/sys/kernel"
        uname = {
            "sysname": files.read_str(f"{kernel}/ostype") or "Linux",
            "release": files.read_str(f"{kernel}/osrelease") or "",
            "version": files.read_str(f"{kernel}/version") or "",
            "machine": identity.machine(self._root, self._live),
            "nodename": files.read_str(f"{kernel}/hostname") or "",
            "domainname": files.read_str(f"{kernel}/domainname") or "(none)",
        }
        return uname, identity.os_release(self._root)

    def _read(self, name: str) -> bytes:
        fd = self._fds.get(name)
        if fd is None:
            return b""
        try:
            data = files.pread_to_end(fd)
        except OSError as exc:
            self.unreadable[name] = f"{self._proc}/{name}: {exc.strerror or exc}"
            return b""
        self.unreadable.pop(name, None)
        return data

    @property
    def may_block(self) -> bool:
        """Whether a read may wait on a network or FUSE filesystem (statvfs in StatvfsWorker, up to its limit).

        As of the last read's mount table: True before the first read; a remote mount added since is found by the
        next read, which waits for it at most filesystems.STATVFS_TIMEOUT_S.
        """
        if self._statvfs_json is not None:
            return False
        if not self._mountinfo:
            return True
        return any(may_hang(entry.fstype) for entry in self._mounts)

    def read(self) -> NodeStats:
        with self._lock:
            if self._closed:
                raise OSError(f"node stats reader for {self._proc} is closed")
            self._attrs.begin()
            try:
                return self._read_all()
            finally:
                self._attrs.end()

    def _read_all(self) -> NodeStats:
        read = self._read
        kernel, guest = procfs.parse_stat_kernel(read("stat"))
        kernel.update(procfs.parse_file_nr(read("sys/fs/file-nr")))
        for key, name in (
            ("entropy_available_bits", "sys/kernel/random/entropy_avail"),
            ("entropy_pool_size_bits", "sys/kernel/random/poolsize"),
            ("conntrack_entries", "sys/net/netfilter/nf_conntrack_count"),
            ("conntrack_limit", "sys/net/netfilter/nf_conntrack_max"),
        ):
            value = procfs.parse_number(read(name))
            if value is not None:
                kernel[key] = value
        snmp = procnet.parse_snmp(read("net/snmp"))
        snmp.update(procnet.parse_snmp(read("net/netstat")))
        snmp.update(procnet.parse_snmp6(read("net/snmp6")))
        sockstat = procnet.parse_sockstat(read("net/sockstat"))
        sockstat.update(procnet.parse_sockstat(read("net/sockstat6")))
        # The init process's mounts are the host's, as node_exporter reads them (/proc/1/mounts): an agent in a
        # container with the host's /proc at --root sees the host's filesystems. Unreadable (hidepid): our own.
        mountinfo = (read("1/mountinfo") or read("self/mountinfo")).decode(errors="surrogateescape")
        diskstats = read("diskstats")
        lines = diskstats.count(b"\n")
        if self._disk_names is None or lines != self._disk_lines:
            # A device came or went: the same whole disks the Sampler reports (its rule, its mount namespace).
            own = read("self/mountinfo").decode(errors="surrogateescape")
            self._disk_names = block.sample_disk_names(self._sys, own)
            self._disk_lines = lines
        net_dev = procnet.parse_net_dev(read("net/dev"), _net_dev_stats)
        softnet = procnet.parse_softnet(read("net/softnet_stat"))
        return NodeStats(
            timestamp=time.time(),
            meminfo=procfs.parse_meminfo(read("meminfo")),
            vmstat=procfs.parse_vmstat(read("vmstat")),
            kernel=KernelStats(**kernel),
            cpu_guest=tuple([CpuGuestTime(cpu, user, nice) for cpu, (user, nice) in sorted(guest.items())]),
            softirqs=procfs.parse_softirqs(read("softirqs")),
            softnet=tuple([SoftnetStats(cpu, *values) for cpu, values in sorted(softnet.items())]),
            net_dev=net_dev,
            diskstats=procfs.parse_diskstats(diskstats, _disk_stats, self._disk_names),
            snmp=snmp,
            sockstat=_sockstat(sockstat),
            pressure=NodePressure(
                cpu=_pressure(read("pressure/cpu")),
                io=_pressure(read("pressure/io")),
                memory=_pressure(read("pressure/memory")),
            ),
            filesystems=tuple(self._filesystems(mountinfo)),
            cpuidle=tuple(self._cpuidle()),
            cpu_frequency_hz=tuple(self._cpufreq()),
            interfaces=tuple(self._interfaces(net_dev)),
            arp_entries=procnet.parse_arp(read("net/arp")),
            uname=self._uname,
            os_release=self._os_release,
        )

    def _filesystems(self, mountinfo: str) -> list[FilesystemStats]:
        if mountinfo != self._mountinfo:  # mounts change rarely; statvfs must be fresh every time
            self._mounts = real_filesystems(parse_mountinfo(mountinfo))
            self._mountinfo = mountinfo
        results: dict[str, os.statvfs_result | None] = {}
        if self._statvfs_json is None:
            remote = [f"{self._root}{m.mountpoint}" for m in self._mounts if may_hang(m.fstype)]
            if remote:
                results = self._statvfs.stat(remote)
        out = []
        for entry in self._mounts:
            mountpoint, fstype = entry.mountpoint, entry.fstype
            st: os.statvfs_result | None
            if self._statvfs_json is not None:
                values = self._statvfs_json.get(mountpoint)
                if values is None:
                    continue
                frsize, blocks, bfree, bavail, inodes, ifree = values
                st = os.statvfs_result((frsize, frsize, blocks, bfree, bavail, inodes, ifree, ifree, 0, 255))
            elif may_hang(fstype):
                st = results.get(f"{self._root}{mountpoint}")
            else:
                try:
                    st = os.statvfs(f"{self._root}{mountpoint}")
                except OSError:
                    st = None
            out.append(filesystem_stats(entry.source, mountpoint, fstype, entry.readonly, st))
        return out

    def _cpu_dirs(self) -> list[tuple[int, str]]:
        base = sysfs.cpu_dir(self._sys)
        cpus = [int(n[3:]) for n in files.listdir(base) if n.startswith("cpu") and n[3:].isdigit()]
        return [(cpu, f"{base}/cpu{cpu}") for cpu in sorted(cpus)]

    def _cpuidle(self) -> list[CpuIdleState]:
        """cpuidle residency (drivers/cpuidle/sysfs.c): ``time`` in µs, ``usage`` = times the state was entered."""
        out = []
        for cpu, path in self._cpu_dirs():
            states = sorted(
                (n for n in files.listdir(f"{path}/cpuidle") if n.startswith("state")), key=lambda n: int(n[5:])
            )
            for state in states:
                d = f"{path}/cpuidle/{state}"
                usec, usage = self._attrs.read_int(f"{d}/time"), self._attrs.read_int(f"{d}/usage")
                if usec is not None and usage is not None:
                    name = self._attrs.read_str(f"{d}/name") or state
                    out.append(CpuIdleState(cpu, name, usec / 1e6, usage))
        return out

    def _cpufreq(self) -> list[CpuFrequencyHz]:
        """Current, min and max Hz per CPU from cpufreq (kHz in sysfs), where a cpufreq driver runs."""
        out: list[CpuFrequencyHz] = []
        if not files.listdir(f"{sysfs.cpu_dir(self._sys)}/cpufreq"):  # policyN appear only with a cpufreq driver
            return out
        for cpu, path in self._cpu_dirs():
            current, low, high = (
                self._attrs.read_int(f"{path}/cpufreq/{f}")
                for f in ("scaling_cur_freq", "cpuinfo_min_freq", "cpuinfo_max_freq")
            )
            if current is not None:
                out.append(CpuFrequencyHz(cpu, float(current * 1000), _hz(low), _hz(high)))
        return out

    def _interfaces(self, net_dev: dict[str, NetDevStats]) -> list[InterfaceStats]:
        """/sys/class/net/<if> attributes (net/core/net-sysfs.c); carrier and duplex refuse a read while down."""
        base = f"{self._sys}/class/net"
        out = []
        for name in sorted(files.listdir(base)):
            d = f"{base}/{name}"
            operstate = self._attrs.read_str(f"{d}/operstate")
            carrier = self._attrs.read_int(f"{d}/carrier")
            out.append(
                InterfaceStats(
                    name=name,
                    address=self._attrs.read_str(f"{d}/address") or "",
                    operstate=operstate or "unknown",
                    up=link_up(self._attrs.read_str(f"{d}/flags"), operstate, carrier),
                    duplex=self._attrs.read_str(f"{d}/duplex") or "",
                    mtu=self._attrs.read_int(f"{d}/mtu"),
                    carrier=carrier,
                    tx_queue_length=self._attrs.read_int(f"{d}/tx_queue_len"),
                    carrier_changes=self._attrs.read_int(f"{d}/carrier_changes"),
                    carrier_up_changes=self._attrs.read_int(f"{d}/carrier_up_count"),
                    carrier_down_changes=self._attrs.read_int(f"{d}/carrier_down_count"),
                    error_counters=self._error_counters(d, net_dev.get(name)),
                )
            )
        return out

    def _error_counters(self, d: str, totals: NetDevStats | None) -> dict[str, int]:
        """The breakdown of an interface's errors; a part whose /proc/net/dev total is 0 is 0 without a read.

        /proc/net/dev sums them (net/core/net-procfs.c dev_seq_printf_stats): drop = rx_dropped + rx_missed_errors,
        frame = rx_length_errors + rx_over_errors + rx_crc_errors + rx_frame_errors, carrier = tx_carrier_errors +
        tx_aborted_errors + tx_window_errors + tx_heartbeat_errors. Counters never go below 0, so a zero sum
        means zero parts: most interfaces cost one read (rx_nohandler) instead of eight.
        """
        out = {}
        frame = drops = carrier = False  # no /proc/net/dev line: read every part
        if totals is not None:
            frame, drops, carrier = totals.receive_frame == 0, totals.receive_drops == 0, totals.transmit_carrier == 0
        # Whether the /proc/net/dev column each part is summed into is 0 (rx_nohandler is in none of them).
        summed_into_zero = {
            "rx_crc_errors": frame,
            "rx_length_errors": frame,
            "rx_over_errors": frame,
            "rx_missed_errors": drops,
            "tx_aborted_errors": carrier,
            "tx_heartbeat_errors": carrier,
            "tx_window_errors": carrier,
        }
        for counter in INTERFACE_ERROR_COUNTERS:
            if summed_into_zero.get(counter, False):
                out[counter] = 0
                continue
            value = self._attrs.read_int(f"{d}/statistics/{counter}")
            if value is not None:
                out[counter] = value
        return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._statvfs.close()
            fds, self._fds = self._fds, {}
            for fd in fds.values():
                os.close(fd)
            self._attrs.close()

    def __del__(self) -> None:
        statvfs = getattr(self, "_statvfs", None)
        if statvfs is not None:
            statvfs.close()  # its idle thread ends
        fds = getattr(self, "_fds", None)
        if fds:
            for fd in fds.values():
                os.close(fd)
            self._fds = {}
        attrs = getattr(self, "_attrs", None)
        if attrs is not None:
            attrs.close()
