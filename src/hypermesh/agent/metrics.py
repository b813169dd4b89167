"""What ``/metrics`` says: one collector per area, one fast writer for both formats, prometheus_client as reference.

Each area (cpu, memory, pressure, disk, network, ebpf, assets, agent) is a small class whose
``collect(scrape)`` returns ``Family`` objects built from the Sampler's raw counters: monotonic
``_total`` counters stay counters (Prometheus computes rates), everything is in base units
(seconds, bytes, ratios 0..1). Like node_exporter, every scrape also reports per-collector
``hypermesh_scrape_collector_success`` and ``hypermesh_scrape_collector_duration_seconds``; a failing
collector drops its own families, never the scrape.

One writer renders the families in both formats, Prometheus text 0.0.4 and OpenMetrics 1.0 (which
Prometheus asks for first in its Accept header). prometheus_client's generic writers build a ``Sample``
namedtuple, sort and escape labels for every line on every scrape: measured here at 588 samples, its
OpenMetrics scrape cost 4.7 ms of CPU against node_exporter's 3.4 ms. ``TextWriter`` formats the label
part of each line (``name{cpu="0",mode="user"} ``) once and caches it, so a scrape costs one float
formatting per sample (0.9 ms at 588 samples; bench/bench_agent.py).

prometheus_client stays the reference: ``ClientRegistry`` holds one prometheus_client custom collector
per area in a private ``CollectorRegistry`` (usable wherever prometheus_client is), and the tests hold
the fast output byte-identical to prometheus_client's own text and OpenMetrics writers.
"""

from __future__ import annotations

import time

from hypermesh.model import Counters, NodeStats, SystemProfile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any, Protocol

    class AreaCollector(Protocol):
        area: str
        # Optional: the procfs files (relative to proc) the collector's data comes from; if a reader reports one of
        # them unreadable, the collector failed (success 0), however empty and valid its output looks.

        def collect(self, scrape: Scrape) -> list[Family]: ...


# Labels are kept as a tuple of (name, value) pairs sorted by name: the order both text formats use.
Labels = tuple[tuple[str, str], ...]


class Family:
    """One metric family: name (with ``_total`` for counters), type, help, unit and its samples."""

    __slots__ = ("area", "help", "kind", "name", "samples", "unit")

    def __init__(self, name: str, kind: str, help: str, unit: str = "") -> None:
        if kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        self.name = name
        self.kind = kind
        self.help = help
        self.unit = unit
        self.samples: list[tuple[Labels, float]] = []
        self.area = ""  # the collector that produced it, set by collect()

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((tuple(sorted(labels.items())), value))

    def add_sorted(self, labels: Labels, value: float) -> None:
        """Add with labels already sorted by name (the hot path: no dict, no sort)."""
        self.samples.append((labels, value))


class Scrape:
    """Everything one scrape reads, read at most once: the counters, the profile, the eBPF status."""

    __slots__ = (
        "_counters",
        "_node_stats",
        "_read_counters",
        "_read_node_stats",
        "_read_programs",
        "_read_unreadable",
        "ebpf_status",
        "profile",
        "stats",
    )

    def __init__(
        self,
        read_counters: Callable[[], Counters],
        profile: SystemProfile | None,
        ebpf_status: dict[str, Any],
        stats: dict[str, float],
        read_programs: Callable[[], dict[str, dict[str, Any]]] | None = None,
        read_node_stats: Callable[[], NodeStats] | None = None,
        read_unreadable: Callable[[], dict[str, str]] | None = None,
    ) -> None:
        self._read_counters = read_counters
        self._read_unreadable = read_unreadable
        self._read_node_stats = read_node_stats
        self._node_stats: NodeStats | None = None
        self._counters: Counters | None = None
        self._read_programs = read_programs
        self.profile = profile
        self.ebpf_status = ebpf_status
        self.stats = stats

    def unreadable(self) -> dict[str, str]:
        """Sources the readers could not read, ``{"diskstats": "/proc/diskstats: Permission denied"}``."""
        return self._read_unreadable() if self._read_unreadable is not None else {}

    def programs(self) -> dict[str, dict[str, Any]]:
        """Readings of the eBPF programs the agent keeps loaded: {name: {loaded, error, reading}}."""
        return self._read_programs() if self._read_programs is not None else {}

    @property
    def node_stats(self) -> NodeStats | None:
        """The node's other kernel statistics, read once on first use; None when the scrape has no reader."""
        if self._node_stats is None and self._read_node_stats is not None:
            self._node_stats = self._read_node_stats()
        return self._node_stats

    @property
    def counters(self) -> Counters:
        if self._counters is None:
            self._counters = self._read_counters()
        return self._counters


# ------------------------------------------------------------------------------------- collectors

_CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_CPU_FIELDS = tuple(f"{m}_seconds" for m in _CPU_MODES)


class CpuCollector:
    area = "cpu"

    def __init__(self) -> None:
        # (cpu, mode) -> sorted labels; CPUs come and go rarely (hot-plug), so the cache stays tiny.
        self._labels: dict[tuple[int, str], Labels] = {}

    def collect(self, scrape: Scrape) -> list[Family]:
        counters = scrape.counters
        seconds = Family(
            "hypermesh_cpu_seconds_total",
            "counter",
            "Seconds each CPU spent in each mode since boot (/proc/stat).",
            "seconds",
        )
        labels = self._labels
        for times in counters.cpu:
            cpu = times.cpu
            for mode, field in zip(_CPU_MODES, _CPU_FIELDS, strict=True):
                key = (cpu, mode)
                label = labels.get(key)
                if label is None:
                    label = labels[key] = (("cpu", str(cpu)), ("mode", mode))
                seconds.samples.append((label, getattr(times, field)))
        load = counters.load
        families = [seconds]
        for window, value in (("1", load.avg1), ("5", load.avg5), ("15", load.avg15)):
            family = Family(
                f"hypermesh_load{window}",
                "gauge",
                f"{window}-minute load average: runnable plus uninterruptible tasks.",
            )
            family.samples.append(((), value))
            families.append(family)
        return families


class MemoryCollector:
    area = "memory"

    def collect(self, scrape: Scrape) -> list[Family]:
        memory = scrape.counters.memory
        rows = (
            ("hypermesh_memory_total_bytes", "Usable physical memory (MemTotal).", memory.total_bytes),
            (
                "hypermesh_memory_available_bytes",
                "Memory available for new work without swapping (MemAvailable).",
                memory.available_bytes,
            ),
            ("hypermesh_memory_used_bytes", "Memory in use: total minus available.", memory.used_bytes),
            ("hypermesh_memory_cached_bytes", "Page cache and reclaimable memory.", memory.cached_bytes),
            ("hypermesh_memory_swap_used_bytes", "Swap space in use.", memory.swap_used_bytes),
        )
        families = []
        for name, text, value in rows:
            family = Family(name, "gauge", text, "bytes")
            family.samples.append(((), value))
            families.append(family)
        return families


class PressureCollector:
    """Memory pressure stall information (PSI, /proc/pressure/memory); nothing when the kernel lacks PSI."""

    area = "pressure"
    sources = ("pressure/memory",)

    def collect(self, scrape: Scrape) -> list[Family]:
        pressure = scrape.counters.pressure
        if pressure is None:
            return []
        waiting = Family(
            "hypermesh_pressure_memory_waiting_seconds_total",
            "counter",
            "Seconds in which at least one task stalled waiting for memory (PSI 'some').",
            "seconds",
        )
        waiting.samples.append(((), pressure.some_total_seconds))
        families = [waiting]
        avg = Family(
            "hypermesh_pressure_memory_avg10_ratio",
            "gauge",
            "Share of the last 10 s in which tasks stalled on memory, 0..1 (PSI avg10), by kind some/full.",
            "ratio",
        )
        avg.samples.append(((("kind", "some"),), pressure.some_avg10 / 100.0))
        if pressure.full_total_seconds is not None:
            stalled = Family(
                "hypermesh_pressure_memory_stalled_seconds_total",
                "counter",
                "Seconds in which all non-idle tasks stalled waiting for memory (PSI 'full').",
                "seconds",
            )
            stalled.samples.append(((), pressure.full_total_seconds))
            families.append(stalled)
        if pressure.full_avg10 is not None:
            avg.samples.append(((("kind", "full"),), pressure.full_avg10 / 100.0))
        families.append(avg)
        return families


