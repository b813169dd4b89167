"""Every /proc/meminfo field under its kernel name: bytes, except the HugePages_* counts."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Desc, Family, gauge, snake_case
from hypermesh.agent.metrics.scrape import Scrape

__all__ = ["MeminfoCollector"]

_HELP = {
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
_NAMES = {
    "SReclaimable": "slab_reclaimable",
    "SUnreclaim": "slab_unreclaimable",
    "SecPageTables": "secondary_page_tables",
    "HugePages_Total": "huge_pages",
}


def _desc(field: str) -> Desc:
    text = f"{field} (/proc/meminfo): {_HELP.get(field, 'see Documentation/filesystems/proc.rst.')}"
    part = _NAMES.get(field) or snake_case(field)
    if field.startswith("HugePages_"):
        return gauge(f"hypermesh_meminfo_{part}", text)
    return gauge(f"hypermesh_meminfo_{part}_bytes", text, "bytes")


class MeminfoCollector:
    area = "meminfo"
    sources = ("meminfo",)
    reads_node_stats = True

    def __init__(self) -> None:
        self._descs: dict[str, Desc] = {}  # field -> its description, built on first sight

    def collect(self, scrape: Scrape) -> list[Family]:
        descs = self._descs
        families = []
        for field, value in scrape.node_stats.meminfo.items():
            desc = descs.get(field)
            if desc is None:
                desc = _desc(field)
                if len(descs) < 1000:  # a kernel has ~60 fields; the bound only guards against a broken file
                    descs[field] = desc
            families.append(desc.value(float(value)))
        return families
