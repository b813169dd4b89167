"""Selected /proc/vmstat event counters (mm/vmstat.c), under their kernel names."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter
from hypermesh.agent.metrics.scrape import Scrape

__all__ = ["VmstatCollector"]

# Worth a dashboard or an alert (node_exporter exports the first seven by default).
_COUNTERS = {
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

_ROWS = tuple(
    (field, counter(f"hypermesh_vmstat_{field}_total", f"{field} (/proc/vmstat): {text}"))
    for field, text in _COUNTERS.items()
)


class VmstatCollector:
    area = "vmstat"
    sources = ("vmstat",)
    reads_node_stats = True

    def collect(self, scrape: Scrape) -> list[Family]:
        vmstat = scrape.node_stats.vmstat
        families = []
        for field, desc in _ROWS:
            value = vmstat.get(field)
            if value is not None:
                families.append(desc.value(float(value)))
        return families
