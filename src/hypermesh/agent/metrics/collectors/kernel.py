"""Kernel-wide activity: /proc/stat totals, file handles, entropy, conntrack, guest CPU time, the node's clock."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter, gauge
from hypermesh.agent.metrics.scrape import Scrape

__all__ = ["KernelCollector"]

# NodeStats.kernel key -> its description.
_ROWS = (
    ("context_switches", counter("hypermesh_context_switches_total", "Context switches since boot (/proc/stat ctxt).")),
    ("interrupts", counter("hypermesh_interrupts_total", "Interrupts serviced since boot (/proc/stat intr).")),
    (
        "forks",
        counter("hypermesh_forks_total", "Processes and threads created since boot (/proc/stat processes)."),
    ),
    ("procs_running", gauge("hypermesh_procs_running", "Tasks runnable right now (/proc/stat procs_running).")),
    ("procs_blocked", gauge("hypermesh_procs_blocked", "Tasks blocked on I/O right now (/proc/stat procs_blocked).")),
    (
        "boot_time_seconds",
        gauge("hypermesh_boot_time_seconds", "Unix time the node booted (/proc/stat btime).", "seconds"),
    ),
    (
        "file_handles_allocated",
        gauge("hypermesh_file_handles_allocated", "File handles allocated by the kernel (/proc/sys/fs/file-nr)."),
    ),
    (
        "file_handles_maximum",
        gauge("hypermesh_file_handles_maximum", "Most file handles the kernel will allocate (fs.file-max)."),
    ),
    (
        "entropy_available_bits",
        gauge(
            "hypermesh_entropy_available",
            "Bits of entropy the kernel's random pool holds (/proc/sys/kernel/random/entropy_avail).",
        ),
    ),
    (
        "entropy_pool_size_bits",
        gauge(
            "hypermesh_entropy_pool_size",
            "Size of the kernel's random pool in bits (/proc/sys/kernel/random/poolsize).",
        ),
    ),
    (
        "conntrack_entries",
        gauge("hypermesh_nf_conntrack_entries", "Connections tracked by netfilter (nf_conntrack_count)."),
    ),
    (
        "conntrack_limit",
        gauge(
            "hypermesh_nf_conntrack_entries_limit",
            "Most connections netfilter will track (nf_conntrack_max); new ones are dropped past it.",
        ),
    ),
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
        kernel = stats.kernel
        families = []
        for key, desc in _ROWS:
            value = kernel.get(key)
            if value is not None:
                families.append(desc.value(value))
        families.append(TIME.value(stats.timestamp))
        if stats.cpu_guest:
            guest = GUEST_SECONDS.family()
            for cpu, (user, nice) in sorted(stats.cpu_guest.items()):
                label = str(cpu)
                guest.samples.append(((("cpu", label), ("mode", "user")), user))
                guest.samples.append(((("cpu", label), ("mode", "nice")), nice))
            families.append(guest)
        return families