_DISK_COLUMNS = (
    ("hypermesh_disk_reads_completed_total", "read_ops", "Reads completed (/proc/diskstats).", ""),
    ("hypermesh_disk_read_bytes_total", "read_bytes", "Bytes read.", "bytes"),
    ("hypermesh_disk_read_time_seconds_total", "read_time_seconds", "Seconds spent by all reads.", "seconds"),
    ("hypermesh_disk_writes_completed_total", "write_ops", "Writes completed.", ""),
    ("hypermesh_disk_written_bytes_total", "write_bytes", "Bytes written.", "bytes"),
    (
        "hypermesh_disk_write_time_seconds_total",
        "write_time_seconds",
        "Seconds spent by all writes.",
        "seconds",
    ),
    (
        "hypermesh_disk_io_time_seconds_total",
        "busy_seconds",
        "Seconds the device had I/O in flight (its busy time).",
        "seconds",
    ),
)

_NET_COLUMNS = (
    ("hypermesh_network_receive_bytes_total", "rx_bytes", "Bytes received (/proc/net/dev).", "bytes"),
    ("hypermesh_network_receive_packets_total", "rx_packets", "Packets received.", ""),
    ("hypermesh_network_receive_errors_total", "rx_errors", "Receive errors.", ""),
    ("hypermesh_network_receive_drops_total", "rx_drops", "Received packets dropped.", ""),
    ("hypermesh_network_transmit_bytes_total", "tx_bytes", "Bytes transmitted.", "bytes"),
    ("hypermesh_network_transmit_packets_total", "tx_packets", "Packets transmitted.", ""),
    ("hypermesh_network_transmit_errors_total", "tx_errors", "Transmit errors.", ""),
    ("hypermesh_network_transmit_drops_total", "tx_drops", "Transmitted packets dropped.", ""),
)


class DiskCollector:
    area = "disk"
    sources = ("diskstats",)

    def collect(self, scrape: Scrape) -> list[Family]:
        return _per_device(scrape.counters.disks, _DISK_COLUMNS, "device")


class NetworkCollector:
    area = "network"
    sources = ("net/dev",)

    def collect(self, scrape: Scrape) -> list[Family]:
        return _per_device(scrape.counters.network, _NET_COLUMNS, "interface")


def _per_device(rows: Sequence[Any], columns: Sequence[tuple[str, str, str, str]], label: str) -> list[Family]:
    families = []
    for name, field, text, unit in columns:
        family = Family(name, "counter", text, unit)
        for row in rows:
            family.samples.append((((label, row.name),), getattr(row, field)))
        families.append(family)
    return families


class EbpfCollector:
    """Whether eBPF works here and what each probed feature says; the agent runs fine without it."""

    area = "ebpf"

    def collect(self, scrape: Scrape) -> list[Family]:
        status = scrape.ebpf_status
        supported = Family(
            "hypermesh_ebpf_supported",
            "gauge",
            "1 if eBPF programs can be loaded by this agent, else 0 (see /v1/ebpf for the reason).",
        )
        supported.samples.append(((), 1.0 if status.get("available") else 0.0))
        families = [supported]
        features = _boolean_features(status.get("probe") or {})
        if features:
            feature = Family(
                "hypermesh_ebpf_feature_supported",
                "gauge",
                "1 if the kernel supports this eBPF feature (cached probe), else 0.",
            )
            for name, value in sorted(features.items()):
                feature.samples.append(((("feature", name),), 1.0 if value else 0.0))
            families.append(feature)
        programs = scrape.programs()
        if programs:
            loaded = Family(
                "hypermesh_ebpf_program_loaded",
                "gauge",
                "1 if the agent has this eBPF program loaded and attached, else 0 (/v1/ebpf says why).",
            )
            for name, entry in sorted(programs.items()):
                loaded.samples.append(((("program", name),), 1.0 if entry["loaded"] else 0.0))
            families.append(loaded)
            reading = (programs.get("syscalls") or {}).get("reading")
            if reading:
                calls = Family(
                    "hypermesh_ebpf_syscalls_total",
                    "counter",
                    "System calls entered on this machine since the agent loaded its syscalls program, by name.",
                )
                for name, count in sorted(reading["syscalls"].items()):
                    calls.samples.append(((("syscall", name),), float(count)))
                families.append(calls)
        return families


def _boolean_features(probe: dict[str, Any], prefix: str = "") -> dict[str, bool]:
    """Flatten the probe's nested booleans to ``a.b`` names; other values are not metrics."""
    flat: dict[str, bool] = {}
    for key, value in probe.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            flat[name] = value
        elif isinstance(value, dict):
            flat.update(_boolean_features(value, f"{name}."))
        elif isinstance(value, list):  # [{"name": ..., "supported": bool, "reason": ...}, ...]
            for item in value:
                if isinstance(item, dict) and isinstance(item.get("supported"), bool) and "name" in item:
                    flat[f"{prefix}{item['name']}"] = item["supported"]
    return flat


class AssetsCollector:
    """Capacity of what the machine has, from its profile (read once at start)."""

    area = "assets"

    def __init__(self, version: str) -> None:
        self._version = version

    def collect(self, scrape: Scrape) -> list[Family]:
        profile = scrape.profile
        if profile is None:
            raise RuntimeError("the system profile could not be read at start")
        info = Family(
            "hypermesh_node_info",
            "gauge",
            "Always 1; labels describe the node and the agent version.",
        )
        info.add(
            1.0,
            hostname=profile.os.hostname,
            kernel=profile.os.kernel,
            os=profile.os.system,
            architecture=profile.cpu.architecture,
            version=self._version,
        )
        cores = Family("hypermesh_cpu_logical_cores", "gauge", "Logical CPUs (hardware threads) online.")
        cores.samples.append(((), float(profile.cpu.logical_cores)))
        families = [info, cores]
        if profile.cpu.physical_cores is not None:
            physical = Family("hypermesh_cpu_physical_cores", "gauge", "Physical CPU cores.")
            physical.samples.append(((), float(profile.cpu.physical_cores)))
            families.append(physical)
        storage = Family("hypermesh_storage_device_size_bytes", "gauge", "Capacity of each block device.", "bytes")
        for device in profile.storage:
            if device.size_bytes is not None:
                storage.add(float(device.size_bytes), device=device.name)
        families.append(storage)
        speed = Family(
            "hypermesh_network_interface_speed_bytes",
            "gauge",
            "Link speed of each interface in bytes per second, where the driver reports one.",
            "bytes",
        )
        for interface in profile.network:
            if interface.speed_mbps is not None and interface.speed_mbps > 0:
                speed.add(interface.speed_mbps * 125_000.0, interface=interface.name)
        families.append(speed)
        if profile.limits.memory_limit_bytes is not None:
            limit = Family(
                "hypermesh_cgroup_memory_limit_bytes",
                "gauge",
                "Memory limit of the agent's cgroup.",
                "bytes",
            )
            limit.samples.append(((), float(profile.limits.memory_limit_bytes)))
            families.append(limit)
        return families


