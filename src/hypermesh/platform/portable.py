"""The portable backend: psutil underneath, for every OS without a native backend.

It serves Windows, macOS and the BSDs, and Linux when ``HYPERMESH_BACKEND=portable`` forces it (that is how
the test suite runs it here). psutil is imported only by this module, so ``import hypermesh`` on Linux never
pays for it.

What each OS gets, as far as psutil tells (fields psutil cannot answer are None or empty, never guessed):

- **all**: os (``platform``), logical/physical core counts, CPU frequency where psutil has one, memory and
  swap totals, mounted filesystems with size and free space, interfaces with addresses, MTU, speed and state,
  per-CPU times, memory, per-disk and per-NIC counters, load average.
- **Linux** (forced): everything above; no caches, NUMA nodes, core types, cgroup limits, PSI or
  cpuidle residency: the native Linux backend reads those itself.
- **macOS**: disks ``diskN`` with partitions ``diskNsM`` mapped to them; no busy time in disk counters.
- **FreeBSD/OpenBSD/NetBSD**: ``ada0``/``da0``/``nvd0``/``wd0`` style disks; partitions ``ada0p1``/``da0s1a``.
- **Windows**: disks are ``PhysicalDriveN`` and mounts are drive letters, which psutil cannot relate, so
  Windows disks carry no mounts; psutil emulates the load average (zeros for the first five seconds).
  PDH counter rollover and other Windows specifics psutil hides are out of scope here.

Disk ``size_bytes``, ``model`` and ``rotational`` are not in psutil: they stay None except where a
device name tells (NVMe is never rotational). ``kind`` is therefore a best effort from names; see
``disk_kind``.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
from collections.abc import Collection, Iterable

import psutil

from hypermesh import gpu as gpu_layer
from hypermesh.model import (
    CoreType,
    CpuFrequency,
    CpuInfo,
    FilesystemStats,
    Limits,
    MemoryInfo,
    Mount,
    NetworkInterface,
    OsInfo,
    StorageDevice,
    SystemProfile,
)
from hypermesh.model_node import DiskStats, KernelStats, NetDevStats, NodePressure, NodeStats, Sockstat
from hypermesh.platform.base import CPU_MODES, RawCounters, assemble_profile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["PortableBackend", "disk_kind", "nic_kind", "parent_disk", "prefix_length"]

# psutil's field for each of CPU_MODES. Windows names its kernel-interrupt times "interrupt" and "dpc"
# (deferred procedure calls, the counterpart of softirq); other OSes lack some modes, which read as 0.0.
_CPU_FIELDS = tuple(
    {"irq": "interrupt", "softirq": "dpc"}.get(mode, mode) if sys.platform == "win32" else mode for mode in CPU_MODES
)

# loop and RAM disks are listed only when they back a mount (a loop device behind a snap): an idle loop0..7
# is noise; Linux zram disks when mounted or configured (non-zero size). The same rule as the Linux backend's,
# so both list the same disks on one machine.
_ON_DEMAND_DISK_PREFIXES = ("loop", "ram", "zram")
# Disks that exist only in software or are paravirtual (virtio vdX, Xen xvdX, FreeBSD vtbdN): "virtual" kind.
_VIRTUAL_DISK_PREFIXES = ("vd", "xvd", "vtbd", "dm-", "md", "zram", "nbd", "rbd", "loop", "ram")


def parent_disk(name: str) -> str:
    """The whole disk a device name belongs to: ``sda1`` -> ``sda``, ``nvme0n1p2`` -> ``nvme0n1``.

    Naming schemes, by OS: Linux ``sdX``/``vdX``/``xvdX``/``hdX`` + digits, ``nvmeXnY`` + ``pZ``,
    ``mmcblkX`` + ``pZ``; macOS ``diskN`` + ``sM``; FreeBSD ``ada0p1``, ``da0s1a``, ``nvd0p1``; NetBSD/OpenBSD
    ``wd0a``/``sd0a`` (a letter, not a digit, marks the partition). Names it does not recognise are
    their own disk.
    """
    base = name.rsplit("/", 1)[-1]
    if base.startswith(("nvme", "mmcblk", "nvd", "nda")):
        # nvme0n1p2 / mmcblk0p1 / nvd0p1: the partition suffix is "p" + digits right after a unit number
        # (for Linux NVMe after the namespace "nN", so a controller name like "nvme0" is never split).
        head, sep, tail = base.rpartition("p")
        namespaced = "n" in head[4:] or not base.startswith("nvme")
        if sep and tail.isdigit() and head[-1:].isdigit() and namespaced:
            return head
        return base
    if base.startswith("disk") and "s" in base[4:]:  # macOS disk0s1
        head, _, tail = base[4:].partition("s")
        if head.isdigit() and tail[:1].isdigit():  # disk3s1s1: an APFS volume snapshot on disk3
            return "disk" + head
        return base
    for prefix in ("ada", "da", "vtbd"):  # FreeBSD: ada0p1, da0s1, da0s1a
        if base.startswith(prefix) and base[len(prefix) : len(prefix) + 1].isdigit():
            rest = base[len(prefix) :]
            unit = rest[: len(rest) - len(rest.lstrip("0123456789"))]
            return prefix + unit
    for prefix in ("xvd", "sd", "vd", "hd"):  # Linux sda1, vdb2, xvda1
        if base.startswith(prefix) and base[len(prefix) : len(prefix) + 1].isalpha():
            return base.rstrip("0123456789")
    if base.startswith(("wd", "sd")) and base[2:3].isdigit():  # NetBSD/OpenBSD wd0a, sd1e
        return base.rstrip("abcdefghijklmnop")
    return base


def disk_kind(name: str) -> tuple[str, bool | None]:
    """(kind, rotational) from a disk's name alone: psutil has no rotational flag.

    NVMe is never rotational; software and paravirtual disks are "virtual" with rotation unknown;
    anything else is reported "ssd" with rotational None, because a disk whose kind nobody can read
    is most often an SSD today, and None tells a consumer that the kind is a guess.
    """
    if name.startswith(("nvme", "nvd", "nda")):
        return "nvme", False
    if name.startswith(_VIRTUAL_DISK_PREFIXES):
        return "virtual", None
    return "ssd", None


def _mounts_by_disk(sizes: bool = True) -> dict[str, list[Mount]]:
    """{whole disk: its mounts} for mounts psutil can tie to a /dev node; sizes from disk_usage when asked."""
    mounts: dict[str, list[Mount]] = {}
    for partition in psutil.disk_partitions(all=False):
        if not partition.device.startswith("/dev/"):
            continue  # Windows drive letters, network shares: psutil cannot tie them to a disk
        total: int | None = None
        free: int | None = None
        if sizes:
            try:
                usage = psutil.disk_usage(partition.mountpoint)
                total, free = int(usage.total), int(usage.free)
            except OSError:  # unreadable or vanished mount point
                pass
        mount = Mount(mountpoint=partition.mountpoint, fstype=partition.fstype, total_bytes=total, free_bytes=free)
        # /dev/mapper/vg-root and /dev/disk/by-* are symlinks on Linux; elsewhere realpath changes nothing.
        mounts.setdefault(parent_disk(os.path.realpath(partition.device)), []).append(mount)
    return mounts


def _listed(name: str, mounted: Collection[str]) -> bool:
    """Whether a whole disk is listed: always, except idle loop/RAM disks and unconfigured zram."""
    if not name.startswith(_ON_DEMAND_DISK_PREFIXES) or name in mounted:
        return True
    return name.startswith("zram") and _zram_configured(name)


def _zram_configured(name: str) -> bool:
    # zram is Linux's alone, and psutil does not say its size: sysfs does (sectors; 0 until disksize is set).
    try:
        with open(f"/sys/block/{name}/size", "rb") as f:
            return int(f.read() or 0) > 0
    except (OSError, ValueError):
        return False


# Interface kind by name, because psutil gives no bus or device link:
# - loopback: Linux "lo", BSD/macOS "lo0", Windows "Loopback Pseudo-Interface 1", or psutil's loopback flag;
# - virtual: names of software devices on each OS — Linux veth/bridge/tunnel/container devices
#   (veth, docker, br-, virbr, vnet, tun, tap, wg, ifb, dummy, bond, team, vxlan, geneve, macvlan, ip6tnl,
#   sit, gre, cni, flannel, cali, kube, lxc, podman, zt), VLAN sub-interfaces ("eth0.100"), macOS
#   utun/awdl/llw/bridge/gif/stf/anpi/ap, Windows "vEthernet (...)" Hyper-V switches, VMware/VirtualBox
#   adapters;
# - physical: everything else.
_VIRTUAL_NIC_PREFIXES = (
    "veth", "docker", "br-", "br", "virbr", "vnet", "tun", "tap", "wg", "ifb", "dummy", "bond", "team",
    "vxlan", "geneve", "macvlan", "macvtap", "ip6tnl", "ip6gre", "sit", "gre", "erspan", "cni", "flannel",
    "cali", "kube", "lxc", "lxd", "podman", "zt", "utun", "awdl", "llw", "bridge", "gif", "stf", "anpi",
    "ap", "vethernet", "vmnet", "vboxnet", "virtualbox", "vmware", "hyper-v",
)  # fmt: skip


def nic_kind(name: str, flags: str = "") -> str:
    """ "loopback", "virtual" or "physical" for an interface name (and psutil's flags where it has them)."""
    lowered = name.lower()
    if lowered == "lo" or lowered.startswith(("lo0", "loopback")) or "loopback" in flags.split(","):
        return "loopback"
    if "." in name or lowered.startswith(_VIRTUAL_NIC_PREFIXES):
        return "virtual"
    return "physical"


def prefix_length(netmask: str | None, family: int) -> int | None:
    """Bits set in a netmask: "255.255.255.0" -> 24, "ffff:ffff:ffff:ffff::" -> 64."""
    if not netmask:
        return None
    try:
        packed = socket.inet_pton(family, netmask)
    except (OSError, ValueError):
        return None
    return int.from_bytes(packed, "big").bit_count()


def _addresses(entries: Iterable[Any]) -> tuple[str | None, list[str]]:
    # Any: psutil's address tuple type moved between modules across versions (_common, _ntuples).
    mac: str | None = None
    addresses: list[str] = []
    for entry in entries:
        if entry.family == psutil.AF_LINK:
            mac = entry.address or None
        elif entry.family in (socket.AF_INET, socket.AF_INET6):
            address = entry.address.split("%", 1)[0]  # fe80::1%eth0: the scope is the interface itself
            bits = prefix_length(entry.netmask, entry.family)
            addresses.append(address if bits is None else f"{address}/{bits}")
    return mac, addresses


def _distribution() -> str | None:
    if sys.platform == "darwin":
        version = platform.mac_ver()[0]
        return f"macOS {version}" if version else "macOS"
    if sys.platform == "win32":
        release, version, _, _ = platform.win32_ver()
        edition = platform.win32_edition() or ""
        return " ".join(p for p in ("Windows", release, edition, version) if p) or None
    if sys.platform.startswith("linux"):
        try:
            return platform.freedesktop_os_release().get("PRETTY_NAME")
        except OSError:
            return None
    return None  # the BSDs: platform.system() + release already say it all


def _mhz(value: float | None) -> float | None:
    # psutil reports 0.0 where the OS does not know (e.g. min/max in most VMs).
    return float(value) if value else None


class PortableCounterReader:
    """Reads every counter through psutil; nothing to keep open, so ``close()`` only marks it closed."""

    __slots__ = ("_closed", "_mounted", "unreadable")

    def __init__(self) -> None:
        self._closed = False
        self.unreadable: dict[str, str] = {}  # psutil raises rather than leave a source out
        # Which loop/RAM disks back a mount, decided once per reader as the Linux backend does.
        self._mounted = frozenset(_mounts_by_disk(sizes=False))

    def read(self) -> RawCounters:
        monotonic = time.monotonic()
        wall = time.time()
        cpu = {
            index: tuple(float(getattr(times, field, 0.0)) for field in _CPU_FIELDS)
            for index, times in enumerate(psutil.cpu_times(percpu=True))
        }
        virtual = psutil.virtual_memory()
        total = int(virtual.total)
        available = int(virtual.available)
        memory = (
            total,
            available,
            int(getattr(virtual, "cached", 0)),
            total - available,
            int(psutil.swap_memory().used),
        )
        # nowrap=False: raw counters; hypermesh.sampling.counters handles wraps for every backend alike.
        disks: dict[str, tuple[int, ...]] = {}
        for name, io in (psutil.disk_io_counters(perdisk=True, nowrap=False) or {}).items():
            if parent_disk(name) != name or not _listed(name, self._mounted):
                continue  # partitions count again what their disk counts; idle loop/RAM disks are noise
            disks[name] = (
                int(io.read_count),
                int(io.read_bytes),
                int(getattr(io, "read_time", 0)),
                int(io.write_count),
                int(io.write_bytes),
                int(getattr(io, "write_time", 0)),
                int(getattr(io, "busy_time", 0)),
            )
        network: dict[str, tuple[int, ...]] = {
            name: (
                int(io.bytes_recv),
                int(io.packets_recv),
                int(io.errin),
                int(io.dropin),
                int(io.bytes_sent),
                int(io.packets_sent),
                int(io.errout),
                int(io.dropout),
            )
            for name, io in (psutil.net_io_counters(pernic=True, nowrap=False) or {}).items()
        }
        avg1, avg5, avg15 = psutil.getloadavg()
        return RawCounters(
            monotonic=monotonic,
            wall=wall,
            cpu=cpu,
            fine_kind=None,
            fine=None,
            memory=memory,
            pressure=None,
            disks=disks,
            network=network,
            # Two decimals, as /proc/loadavg prints them: the same figures whichever backend reads them.
            load=(round(avg1, 2), round(avg5, 2), round(avg15, 2)),
        )

    def close(self) -> None:
        self._closed = True


class PortableBackend:
    """The Backend seam over psutil."""

    name = "portable"
    cpu_times_source = "psutil"  # psutil.cpu_times: /proc/stat, host_processor_info, kern.cp_times, PDH...

    def counter_reader(self) -> PortableCounterReader:
        return PortableCounterReader()

    def node_stats_unreadable(self) -> dict[str, str]:
        return {}

    def node_stats_may_block(self) -> bool:
        return True  # psutil's disk_partitions + statvfs ask network mounts too, with no time limit

    def node_stats(self) -> NodeStats:
        """What psutil can say beyond the counters: filesystems, swap, per-NIC and per-disk totals, boot time."""
        from hypermesh.platform.linux.filesystems import filesystem_stats

        filesystems = []
        for part in psutil.disk_partitions(all=False):
            readonly = "ro" in part.opts.split(",")
            try:
                if hasattr(os, "statvfs"):
                    st = os.statvfs(part.mountpoint)
                    filesystems.append(filesystem_stats(part.device, part.mountpoint, part.fstype, readonly, st))
                else:  # Windows: no statvfs, no inode counts; free space is what the user may use
                    usage = psutil.disk_usage(part.mountpoint)
                    filesystems.append(
                        FilesystemStats(
                            part.device,
                            part.mountpoint,
                            part.fstype,
                            usage.total,
                            usage.free,
                            usage.free,
                            0,
                            0,
                            readonly,
                            False,
                        )
                    )
            except OSError:  # a drive without media, a vanished mount
                continue
        swap = psutil.swap_memory()
        nics = psutil.net_io_counters(pernic=True)
        disks = psutil.disk_io_counters(perdisk=True) or {}
        return NodeStats(
            timestamp=time.time(),
            meminfo={"SwapTotal": swap.total, "SwapFree": swap.free},
            vmstat={"pswpin": swap.sin // 4096, "pswpout": swap.sout // 4096} if swap.sin or swap.sout else {},
            kernel=KernelStats(boot_time_seconds=float(psutil.boot_time())),
            cpu_guest=(),
            softirqs={},
            softnet=(),
            net_dev={
                name: NetDevStats(
                    receive_bytes=n.bytes_recv,
                    receive_packets=n.packets_recv,
                    receive_errors=n.errin,
                    receive_drops=n.dropin,
                    receive_fifo=None,
                    receive_frame=None,
                    receive_compressed=None,
                    receive_multicast=None,
                    transmit_bytes=n.bytes_sent,
                    transmit_packets=n.packets_sent,
                    transmit_errors=n.errout,
                    transmit_drops=n.dropout,
                    transmit_fifo=None,
                    transmit_collisions=None,
                    transmit_carrier=None,
                    transmit_compressed=None,
                )
                for name, n in nics.items()
            },
            diskstats={
                name: DiskStats(
                    reads_completed=d.read_count,
                    reads_merged=None,
                    read_bytes=d.read_bytes,
                    read_time_seconds=d.read_time / 1000,
                    writes_completed=d.write_count,
                    writes_merged=None,
                    written_bytes=d.write_bytes,
                    write_time_seconds=d.write_time / 1000,
                    io_now=None,
                    io_time_seconds=None,
                    io_time_weighted_seconds=None,
                )
                for name, d in disks.items()
            },
            snmp={},
            sockstat=Sockstat(None, ()),
            pressure=NodePressure(None, None, None),
            filesystems=tuple(filesystems),
            cpuidle=(),
            cpu_frequency_hz=(),
            interfaces=(),
            arp_entries={},
            uname=dict(zip(("sysname", "nodename", "release", "version", "machine"), platform.uname(), strict=False)),
            os_release={},
        )

    def profile(self) -> SystemProfile:
        return assemble_profile(
            os=self._os,
            cpu=self._cpu,
            memory=self._memory,
            storage=self._storage,
            network=self._network,
            limits=self._limits,
            gpus=gpu_layer.identities,  # NVML where the driver has it, DRM sysfs on Linux; headless: []
        )

    @staticmethod
    def _memory() -> MemoryInfo:
        return MemoryInfo(
            total_bytes=int(psutil.virtual_memory().total),
            swap_total_bytes=int(psutil.swap_memory().total),
            hugepage_size_bytes=None,
        )

    @staticmethod
    def _limits() -> Limits:
        # psutil sees no cgroup or job-object limits: unknown, as on a host without them.
        return Limits(cgroup_version=None, cpu_quota_cores=None, memory_limit_bytes=None, pids_max=None)

    @staticmethod
    def _os() -> OsInfo:
        try:
            boot_time: float | None = float(psutil.boot_time())
        except (OSError, RuntimeError):
            boot_time = None
        return OsInfo(
            system=platform.system(),
            release=platform.release(),
            kernel=platform.version(),
            distribution=_distribution(),
            architecture=platform.machine(),
            hostname=platform.node() or socket.gethostname(),
            boot_time=boot_time,
        )

    @staticmethod
    def _cpu() -> CpuInfo:
        logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
        physical = psutil.cpu_count(logical=False)
        threads = logical // physical if physical and logical % physical == 0 else None
        try:
            freq = psutil.cpu_freq()
        except (OSError, NotImplementedError):
            freq = None
        frequency = CpuFrequency(
            min=_mhz(freq.min) if freq else None,
            max=_mhz(freq.max) if freq else None,
            current=_mhz(freq.current) if freq else None,
        )
        # platform.processor() is the brand string on Windows and "arm"/"i386" on macOS, "" on most Linux.
        model = platform.processor() or None
        return CpuInfo(
            vendor=None,
            model=model,
            architecture=platform.machine(),
            logical_cores=logical,
            physical_cores=physical,
            sockets=None,
            threads_per_core=threads,
            frequency_mhz=frequency,
            caches=(),
            numa_nodes=(),
            core_types=(CoreType(kind="standard", cpus=tuple(range(logical))),),
            flags=(),
        )

    @staticmethod
    def _storage() -> list[StorageDevice]:
        mounts_by_disk = _mounts_by_disk()
        counters = psutil.disk_io_counters(perdisk=True, nowrap=False) or {}
        devices = []
        for name in sorted({parent_disk(n) for n in counters} | set(mounts_by_disk)):
            if not _listed(name, mounts_by_disk):
                continue
            kind, rotational = disk_kind(name)
            devices.append(
                StorageDevice(
                    name=name,
                    model=None,
                    size_bytes=None,
                    rotational=rotational,
                    removable=None,
                    kind=kind,
                    mounts=tuple(sorted(mounts_by_disk.get(name, []), key=lambda m: m.mountpoint)),
                )
            )
        return devices

    @staticmethod
    def _network() -> list[NetworkInterface]:
        stats = psutil.net_if_stats()
        addrs = psutil.net_if_addrs()
        interfaces = []
        for name in sorted(set(stats) | set(addrs)):
            mac, addresses = _addresses(addrs.get(name, []))
            stat = stats.get(name)
            flags = getattr(stat, "flags", "") if stat else ""
            interfaces.append(
                NetworkInterface(
                    name=name,
                    mac=mac,
                    mtu=int(stat.mtu) if stat and stat.mtu else None,
                    speed_mbps=int(stat.speed) if stat and stat.speed else None,  # 0: the link does not say
                    up=bool(stat.isup) if stat else False,
                    kind=nic_kind(name, flags),
                    addresses=tuple(addresses),
                )
            )
        return interfaces
