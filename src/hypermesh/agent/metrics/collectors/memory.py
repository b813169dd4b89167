"""Memory in use and available, from the Sampler's counters (/proc/meminfo; every field is the meminfo collector's)."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, gauge
from hypermesh.agent.metrics.scrape import Scrape

__all__ = ["MemoryCollector"]

TOTAL = gauge("hypermesh_memory_total_bytes", "Usable physical memory (MemTotal).", "bytes")
AVAILABLE = gauge(
    "hypermesh_memory_available_bytes", "Memory available for new work without swapping (MemAvailable).", "bytes"
)
USED = gauge("hypermesh_memory_used_bytes", "Memory in use: total minus available.", "bytes")
CACHED = gauge("hypermesh_memory_cached_bytes", "Page cache and reclaimable memory.", "bytes")
SWAP_USED = gauge("hypermesh_memory_swap_used_bytes", "Swap space in use.", "bytes")


class MemoryCollector:
    area = "memory"

    def collect(self, scrape: Scrape) -> list[Family]:
        memory = scrape.counters.memory
        return [
            TOTAL.value(memory.total_bytes),
            AVAILABLE.value(memory.available_bytes),
            USED.value(memory.used_bytes),
            CACHED.value(memory.cached_bytes),
            SWAP_USED.value(memory.swap_used_bytes),
        ]