class AgentCollector:
    """The agent's own health: samples taken, requests in flight and turned away."""

    area = "agent"

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.stats
        samples = Family(
            "hypermesh_agent_samples_total", "counter", "Samples the agent's sampler has taken since start."
        )
        samples.samples.append(((), stats.get("samples", 0.0)))
        in_flight = Family(
            "hypermesh_agent_http_requests_in_flight",
            "gauge",
            "HTTP requests being served right now, this scrape included.",
        )
        in_flight.samples.append(((), stats.get("in_flight", 0.0)))
        rejected = Family(
            "hypermesh_agent_http_rejected_total",
            "counter",
            "HTTP requests refused, by reason: in_flight (limit reached), timeout, unauthorized.",
        )
        for reason in ("in_flight", "timeout", "unauthorized"):
            rejected.samples.append(((("reason", reason),), stats.get(f"rejected_{reason}", 0.0)))
        connections = Family(
            "hypermesh_agent_http_connections", "gauge", "HTTP connections open right now (after their TLS handshake)."
        )
        connections.samples.append(((), stats.get("connections", 0.0)))
        closed = Family(
            "hypermesh_agent_http_connections_closed_total",
            "counter",
            "HTTP connections the agent closed or refused, by reason: header_timeout (no complete request in "
            "time), send_timeout (the client did not read its response in time), evicted (the longest idle connection or oldest TLS handshake, to make room), refused (503, all busy at max_connections).",
        )
        for reason in CONNECTION_CLOSE_REASONS:
            closed.samples.append(((("reason", reason),), stats.get(f"connections_{reason}", 0.0)))
        accept_errors = Family(
            "hypermesh_agent_http_accept_errors_total",
            "counter",
            "Connections the kernel could not hand over (accept failed: EMFILE, ENFILE, ENOBUFS, ENOMEM).",
        )
        accept_errors.samples.append(((), stats.get("accept_errors", 0.0)))
        return [samples, in_flight, rejected, connections, closed, accept_errors]


CONNECTION_CLOSE_REASONS = ("header_timeout", "send_timeout", "evicted", "refused")


# ------------------------------------------------------------------------- node stats (node_exporter's ground)
# Read once per scrape through Scrape.node_stats (Sampler.node_stats(): its own files, never the sampling hot
# path). The first of these collectors to run pays for the read, so its duration includes it.


class NodeReadCollector:
    """Reads the node stats every node collector below shares, so its duration is the reading's, theirs their own."""

    area = "node_read"

    def collect(self, scrape: Scrape) -> list[Family]:
        _ = scrape.node_stats
        return []


_MEMINFO_HELP = {
    "MemTotal": "Usable physical memory.",
    "MemFree": "Memory not used for anything.",
    "MemAvailable": "Estimate of memory available for new work without swapping.",
    "Buffers": "Block device buffers.",
    "Cached": "Page cache (files), excluding swap cache.",
    "SwapCached": "Swapped-out memory also still in RAM.",
    "Active": "Memory used recently, not reclaimed unless needed.",
    "Inactive": "Memory less recently used, first to be reclaimed.",
    "Active(anon)": "Anonymous memory on the active LRU list.",
    "Inactive(anon)": "Anonymous memory on the inactive LRU list (swap candidates).",
    "Active(file)": "File-backed memory on the active LRU list.",
    "Inactive(file)": "File-backed memory on the inactive LRU list (reclaim candidates).",
    "Unevictable": "Memory that cannot be reclaimed (mlocked, ramfs...).",
    "Mlocked": "Memory locked with mlock().",
    "SwapTotal": "Swap space.",
    "SwapFree": "Unused swap space.",
    "Dirty": "Memory waiting to be written back to disk.",
    "Writeback": "Memory being written back to disk now.",
    "AnonPages": "Anonymous pages mapped into user page tables.",
    "Mapped": "Files mapped into memory (mmap), such as libraries.",
    "Shmem": "Shared memory and tmpfs.",
    "KReclaimable": "Kernel allocations the kernel reclaims under pressure.",
    "Slab": "Kernel slab allocator in-kernel data structures.",
    "SReclaimable": "Reclaimable part of Slab (caches).",
    "SUnreclaim": "Unreclaimable part of Slab.",
    "KernelStack": "Kernel stacks of all tasks.",
    "PageTables": "Page tables.",
    "CommitLimit": "Total memory that can be committed under strict overcommit (vm.overcommit_memory=2).",
    "Committed_AS": "Memory committed by all processes (could be needed if all used what they allocated).",
    "VmallocTotal": "Size of the vmalloc address space.",
    "VmallocUsed": "vmalloc area in use.",
    "AnonHugePages": "Anonymous transparent huge pages.",
    "HugePages_Total": "Huge pages in the pool (a count).",
    "HugePages_Free": "Huge pages in the pool not yet allocated (a count).",
    "HugePages_Rsvd": "Huge pages reserved but not yet faulted in (a count).",
    "HugePages_Surp": "Surplus huge pages above vm.nr_hugepages (a count).",
    "Hugepagesize": "Default huge page size.",
    "Hugetlb": "Memory taken by huge pages of all sizes.",
}

# Where the mechanical snake_case would mislead (a leading "s_" reads as seconds; "_total" means a counter).
_MEMINFO_NAMES = {
    "SReclaimable": "slab_reclaimable",
    "SUnreclaim": "slab_unreclaimable",
    "SecPageTables": "secondary_page_tables",
    "HugePages_Total": "huge_pages",
}


def _snake(kernel_name: str) -> str:
    """A kernel field name as a snake_case metric name part: ``Active(anon)`` -> ``active_anon``,
    ``SReclaimable`` -> ``s_reclaimable``, ``HugePages_Total`` -> ``huge_pages_total``, ``DirectMap4k`` ->
    ``direct_map4k`` (promtool wants snake_case; the kernel's name stays in the help text)."""
    out: list[str] = []
    prev = ""
    for i, char in enumerate(kernel_name):
        nxt = kernel_name[i + 1] if i + 1 < len(kernel_name) else ""
        ch = "_" if char in "()" else char
        if ch == "_":
            pass
        elif ch.isupper() and prev and prev != "_" and not prev.isdigit() and (prev.islower() or nxt.islower()):
            out.append("_")
        out.append(ch.lower())
        prev = ch
    return "".join(out).strip("_").replace("__", "_")


class MeminfoCollector:
    """Every /proc/meminfo field under its kernel name: bytes, except the HugePages_* counts."""

    area = "meminfo"
    sources = ("meminfo",)

    def __init__(self) -> None:
        self._rows: dict[str, tuple[str, str, str]] = {}  # field -> (name, help, unit), built on first sight

    def _row(self, field: str) -> tuple[str, str, str]:
        text = f"{field} (/proc/meminfo): {_MEMINFO_HELP.get(field, 'see Documentation/filesystems/proc.rst.')}"
        part = _MEMINFO_NAMES.get(field) or _snake(field)
        if field.startswith("HugePages_"):
            row = (f"hypermesh_meminfo_{part}", text, "")
        else:
            row = (f"hypermesh_meminfo_{part}_bytes", text, "bytes")
        if len(self._rows) < 1000:  # a kernel has ~60 fields; the bound only guards against a broken file
            self._rows[field] = row
        return row

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.node_stats
        if stats is None:
            return []
        families = []
        rows = self._rows
        for field, value in stats.meminfo.items():
            name, text, unit = rows.get(field) or self._row(field)
            family = Family(name, "gauge", text, unit)
            family.samples.append(((), float(value)))
            families.append(family)
        return families


