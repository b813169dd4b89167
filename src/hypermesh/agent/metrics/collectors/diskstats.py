"""The rest of /proc/diskstats (merges, queue, discard 4.18+, flush 5.5+) for the Sampler's devices."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Desc, Family
from hypermesh.agent.metrics.scrape import Scrape

__all__ = ["DiskstatsCollector"]

# NodeStats.diskstats column -> its description (the disk collector exports the columns the Sampler reads).
_COLUMNS = tuple(
    (column, Desc(name, kind, f"{text} (/proc/diskstats)", unit))
    for column, name, kind, text, unit in (
        ("reads_merged", "hypermesh_disk_reads_merged_total", "counter", "Adjacent reads merged into one request.", ""),
        (
            "writes_merged",
            "hypermesh_disk_writes_merged_total",
            "counter",
            "Adjacent writes merged into one request.",
            "",
        ),
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
)


class DiskstatsCollector:
    area = "diskstats"
    sources = ("diskstats",)
    reads_node_stats = True

    def collect(self, scrape: Scrape) -> list[Family]:
        devices = sorted(scrape.node_stats.diskstats.items())
        families = []
        for column, desc in _COLUMNS:
            family = desc.family()
            for device, values in devices:
                value = values.get(column)
                if value is not None:
                    family.samples.append(((("device", device),), float(value)))
            if family.samples:
                families.append(family)
        return families
