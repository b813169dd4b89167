"""Kernel-wide activity: /proc/stat totals, file handles, entropy, conntrack, guest CPU time, the node's clock."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter, gauge
from hypermesh.agent.metrics.scrape import Scrape

__all__ = ["KernelCollector"]

CONTEXT_SWITCHES = counter("hypermesh_context_switches_total", "Context switches since boot (/proc/stat ctxt).")
INTERRUPTS = counter("hypermesh_interrupts_total", "Interrupts serviced since boot (/proc/stat intr).")
FORKS = counter("hypermesh_forks_total", "Processes and threads created since boot (/proc/stat processes).")
PROCS_RUNNING = gauge("hypermesh_procs_running", "Tasks runnable right now (/proc/stat procs_running).")
PROCS_BLOCKED = gauge("hypermesh_procs_blocked", "Tasks blocked on I/O right now (/proc/stat procs_blocked).")
BOOT_TIME_SECONDS = gauge("hypermesh_boot_time_seconds", "Unix time the node booted (/proc/stat btime).", "seconds")
FILE_HANDLES_ALLOCATED = gauge(
    "hypermesh_file_handles_allocated", "File handles allocated by the kernel (/proc/sys/fs/file-nr)."
)
FILE_HANDLES_MAXIMUM = gauge(
    "hypermesh_file_handles_maximum", "Most file handles the kernel will allocate (fs.file-max)."
)
ENTROPY_AVAILABLE_BITS = gauge(
    "hypermesh_entropy_available",
    "Bits of entropy the kernel's random pool holds (/proc/sys/kernel/random/entropy_avail).",
)
ENTROPY_POOL_SIZE_BITS = gauge(
    "hypermesh_entropy_pool_size",
    "Size of the kernel's random pool in bits (/proc/sys/kernel/random/poolsize).",
)
CONNTRACK_ENTRIES = gauge("hypermesh_nf_conntrack_entries", "Connections tracked by netfilter (nf_conntrack_count).")
CONNTRACK_LIMIT = gauge(
    "hypermesh_nf_conntrack_entries_limit",
    "Most connections netfilter will track (nf_conntrack_max); new ones are dropped past it.",
)
TIME = gauge("hypermesh_time_seconds", "The node's clock: Unix time of this reading.", "seconds")
GUEST_SECONDS = counter(
    "hypermesh_cpu_guest_seconds_total",
    "Seconds each CPU ran virtual machines' vCPUs, by mode user/nice (/proc/stat; already in cpu user/nice).",
    "seconds",
)


class KernelCollector:
    area = "kernel"
    sources = ("stat", "sys/fs/file-nr")
    reads_node_stats = True

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.node_stats
        k = stats.kernel
        families = []
        for value, desc in (
            (k.context_switches, CONTEXT_SWITCHES),
            (k.interrupts, INTERRUPTS),
            (k.forks, FORKS),
            (k.procs_running, PROCS_RUNNING),
            (k.procs_blocked, PROCS_BLOCKED),
            (k.boot_time_seconds, BOOT_TIME_SECONDS),
            (k.file_handles_allocated, FILE_HANDLES_ALLOCATED),
            (k.file_handles_maximum, FILE_HANDLES_MAXIMUM),
            (k.entropy_available_bits, ENTROPY_AVAILABLE_BITS),
            (k.entropy_pool_size_bits, ENTROPY_POOL_SIZE_BITS),
            (k.conntrack_entries, CONNTRACK_ENTRIES),
            (k.conntrack_limit, CONNTRACK_LIMIT),
        ):
            if value is not None:
                families.append(desc.value(value))
        families.append(TIME.value(stats.timestamp))
        if stats.cpu_guest:
            guest = GUEST_SECONDS.family()
            for cpu in stats.cpu_guest:
                label = str(cpu.cpu)
                guest.samples.append(((("cpu", label), ("mode", "user")), cpu.guest_seconds))
                guest.samples.append(((("cpu", label), ("mode", "nice")), cpu.guest_nice_seconds))
            families.append(guest)
        return families