# vmstat event counters worth a dashboard or an alert (node_exporter exports the first seven by default).
_VMSTAT_COUNTERS = {
    "pgpgin": "KiB paged in from disk.",
    "pgpgout": "KiB paged out to disk.",
    "pswpin": "Pages swapped in.",
    "pswpout": "Pages swapped out.",
    "pgfault": "Page faults (minor and major).",
    "pgmajfault": "Major page faults: a page had to be read from disk.",
    "oom_kill": "Processes killed by the OOM killer.",
    "pgfree": "Pages freed.",
    "pgactivate": "Pages moved to the active LRU list.",
    "pgdeactivate": "Pages moved to the inactive LRU list.",
    "pgscan_kswapd": "Pages scanned by kswapd (background reclaim).",
    "pgscan_direct": "Pages scanned by direct reclaim (an allocation had to wait).",
    "pgsteal_kswapd": "Pages reclaimed by kswapd.",
    "pgsteal_direct": "Pages reclaimed by direct reclaim.",
    "allocstall_normal": "Allocations that entered direct reclaim (Normal zone).",
    "allocstall_movable": "Allocations that entered direct reclaim (Movable zone).",
    "workingset_refault_anon": "Anonymous pages faulted back soon after eviction (thrashing).",
    "workingset_refault_file": "File pages faulted back soon after eviction (thrashing).",
    "compact_stall": "Allocations that stalled for memory compaction.",
    "compact_fail": "Compactions that failed.",
    "compact_success": "Compactions that succeeded.",
    "thp_fault_alloc": "Transparent huge pages allocated at page fault.",
    "thp_fault_fallback": "Page faults that wanted a huge page and fell back to small pages.",
    "numa_hit": "Allocations satisfied on the intended NUMA node.",
    "numa_miss": "Allocations satisfied on another node than intended.",
    "numa_foreign": "Allocations intended for this node satisfied elsewhere.",
    "numa_local": "Allocations on the node of the running CPU.",
    "numa_other": "Allocations on another node than the running CPU's.",
    "pgmigrate_success": "Pages migrated (NUMA balancing, compaction).",
    "slabs_scanned": "Slab objects scanned for reclaim.",
    "drop_pagecache": "Writes to /proc/sys/vm/drop_caches dropping the page cache.",
    "swap_ra": "Pages read ahead from swap.",
}

_VMSTAT_ROWS = tuple(
    (field, f"hypermesh_vmstat_{field}_total", f"{field} (/proc/vmstat): {text}")
    for field, text in _VMSTAT_COUNTERS.items()
)


class VmstatCollector:
    """Selected /proc/vmstat event counters (mm/vmstat.c), under their kernel names."""

    area = "vmstat"
    sources = ("vmstat",)

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.node_stats
        if stats is None:
            return []
        vmstat = stats.vmstat
        families = []
        for field, name, text in _VMSTAT_ROWS:
            value = vmstat.get(field)
            if value is not None:
                family = Family(name, "counter", text)
                family.samples.append(((), float(value)))
                families.append(family)
        return families


_KERNEL_ROWS = (
    (
        "context_switches",
        "hypermesh_context_switches_total",
        "counter",
        "Context switches since boot (/proc/stat ctxt).",
        "",
    ),
    ("interrupts", "hypermesh_interrupts_total", "counter", "Interrupts serviced since boot (/proc/stat intr).", ""),
    (
        "forks",
        "hypermesh_forks_total",
        "counter",
        "Processes and threads created since boot (/proc/stat processes).",
        "",
    ),
    ("procs_running", "hypermesh_procs_running", "gauge", "Tasks runnable right now (/proc/stat procs_running).", ""),
    (
        "procs_blocked",
        "hypermesh_procs_blocked",
        "gauge",
        "Tasks blocked on I/O right now (/proc/stat procs_blocked).",
        "",
    ),
    (
        "boot_time_seconds",
        "hypermesh_boot_time_seconds",
        "gauge",
        "Unix time the node booted (/proc/stat btime).",
        "seconds",
    ),
    (
        "file_handles_allocated",
        "hypermesh_file_handles_allocated",
        "gauge",
        "File handles allocated by the kernel (/proc/sys/fs/file-nr).",
        "",
    ),
    (
        "file_handles_maximum",
        "hypermesh_file_handles_maximum",
        "gauge",
        "Most file handles the kernel will allocate (fs.file-max).",
        "",
    ),
    (
        "entropy_available_bits",
        "hypermesh_entropy_available",
        "gauge",
        "Bits of entropy the kernel's random pool holds (/proc/sys/kernel/random/entropy_avail).",
        "",
    ),
    (
        "entropy_pool_size_bits",
        "hypermesh_entropy_pool_size",
        "gauge",
        "Size of the kernel's random pool in bits (/proc/sys/kernel/random/poolsize).",
        "",
    ),
    (
        "conntrack_entries",
        "hypermesh_nf_conntrack_entries",
        "gauge",
        "Connections tracked by netfilter (nf_conntrack_count).",
        "",
    ),
    (
        "conntrack_limit",
        "hypermesh_nf_conntrack_entries_limit",
        "gauge",
        "Most connections netfilter will track (nf_conntrack_max); new ones are dropped past it.",
        "",
    ),
)


class KernelCollector:
    """Kernel-wide activity: /proc/stat totals, file handles, entropy, conntrack, guest CPU time, the time."""

    area = "kernel"
    sources = ("stat", "sys/fs/file-nr")

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.node_stats
        if stats is None:
            return []
        kernel = stats.kernel
        families = []
        for key, name, kind, text, unit in _KERNEL_ROWS:
            value = kernel.get(key)
            if value is not None:
                family = Family(name, kind, text, unit)
                family.samples.append(((), value))
                families.append(family)
        now = Family("hypermesh_time_seconds", "gauge", "The node's clock: Unix time of this reading.", "seconds")
        now.samples.append(((), stats.timestamp))
        families.append(now)
        if stats.cpu_guest:
            guest = Family(
                "hypermesh_cpu_guest_seconds_total",
                "counter",
                "Seconds each CPU ran virtual machines' vCPUs, by mode user/nice (/proc/stat; already in cpu user/nice).",
                "seconds",
            )
            for cpu, (user, nice) in sorted(stats.cpu_guest.items()):
                label = str(cpu)
                guest.samples.append(((("cpu", label), ("mode", "user")), user))
                guest.samples.append(((("cpu", label), ("mode", "nice")), nice))
            families.append(guest)
        return families


class SoftirqsCollector:
    """Softirqs handled per CPU and type (/proc/softirqs): NET_RX piling on one CPU shows an RSS imbalance."""

    area = "softirqs"
    sources = ("softirqs",)

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.node_stats
        if stats is None or not stats.softirqs:
            return []
        family = Family(
            "hypermesh_softirqs_total", "counter", "Softirqs handled since boot, by CPU and type (/proc/softirqs)."
        )
        for kind, counts in stats.softirqs.items():
            for cpu, count in enumerate(counts):
                family.samples.append(((("cpu", str(cpu)), ("type", kind)), float(count)))
        return [family]


class SoftnetCollector:
    """Per-CPU packet processing (/proc/net/softnet_stat): drops and squeezes mean the CPU could not keep up."""

    area = "softnet"
    sources = ("net/softnet_stat",)

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.node_stats
        if stats is None or not stats.softnet:
            return []
        rows = (
            ("hypermesh_softnet_processed_total", "Packets processed by each CPU's network stack."),
            ("hypermesh_softnet_dropped_total", "Packets dropped because the CPU's backlog queue was full."),
            (
                "hypermesh_softnet_times_squeezed_total",
                "Times the CPU ran out of budget or time with packets still waiting (net.core.netdev_budget).",
            ),
        )
        families = []
        for column, (name, text) in enumerate(rows):
            family = Family(name, "counter", text)
            for cpu, values in sorted(stats.softnet.items()):
                family.samples.append(((("cpu", str(cpu)),), float(values[column])))
            families.append(family)
        return families


# /proc/net/dev columns the network collector (from the Sampler's counters) does not already export.
_NETDEV_EXTRA = (
    ("receive_fifo", "hypermesh_network_receive_fifo_total", "Receive FIFO (ring buffer) overruns."),
    ("receive_frame", "hypermesh_network_receive_frame_total", "Received frames with framing or CRC errors."),
    ("receive_compressed", "hypermesh_network_receive_compressed_total", "Compressed packets received."),
    ("receive_multicast", "hypermesh_network_receive_multicast_total", "Multicast packets received."),
    ("transmit_fifo", "hypermesh_network_transmit_fifo_total", "Transmit FIFO errors."),
    ("transmit_collisions", "hypermesh_network_transmit_collisions_total", "Collisions while transmitting."),
    ("transmit_carrier", "hypermesh_network_transmit_carrier_total", "Carrier losses while transmitting."),
    ("transmit_compressed", "hypermesh_network_transmit_compressed_total", "Compressed packets sent."),
)


