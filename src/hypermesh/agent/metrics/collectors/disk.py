"""Block device I/O counters per device, from the Sampler's counters (/proc/diskstats; the rest is diskstats')."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter, per_row
from hypermesh.agent.metrics.scrape import Scrape

__all__ = ["DiskCollector"]

_COLUMNS = (
    (counter("hypermesh_disk_reads_completed_total", "Reads completed (/proc/diskstats)."), "read_ops"),
    (counter("hypermesh_disk_read_bytes_total", "Bytes read.", "bytes"), "read_bytes"),
    (
        counter("hypermesh_disk_read_time_seconds_total", "Seconds spent by all reads.", "seconds"),
        "read_time_seconds",
    ),
    (counter("hypermesh_disk_writes_completed_total", "Writes completed."), "write_ops"),
    (counter("hypermesh_disk_written_bytes_total", "Bytes written.", "bytes"), "write_bytes"),
    (
        counter("hypermesh_disk_write_time_seconds_total", "Seconds spent by all writes.", "seconds"),
        "write_time_seconds",
    ),
    (
        counter(
            "hypermesh_disk_io_time_seconds_total",
            "Seconds the device had I/O in flight (its busy time).",
            "seconds",
        ),
        "busy_seconds",
    ),
)


class DiskCollector:
    area = "disk"
    sources = ("diskstats",)

    def collect(self, scrape: Scrape) -> list[Family]:
        return per_row(scrape.counters.disks, _COLUMNS, "device")
