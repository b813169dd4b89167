"""Typed, immutable records of one read of the node's kernel statistics (NodeStats), for the agent's /metrics.

A file whose columns the kernel defines once (/proc/net/softnet_stat, /proc/net/dev, /proc/diskstats, PSI,
cpufreq) becomes a record whose fields carry the kernel's names, so a collector reads ``row.time_squeeze``
rather than ``row[2]``. A file whose field set grows with each kernel release (/proc/meminfo, /proc/vmstat,
/proc/net/snmp, /proc/softirqs, /etc/os-release) stays a read-only mapping by the kernel's own names: a record
would drop what a newer kernel adds. Either way nothing inside can be changed: records hold tuples and
read-only mappings (model.record freezes them when they are built).

The records live outside model.py (which holds the profile's and the Sampler's) so that each stays under the
line limit; they are built with model.record like every other record.
"""

from __future__ import annotations

from hypermesh.model import CpuIdleState, FilesystemStats, InterfaceStats, PressureTotals, Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "CpuFrequencyHz",
    "CpuGuestTime",
    "DiskStats",
    "KernelStats",
    "NetDevStats",
    "NodePressure",
    "NodeStats",
    "SocketStats",
    "Sockstat",
    "SoftnetStats",
]


@record
class KernelStats(Record):
    """Kernel-wide figures; None where this kernel or platform does not tell.

    /proc/stat (fs/proc/stat.c show_stat): ``ctxt``, the first number of ``intr`` (all interrupts), ``processes``
    (forks), ``procs_running``, ``procs_blocked``, ``btime``. /proc/sys/fs/file-nr (fs/file_table.c): allocated
    and maximum handles. /proc/sys/kernel/random/entropy_avail and poolsize; netfilter's nf_conntrack_count and
    nf_conntrack_max (absent without the module).
    """

    context_switches: float | None = None
    interrupts: float | None = None
    forks: float | None = None
    procs_running: float | None = None
    procs_blocked: float | None = None
    boot_time_seconds: float | None = None
    file_handles_allocated: float | None = None
    file_handles_maximum: float | None = None
    entropy_available_bits: float | None = None
    entropy_pool_size_bits: float | None = None
    conntrack_entries: float | None = None
    conntrack_limit: float | None = None


@record
class CpuGuestTime(Record):
    """One CPU's time running guests' vCPUs: the ``guest`` and ``guest_nice`` columns of its /proc/stat line
    (fs/proc/stat.c; 2.6.24+ and 2.6.33+), already counted in its user and nice time."""

    cpu: int
    guest_seconds: float
    guest_nice_seconds: float


@record
class SoftnetStats(Record):
    """One CPU's row of /proc/net/softnet_stat, named as struct softnet_data's counters that
    net/core/net-procfs.c softnet_seq_show prints first: packets ``processed``, ``dropped`` because the backlog
    was full (netdev_max_backlog), and ``time_squeeze``: net_rx_action ran out of budget or time with work left."""

    cpu: int
    processed: int
    dropped: int
    time_squeeze: int


@record
class NetDevStats(Record):
    """One interface's line of /proc/net/dev, named after the file's header (net/core/net-procfs.c
    dev_seq_printf_stats), not after struct rtnl_link_stats64: several columns are sums of its counters
    (``drop`` = rx_dropped + rx_missed_errors, ``frame`` = length + over + crc + frame errors, ``carrier`` =
    carrier + aborted + window + heartbeat errors). psutil gives only the first four of each direction: the
    others are None there."""

    receive_bytes: int
    receive_packets: int
    receive_errors: int
    receive_drops: int
    receive_fifo: int | None
    receive_frame: int | None
    receive_compressed: int | None
    receive_multicast: int | None
    transmit_bytes: int
    transmit_packets: int
    transmit_errors: int
    transmit_drops: int
    transmit_fifo: int | None
    transmit_collisions: int | None
    transmit_carrier: int | None
    transmit_compressed: int | None