class NetdevCollector:
    """The other half of /proc/net/dev's 16 columns, per interface."""

    area = "netdev"
    sources = ("net/dev",)

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.node_stats
        if stats is None:
            return []
        families = []
        interfaces = sorted(stats.net_dev.items())
        for column, name, text in _NETDEV_EXTRA:
            family = Family(name, "counter", f"{text} (/proc/net/dev)")
            for interface, values in interfaces:
                value = values.get(column)
                if value is not None:
                    family.samples.append(((("interface", interface),), float(value)))
            if family.samples:
                families.append(family)
        return families


# /proc/diskstats columns the disk collector (from the Sampler's counters) does not already export.
_DISKSTATS_EXTRA = (
    ("reads_merged", "hypermesh_disk_reads_merged_total", "counter", "Adjacent reads merged into one request.", ""),
    ("writes_merged", "hypermesh_disk_writes_merged_total", "counter", "Adjacent writes merged into one request.", ""),
    ("io_now", "hypermesh_disk_io_now", "gauge", "I/O requests in flight right now (queue depth).", ""),
    (
        "io_time_weighted_seconds",
        "hypermesh_disk_io_time_weighted_seconds_total",
        "counter",
        "Seconds spent on I/O weighted by requests in flight; rate() of it is the average queue size.",
        "seconds",
    ),
    ("discards_completed", "hypermesh_disk_discards_completed_total", "counter", "Discards (TRIM) completed.", ""),
    ("discards_merged", "hypermesh_disk_discards_merged_total", "counter", "Adjacent discards merged.", ""),
    ("discarded_bytes", "hypermesh_disk_discarded_bytes_total", "counter", "Bytes discarded.", "bytes"),
    (
        "discard_time_seconds",
        "hypermesh_disk_discard_time_seconds_total",
        "counter",
        "Seconds spent by all discards.",
        "seconds",
    ),
    ("flush_requests", "hypermesh_disk_flush_requests_total", "counter", "Cache flush requests completed.", ""),
    (
        "flush_time_seconds",
        "hypermesh_disk_flush_requests_time_seconds_total",
        "counter",
        "Seconds spent by all flush requests.",
        "seconds",
    ),
)


class DiskstatsCollector:
    """The rest of /proc/diskstats (merges, queue, discard 4.18+, flush 5.5+) for the Sampler's devices."""

    area = "diskstats"
    sources = ("diskstats",)

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.node_stats
        if stats is None:
            return []
        devices = sorted(stats.diskstats.items())
        families = []
        for column, name, kind, text, unit in _DISKSTATS_EXTRA:
            family = Family(name, kind, f"{text} (/proc/diskstats)", unit)
            for device, values in devices:
                value = values.get(column)
                if value is not None:
                    family.samples.append(((("device", device),), float(value)))
            if family.samples:
                families.append(family)
        return families


# SNMP counters, by protocol, exported as hypermesh_netstat_<Protocol>_<Field>_total (gauges without _total).
# Sources: /proc/net/snmp (Ip, Icmp, Tcp, Udp, UdpLite), /proc/net/snmp6 (Ip6, Icmp6, Udp6, UdpLite6),
# /proc/net/netstat (TcpExt, IpExt); names as in include/uapi/linux/snmp.h and the MIBs (RFC 4293, 4022, 4113).
_NETSTAT_GAUGES = frozenset({("Ip", "Forwarding"), ("Ip", "DefaultTTL"), ("Tcp", "CurrEstab")})
_NETSTAT_FIELDS = {
    "Ip": "Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards "
    "InDelivers OutRequests OutDiscards OutNoRoutes ReasmTimeout ReasmReqds ReasmOKs ReasmFails FragOKs FragFails "
    "FragCreates OutTransmits",
    "Icmp": "InMsgs InErrors InCsumErrors InDestUnreachs InTimeExcds InEchos InEchoReps OutMsgs OutErrors "
    "OutRateLimitGlobal OutRateLimitHost OutDestUnreachs OutTimeExcds OutEchos OutEchoReps",
    "Tcp": "ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts "
    "InCsumErrors",
    "Udp": "InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors",
    "UdpLite": "InErrors",
    "Ip6": "InReceives InHdrErrors InTooBigErrors InNoRoutes InAddrErrors InUnknownProtos InTruncatedPkts InDiscards "
    "InDelivers OutForwDatagrams OutRequests OutDiscards OutNoRoutes ReasmFails FragFails InOctets OutOctets",
    "Icmp6": "InMsgs InErrors OutMsgs OutErrors InCsumErrors InDestUnreachs OutDestUnreachs",
    "Udp6": "InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors",
    "UdpLite6": "InErrors",
    "TcpExt": "SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts PruneCalled RcvPruned OfoPruned TW "
    "TWKilled ListenOverflows ListenDrops TCPLostRetransmit TCPFastRetrans TCPSlowStartRetrans TCPTimeouts "
    "TCPSynRetrans TCPAbortOnData TCPAbortOnClose TCPAbortOnMemory TCPAbortOnTimeout TCPAbortOnLinger "
    "TCPAbortFailed TCPMemoryPressures TCPBacklogDrop TCPRcvQDrop TCPOFOQueue TCPOFODrop TCPZeroWindowDrop "
    "TCPRetransFail TCPReqQFullDrop TCPReqQFullDoCookies TCPKeepAlive TCPDSACKRecv TCPSackRecovery "
    "TCPSpuriousRTOs TCPOrigDataSent DelayedACKs DelayedACKLost",
    "IpExt": "InNoRoutes InTruncatedPkts InMcastPkts OutMcastPkts InBcastPkts OutBcastPkts InOctets OutOctets "
    "InCsumErrors ReasmOverlaps",
}
_NETSTAT_SOURCE = {
    "Ip6": "/proc/net/snmp6",
    "Icmp6": "/proc/net/snmp6",
    "Udp6": "/proc/net/snmp6",
    "UdpLite6": "/proc/net/snmp6",
    "TcpExt": "/proc/net/netstat",
    "IpExt": "/proc/net/netstat",
}
_NETSTAT_GAUGE_NAMES = {
    ("Ip", "Forwarding"): (
        "hypermesh_netstat_ip_forwarding",
        "1 if the node forwards IPv4 packets (a router), 2 if not (/proc/net/snmp Ip Forwarding).",
    ),
    ("Ip", "DefaultTTL"): (
        "hypermesh_netstat_ip_default_ttl",
        "Default time-to-live of outgoing IPv4 packets (/proc/net/snmp Ip DefaultTTL).",
    ),
    ("Tcp", "CurrEstab"): (
        "hypermesh_netstat_tcp_current_established",
        "TCP connections in ESTABLISHED or CLOSE-WAIT now (/proc/net/snmp Tcp CurrEstab).",
    ),
}
# What the fields mean (docs/metrics.md lists them); the MIBs define the rest.
_NETSTAT_HELP = {
    "Forwarding": "1 if the node forwards IPv4 packets (a router), 2 if not.",
    "DefaultTTL": "Default time-to-live of outgoing IPv4 packets.",
    "InReceives": "Datagrams received, errors included.",
    "InDelivers": "Datagrams delivered to upper-layer protocols.",
    "OutRequests": "Datagrams handed down for transmission.",
    "InDiscards": "Datagrams discarded for lack of resources.",
    "OutNoRoutes": "Datagrams discarded for want of a route.",
    "InOctets": "Bytes received.",
    "OutOctets": "Bytes sent.",
    "ActiveOpens": "Connections this node opened (SYN-SENT).",
    "PassiveOpens": "Connections accepted (SYN-RCVD from LISTEN).",
    "AttemptFails": "Connection attempts that failed.",
    "EstabResets": "Established connections reset.",
    "CurrEstab": "Connections ESTABLISHED or CLOSE-WAIT now.",
    "InSegs": "Segments received.",
    "OutSegs": "Segments sent, retransmissions excluded.",
    "RetransSegs": "Segments retransmitted.",
    "InErrs": "Segments received with errors.",
    "OutRsts": "Segments sent with RST.",
    "InDatagrams": "Datagrams delivered to sockets.",
    "NoPorts": "Datagrams to a port nobody listens on.",
    "InErrors": "Datagrams or messages received with errors (Udp: includes buffer errors).",
    "OutDatagrams": "Datagrams sent.",
    "RcvbufErrors": "Datagrams dropped: the socket's receive buffer was full.",
    "SndbufErrors": "Datagrams dropped: the send buffer was full.",
    "InMsgs": "Messages received.",
    "OutMsgs": "Messages sent.",
    "ListenOverflows": "Connections dropped: a listening socket's accept queue was full.",
    "ListenDrops": "Connections dropped at a listening socket for any reason.",
    "SyncookiesSent": "SYN cookies sent (the SYN queue overflowed).",
    "SyncookiesRecv": "SYN cookies received back.",
    "SyncookiesFailed": "Invalid SYN cookies received.",
    "TCPTimeouts": "Retransmission timeouts.",
    "TCPSynRetrans": "SYN and SYN-ACK retransmissions.",
    "TCPBacklogDrop": "Segments dropped: the socket backlog was full.",
    "TCPAbortOnMemory": "Connections aborted for lack of memory.",
    "TCPMemoryPressures": "Times TCP entered memory pressure (net.ipv4.tcp_mem).",
}


class NetstatCollector:
    """IP, ICMP, TCP and UDP counters of the kernel's SNMP MIBs (/proc/net/snmp, snmp6, netstat).

    One counter family per protocol with the kernel's field name as the ``field`` label
    (``rate(hypermesh_netstat_tcp_total{field="RetransSegs"}[5m])``); the three current values are gauges.
    """

    area = "netstat"
    sources = ("net/snmp", "net/netstat", "net/snmp6")

    def __init__(self) -> None:
        # protocol -> (family name, help, [(field, labels)]): built once, the strings stay the same objects.
        self._rows: dict[str, tuple[str, str, list[tuple[str, Labels]]]] = {}
        for protocol, fields in _NETSTAT_FIELDS.items():
            source = _NETSTAT_SOURCE.get(protocol, "/proc/net/snmp")
            names = [f for f in fields.split() if (protocol, f) not in _NETSTAT_GAUGES]
            self._rows[protocol] = (
                f"hypermesh_netstat_{_snake(protocol)}_total",
                f"{protocol} counters from {source}, by the kernel's field name (include/uapi/linux/snmp.h).",
                [(f, (("field", f),)) for f in names],
            )

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.node_stats
        if stats is None:
            return []
        snmp = stats.snmp
        families = []
        for protocol, (name, text, fields) in self._rows.items():
            values = snmp.get(protocol)
            if not values:
                continue
            family = Family(name, "counter", text)
            for field, labels in fields:
                value = values.get(field)
                if value is not None:
                    family.samples.append((labels, float(value)))
            families.append(family)
        for (protocol, field), (name, text) in _NETSTAT_GAUGE_NAMES.items():
            value = snmp.get(protocol, {}).get(field)
            if value is not None:
                family = Family(name, "gauge", text)
                family.samples.append(((), float(value)))
                families.append(family)
        return families


class SockstatCollector:
    """Sockets in use by protocol and socket memory (/proc/net/sockstat and sockstat6)."""

    area = "sockstat"
    sources = ("net/sockstat", "net/sockstat6")

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.node_stats
        if stats is None or not stats.sockstat:
            return []
        sockstat = stats.sockstat
        families = []
        used = sockstat.get("sockets", {}).get("used")
        if used is not None:
            family = Family(
                "hypermesh_sockstat_sockets_used", "gauge", "Sockets of all kinds in use (/proc/net/sockstat)."
            )
            family.samples.append(((), float(used)))
            families.append(family)
        inuse = Family(
            "hypermesh_sockstat_inuse", "gauge", "Sockets in use, by protocol (/proc/net/sockstat, sockstat6)."
        )
        memory = Family(
            "hypermesh_sockstat_memory_bytes",
            "gauge",
            "Memory held by sockets' buffers, by protocol (TCP/UDP mem pages; FRAG reassembly memory).",
            "bytes",
        )
        for protocol, fields in sorted(sockstat.items()):
            if "inuse" in fields and protocol != "sockets":
                inuse.samples.append(((("protocol", protocol),), float(fields["inuse"])))
            mem = fields.get("mem_bytes", fields.get("memory"))
            if mem is not None:
                memory.samples.append(((("protocol", protocol),), float(mem)))
        families.extend((inuse, memory))
        tcp = sockstat.get("TCP", {})
        for field, name, text in (
            ("orphan", "hypermesh_sockstat_tcp_orphan", "TCP sockets no longer attached to a process."),
            ("tw", "hypermesh_sockstat_tcp_time_wait", "TCP sockets in TIME-WAIT."),
            ("alloc", "hypermesh_sockstat_tcp_allocated", "TCP sockets allocated (any state)."),
        ):
            if field in tcp:
                family = Family(name, "gauge", f"{text} (/proc/net/sockstat)")
                family.samples.append(((), float(tcp[field])))
                families.append(family)
        return families


class PressureCpuIoCollector:
    """CPU and I/O stall information (PSI, /proc/pressure/cpu and io); memory is the pressure collector's."""

    area = "pressure_cpu_io"
    sources = ("pressure/cpu", "pressure/io")

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.node_stats
        if stats is None:
            return []
        families = []
        for resource, what in (("cpu", "a CPU"), ("io", "I/O")):
            values = stats.pressure.get(resource)
            if not values:
                continue
            waiting = Family(
                f"hypermesh_pressure_{resource}_waiting_seconds_total",
                "counter",
                f"Seconds in which at least one task waited for {what} (PSI 'some').",
                "seconds",
            )
            waiting.samples.append(((), values["some_total_seconds"]))
            families.append(waiting)
            # The system-wide cpu 'full' line (5.13+) is always 0: only cgroups can have every task stalled on CPU.
            if resource == "io" and "full_total_seconds" in values:
                stalled = Family(
                    "hypermesh_pressure_io_stalled_seconds_total",
                    "counter",
                    "Seconds in which all non-idle tasks stalled on I/O at once (PSI 'full').",
                    "seconds",
                )
                stalled.samples.append(((), values["full_total_seconds"]))
                families.append(stalled)
            avg = Family(
                f"hypermesh_pressure_{resource}_avg10_ratio",
                "gauge",
                f"Share of the last 10 s in which tasks waited for {what}, 0..1 (PSI avg10), by kind some/full.",
                "ratio",
            )
            avg.samples.append(((("kind", "some"),), values["some_avg10"] / 100.0))
            if resource == "io" and "full_avg10" in values:
                avg.samples.append(((("kind", "full"),), values["full_avg10"] / 100.0))
            families.append(avg)
        return families


_FILESYSTEM_ROWS = (
    ("size_bytes", "hypermesh_filesystem_size_bytes", "Size of the filesystem.", "bytes"),
    ("free_bytes", "hypermesh_filesystem_free_bytes", "Free space, root's reserve included.", "bytes"),
    (
        "available_bytes",
        "hypermesh_filesystem_avail_bytes",
        "Space available to unprivileged users (what df calls Avail).",
        "bytes",
    ),
    ("files", "hypermesh_filesystem_files", "Inodes of the filesystem.", ""),
    ("files_free", "hypermesh_filesystem_files_free", "Free inodes.", ""),
)


class FilesystemCollector:
    """statvfs of each real mounted filesystem (pseudo filesystems and /dev, /proc, /run, /sys... left out)."""

    area = "filesystem"

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.node_stats
        if stats is None:
            return []
        filesystems = sorted(stats.filesystems, key=lambda f: f.mountpoint)
        labels = [(("device", f.device), ("fstype", f.fstype), ("mountpoint", f.mountpoint)) for f in filesystems]
        families = []
        for field, name, text, unit in _FILESYSTEM_ROWS:
            family = Family(name, "gauge", f"{text} (statvfs)", unit)
            for fs, label in zip(filesystems, labels, strict=True):
                if not fs.error:
                    family.samples.append((label, float(getattr(fs, field))))
            families.append(family)
        readonly = Family("hypermesh_filesystem_readonly", "gauge", "1 if the filesystem is mounted read-only.")
        error = Family(
            "hypermesh_filesystem_device_error", "gauge", "1 if statvfs failed on the mount (e.g. a stale NFS server)."
        )
        for fs, label in zip(filesystems, labels, strict=True):
            readonly.samples.append((label, 1.0 if fs.readonly else 0.0))
            error.samples.append((label, 1.0 if fs.error else 0.0))
        families.extend((readonly, error))
        return families