@record
class DiskStats(Record):
    """One device's line of /proc/diskstats (block/genhd.c diskstats_show), in the order and by the names of
    Documentation/admin-guide/iostats.rst, sectors in bytes (512 whatever the device) and ms in seconds.

    The discard columns exist since 4.18, the flush columns since 5.5: None on older kernels. psutil gives only
    the read and write totals: the rest is None there.
    """

    reads_completed: float
    reads_merged: float | None
    read_bytes: float
    read_time_seconds: float
    writes_completed: float
    writes_merged: float | None
    written_bytes: float
    write_time_seconds: float
    io_now: float | None
    io_time_seconds: float | None
    io_time_weighted_seconds: float | None
    discards_completed: float | None = None
    discards_merged: float | None = None
    discarded_bytes: float | None = None
    discard_time_seconds: float | None = None
    flush_requests: float | None = None
    flush_time_seconds: float | None = None


@record
class SocketStats(Record):
    """One protocol's line of /proc/net/sockstat or sockstat6 (net/ipv4/proc.c sockstat_seq_show,
    net/ipv6/proc.c): ``inuse`` for every protocol; ``orphan``, ``tw``, ``alloc`` for TCP; ``memory_bytes`` is
    TCP's and UDP's ``mem`` (pages) or FRAG's ``memory`` (already bytes). None where the line has no such field."""

    protocol: str
    inuse: int | None = None
    orphan: int | None = None
    tw: int | None = None
    alloc: int | None = None
    memory_bytes: int | None = None


@record
class Sockstat(Record):
    """/proc/net/sockstat and sockstat6: ``sockets: used N`` and one SocketStats a protocol, by protocol name."""

    sockets_used: int | None
    protocols: tuple[SocketStats, ...]


@record
class NodePressure(Record):
    """Pressure stall information (/proc/pressure/{cpu,io,memory}, kernel/sched/psi.c); None without PSI."""

    cpu: PressureTotals | None
    io: PressureTotals | None
    memory: PressureTotals | None


@record
class CpuFrequencyHz(Record):
    """One CPU's cpufreq attributes in Hz (sysfs gives kHz; drivers/cpufreq/cpufreq.c): NaN where unreadable."""

    cpu: int
    scaling_cur_freq: float
    cpuinfo_min_freq: float
    cpuinfo_max_freq: float


@record
class NodeStats(Record):
    """One read of the node's kernel statistics beyond the Sampler's counters.

    - ``meminfo``: every /proc/meminfo field in bytes (HugePages_* are counts); ``vmstat``: every /proc/vmstat
      field; ``softirqs``: {type: (count per CPU)}; ``snmp``: {protocol: {field: value}} from /proc/net/snmp,
      snmp6 and netstat; ``arp_entries``: {interface: count}; ``uname`` and ``os_release``: the kernel's and
      /etc/os-release's identification strings. Read-only mappings by the kernel's names (see the module).
    - ``net_dev``: {interface: NetDevStats}; ``diskstats``: {device: DiskStats} for the devices the Sampler
      reports. ``cpu_guest``, ``softnet``, ``cpu_frequency_hz``: one record a CPU, by CPU number.
    """

    timestamp: float
    meminfo: Mapping[str, int]
    vmstat: Mapping[str, int]
    kernel: KernelStats
    cpu_guest: tuple[CpuGuestTime, ...]
    softirqs: Mapping[str, Sequence[int]]
    softnet: tuple[SoftnetStats, ...]
    net_dev: Mapping[str, NetDevStats]
    diskstats: Mapping[str, DiskStats]
    snmp: Mapping[str, Mapping[str, int]]
    sockstat: Sockstat
    pressure: NodePressure
    filesystems: tuple[FilesystemStats, ...]
    cpuidle: tuple[CpuIdleState, ...]
    cpu_frequency_hz: tuple[CpuFrequencyHz, ...]
    interfaces: tuple[InterfaceStats, ...]
    arp_entries: Mapping[str, int]
    uname: Mapping[str, str]
    os_release: Mapping[str, str]