class CpuidleCollector:
    """Time and entries per cpuidle state and CPU (/sys/devices/system/cpu/cpuN/cpuidle): how deep CPUs sleep."""

    area = "cpuidle"

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.node_stats
        if stats is None or not stats.cpuidle:
            return []
        seconds = Family(
            "hypermesh_cpu_idle_state_seconds_total",
            "counter",
            "Seconds each CPU spent in each idle state (cpuidle residency; added when the CPU wakes).",
            "seconds",
        )
        entries = Family("hypermesh_cpu_idle_state_entries_total", "counter", "Times each CPU entered each idle state.")
        for state in stats.cpuidle:
            label = (("cpu", str(state.cpu)), ("state", state.state))
            seconds.samples.append((label, state.time_seconds))
            entries.samples.append((label, float(state.entries)))
        return [seconds, entries]


class CpufreqCollector:
    """Current and limit frequency of each CPU where a cpufreq driver runs (none on most VMs)."""

    area = "cpufreq"

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.node_stats
        if stats is None or not stats.cpu_frequency_hz:
            return []
        families = []
        for column, name, text in (
            (0, "hypermesh_cpu_frequency_hertz", "Current frequency of each CPU (cpufreq scaling_cur_freq)."),
            (1, "hypermesh_cpu_frequency_min_hertz", "Lowest frequency the CPU supports (cpuinfo_min_freq)."),
            (2, "hypermesh_cpu_frequency_max_hertz", "Highest frequency the CPU supports (cpuinfo_max_freq)."),
        ):
            family = Family(name, "gauge", text, "hertz")
            for cpu, values in sorted(stats.cpu_frequency_hz.items()):
                family.samples.append(((("cpu", str(cpu)),), values[column]))
            families.append(family)
        return families


_INTERFACE_ERRORS = (
    (
        "rx_crc_errors",
        "hypermesh_network_receive_crc_errors_total",
        "Frames received with a bad checksum (cable, optics, duplex mismatch).",
    ),
    ("rx_length_errors", "hypermesh_network_receive_length_errors_total", "Frames received with a bad length."),
    (
        "rx_missed_errors",
        "hypermesh_network_receive_missed_errors_total",
        "Frames the NIC dropped for lack of host buffers (receive ring full).",
    ),
    ("rx_over_errors", "hypermesh_network_receive_over_errors_total", "Receive ring or FIFO overruns."),
    (
        "rx_nohandler",
        "hypermesh_network_receive_nohandler_total",
        "Packets dropped because no protocol handler wanted them (e.g. on an inactive bond slave).",
    ),
    ("tx_aborted_errors", "hypermesh_network_transmit_aborted_errors_total", "Transmissions aborted."),
    ("tx_heartbeat_errors", "hypermesh_network_transmit_heartbeat_errors_total", "Heartbeat (SQE) errors."),
    ("tx_window_errors", "hypermesh_network_transmit_window_errors_total", "Late collisions (outside the window)."),
)


class NetclassCollector:
    """Each network interface's state from sysfs (/sys/class/net): up, carrier, MTU, queue, carrier flaps."""

    area = "netclass"
    sources = ("net/dev",)

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.node_stats
        if stats is None or not stats.interfaces:
            return []
        info = Family(
            "hypermesh_network_info", "gauge", "Always 1; labels give each interface's MAC address, operstate, duplex."
        )
        up = Family("hypermesh_network_up", "gauge", "1 if the interface's operstate is up.")
        carrier = Family(
            "hypermesh_network_carrier", "gauge", "1 if the link has a carrier (cable, peer); absent while down."
        )
        mtu = Family("hypermesh_network_mtu_bytes", "gauge", "Maximum transmission unit.", "bytes")
        queue = Family(
            "hypermesh_network_transmit_queue_length", "gauge", "Transmit queue length (txqueuelen), packets."
        )
        changes = Family("hypermesh_network_carrier_changes_total", "counter", "Times the link went up or down.")
        ups = Family("hypermesh_network_carrier_up_changes_total", "counter", "Times the link came up.")
        downs = Family("hypermesh_network_carrier_down_changes_total", "counter", "Times the link went down.")
        for iface in stats.interfaces:
            label = (("interface", iface.name),)
            info.samples.append(
                (
                    (
                        ("address", iface.address),
                        ("duplex", iface.duplex),
                        ("interface", iface.name),
                        ("operstate", iface.operstate),
                    ),
                    1.0,
                )
            )
            up.samples.append((label, 1.0 if iface.operstate == "up" else 0.0))
            for family, value in (
                (carrier, iface.carrier),
                (mtu, iface.mtu),
                (queue, iface.tx_queue_length),
                (changes, iface.carrier_changes),
                (ups, iface.carrier_up_changes),
                (downs, iface.carrier_down_changes),
            ):
                if value is not None:
                    family.samples.append((label, float(value)))
        families = [info, up, carrier, mtu, queue, changes, ups, downs]
        for counter, name, text in _INTERFACE_ERRORS:
            family = Family(name, "counter", text)
            for iface in stats.interfaces:
                value = iface.error_counters.get(counter)
                if value is not None:
                    family.samples.append(((("interface", iface.name),), float(value)))
            if family.samples:
                families.append(family)
        return families


class ArpCollector:
    """Neighbour (ARP) entries per interface (/proc/net/arp): a full table drops traffic to new neighbours."""

    area = "arp"
    sources = ("net/arp",)

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.node_stats
        if stats is None:
            return []
        family = Family("hypermesh_arp_entries", "gauge", "IPv4 neighbour (ARP) entries, by interface.")
        for interface, count in sorted(stats.arp_entries.items()):
            family.samples.append(((("interface", interface),), float(count)))
        return [family]


class UnameCollector:
    """What runs: the kernel's uname and /etc/os-release as ``_info`` gauges (join on them in PromQL)."""

    area = "uname"

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.node_stats
        if stats is None:
            return []
        uname = Family("hypermesh_uname_info", "gauge", "Always 1; labels are the kernel's uname fields.")
        uname.add(1.0, **stats.uname)
        families = [uname]
        release = stats.os_release
        if release:
            os_info = Family("hypermesh_os_info", "gauge", "Always 1; labels are /etc/os-release fields.")
            os_info.add(
                1.0,
                id=release.get("ID", ""),
                id_like=release.get("ID_LIKE", ""),
                name=release.get("NAME", ""),
                pretty_name=release.get("PRETTY_NAME", ""),
                version=release.get("VERSION", ""),
                version_codename=release.get("VERSION_CODENAME", ""),
                version_id=release.get("VERSION_ID", ""),
            )
            families.append(os_info)
        return families


def default_collectors(version: str) -> list[AreaCollector]:
    return [
        CpuCollector(),
        MemoryCollector(),
        PressureCollector(),
        DiskCollector(),
        NetworkCollector(),
        EbpfCollector(),
        NodeReadCollector(),
        MeminfoCollector(),
        VmstatCollector(),
        KernelCollector(),
        SoftirqsCollector(),
        SoftnetCollector(),
        NetdevCollector(),
        DiskstatsCollector(),
        NetstatCollector(),
        SockstatCollector(),
        PressureCpuIoCollector(),
        FilesystemCollector(),
        CpuidleCollector(),
        CpufreqCollector(),
        NetclassCollector(),
        ArpCollector(),
        UnameCollector(),
        AssetsCollector(version),
        AgentCollector(),
    ]


# ------------------------------------------------------------------------------------------ scrape


def collect(
    collectors: Sequence[AreaCollector],
    scrape: Scrape,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[Family], list[str]]:
    """Run every collector; returns the families (scrape meta-metrics last) and the failures.

    ``clock`` times each collector; the golden-file test passes a constant one.
    """
    families: list[Family] = []
    failures: list[str] = []
    success = Family(
        "hypermesh_scrape_collector_success", "gauge", "1 if the collector succeeded in this scrape, else 0."
    )
    duration = Family(
        "hypermesh_scrape_collector_duration_seconds",
        "gauge",
        "Seconds the collector took in this scrape.",
        "seconds",
    )
    results: list[tuple[AreaCollector, list[Family] | None]] = []
    for collector in collectors:
        label = (("collector", collector.area),)
        start = clock()
        try:
            produced: list[Family] | None = collector.collect(scrape)
        except Exception as exc:  # a broken area must not take the scrape down with it
            failures.append(f"{collector.area}: {type(exc).__name__}: {exc}")
            produced = None
        results.append((collector, produced))
        duration.samples.append((label, clock() - start))
    # Asked once the readers have run (the node stats reader learns of its files on its first read).
    unreadable = scrape.unreadable()
    for collector, produced in results:
        label = (("collector", collector.area),)
        broken = [unreadable[name] for name in getattr(collector, "sources", ()) if name in unreadable]
        if produced is not None and broken:
            # An unreadable file reads as empty: "no devices" and "could not look" must not both say success.
            failures.append(f"{collector.area}: cannot read {'; '.join(broken)}")
        if produced is None or broken:
            success.samples.append((label, 0.0))
            continue
        for family in produced:
            family.area = collector.area
        families.extend(produced)
        success.samples.append((label, 1.0))
    families.append(success)
    families.append(duration)
    return families, failures


# ------------------------------------------------------------------------------------- text writer


_MINUS_INF = float("-inf")


def _escape_label_value(value: str) -> str:
    if not value.isascii():
        # Kernel names are bytes: an interface may be named with bytes that are not UTF-8 (os.listdir gives them as
        # surrogates), which the exposition, UTF-8 text, cannot carry: each such byte is written as \xNN, which keeps
        # two such names apart (one replacement character for both would make duplicate series).
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class TextWriter:
    """Prometheus text 0.0.4 or OpenMetrics 1.0, with each line's prefix (name and labels) cached.

    The two formats share sample lines; they differ in the family header (OpenMetrics names a counter
    family without ``_total``, adds ``# UNIT`` and escapes quotes in help) and OpenMetrics' ``# EOF``.
    """

    # Devices and interfaces can come and go (containers, hot-plug): clear the cache past this size.
    MAX_CACHED_PREFIXES = 20_000

    def __init__(self) -> None:
        self._headers: dict[tuple[str, bool], tuple[str, str, str, str]] = {}
        self._prefixes: dict[tuple[str, Labels], str] = {}

    @staticmethod
    def _header(family: Family, openmetrics: bool) -> str:
        name = family.name
        text = family.help.replace("\\", r"\\").replace("\n", r"\n")
        if not openmetrics:
            return f"# HELP {name} {text}\n# TYPE {name} {family.kind}\n"
        base = name.removesuffix("_total") if family.kind == "counter" else name
        text = text.replace('"', r"\"")
        header = f"# HELP {base} {text}\n# TYPE {base} {family.kind}\n"
        if family.unit and base.endswith(f"_{family.unit}"):
            header += f"# UNIT {base} {family.unit}\n"
        return header

    def render(self, families: Sequence[Family], openmetrics: bool = False) -> bytes:
        from prometheus_client.utils import floatToGoString

        headers = self._headers
        prefixes = self._prefixes
        if len(prefixes) > self.MAX_CACHED_PREFIXES:
            prefixes.clear()
        out: list[str] = []
        append = out.append
        for family in families:
            name = family.name
            # Keyed by name alone (cheap to hash); the cached entry is used only while kind, help and unit match.
            cached = headers.get((name, openmetrics))
            if cached is None or cached[0] != family.kind or cached[1] != family.help or cached[2] != family.unit:
                cached = (family.kind, family.help, family.unit, self._header(family, openmetrics))
                headers[(name, openmetrics)] = cached
            append(cached[3])
            bare = f"{name} "
            for labels, value in family.samples:
                if labels:
                    pkey = (name, labels)
                    prefix = prefixes.get(pkey)
                    if prefix is None:
                        inner = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in labels)
                        prefix = prefixes[pkey] = f"{name}{{{inner}}} "
                else:
                    prefix = bare
                # prometheus_client's number format (floatToGoString) is Python's repr below 1e6; above, Go's
                # exponent form, and NaN/Inf spelled out: its own function handles those, keeping the output identical.
                if _MINUS_INF < value < 1e6:
                    append(f"{prefix}{float(value)!r}\n")
                else:
                    append(f"{prefix}{floatToGoString(value)}\n")  # type: ignore[no-untyped-call,unused-ignore]
        if openmetrics:
            append("# EOF\n")
        return "".join(out).encode()


# ------------------------------------------------------------------ prometheus_client (OpenMetrics)


class _ClientCollector:
    """A prometheus_client custom collector for one area, fed the families of the current scrape."""

    def __init__(self, area: str) -> None:
        self.area = area
        self.families: list[Family] = []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.metrics_core import Metric

        for family in self.families:
            base = family.name.removesuffix("_total") if family.kind == "counter" else family.name
            unit = family.unit if family.unit and base.endswith(f"_{family.unit}") else ""
            metric = Metric(base, family.help, family.kind, unit)
            for labels, value in family.samples:
                metric.add_sample(family.name, dict(labels), value)
            yield metric


class ClientRegistry:
    """The prometheus_client side: one custom collector per area in a private CollectorRegistry."""

    def __init__(self, areas: Sequence[str]) -> None:
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self._by_area = {area: _ClientCollector(area) for area in [*areas, "scrape"]}
        for collector in self._by_area.values():
            self.registry.register(collector)

    def load(self, families: Sequence[Family]) -> None:
        for collector in self._by_area.values():
            collector.families = []
        for family in families:
            area = family.area or area_of(family.name)
            self._by_area.get(area, self._by_area["scrape"]).families.append(family)

    def render_text(self) -> bytes:
        from prometheus_client.exposition import generate_latest

        data: bytes = generate_latest(self.registry)  # type: ignore[no-untyped-call,unused-ignore]
        return data

    def render_openmetrics(self) -> bytes:
        from prometheus_client.openmetrics.exposition import generate_latest

        data: bytes = generate_latest(self.registry)  # type: ignore[no-untyped-call,unused-ignore]
        return data


_AREA_PREFIXES = (
    ("hypermesh_scrape_", "scrape"),
    ("hypermesh_cpu_logical", "assets"),
    ("hypermesh_cpu_physical", "assets"),
    ("hypermesh_cpu_", "cpu"),
    ("hypermesh_load", "cpu"),
    ("hypermesh_memory_", "memory"),
    ("hypermesh_pressure_", "pressure"),
    ("hypermesh_disk_", "disk"),
    ("hypermesh_network_interface_", "assets"),
    ("hypermesh_network_", "network"),
    ("hypermesh_ebpf_", "ebpf"),
    ("hypermesh_agent_", "agent"),
)


def area_of(name: str) -> str:
    for prefix, area in _AREA_PREFIXES:
        if name.startswith(prefix):
            return area
    return "assets"


OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def wants_openmetrics(accept: str) -> bool:
    """True when the Accept header prefers OpenMetrics (as Prometheus does) over the text format."""
    best_q = -1.0
    best_is_om = False
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        if media not in ("application/openmetrics-text", "text/plain", "*/*"):
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":  # parameter names are case-insensitive (RFC 9110)
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:  # NaN or out of range: not a weight
                    q = 0.0
        if q > best_q:
            best_q = q
            best_is_om = media == "application/openmetrics-text"
    return best_is_om and best_q > 0
