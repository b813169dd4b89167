"""The rest of /proc/diskstats (merges, queue, discard 4.18+, flush 5.5+) for the Sampler's devices."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Desc, Family
from hypermesh.agent.metrics.scrape import Scrape

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from hypermesh.model_node import DiskStats

__all__ = ["DiskstatsCollector"]


def _desc(name: str, kind: str, text: str, unit: str = "") -> Desc:
    return Desc(name, kind, f"{text} (/proc/diskstats)", unit)


# The DiskStats column -> its description (the disk collector exports the columns the Sampler reads).
_COLUMNS: tuple[tuple[Callable[[DiskStats], float | None], Desc], ...] = (
    (
        lambda r: r.reads_merged,
        _desc("hypermesh_disk_reads_merged_total", "counter", "Adjacent reads merged into one request."),
    ),
    (
        lambda r: r.writes_merged,
        _desc("hypermesh_disk_writes_merged_total", "counter", "Adjacent writes merged into one request."),
    ),
    (lambda r: r.io_now, _desc("hypermesh_disk_io_now", "gauge", "I/O requests in flight right now (queue depth).")),
    (
        lambda r: r.io_time_weighted_seconds,
        _desc(
            "hypermesh_disk_io_time_weighted_seconds_total",
            "counter",
            "Seconds spent on I/O weighted by requests in flight; rate() of it is the average queue size.",
            "seconds",
        ),
    ),
    (
        lambda r: r.discards_completed,
        _desc("hypermesh_disk_discards_completed_total", "counter", "Discards (TRIM) completed."),
    ),
    (
        lambda r: r.discards_merged,
        _desc("hypermesh_disk_discards_merged_total", "counter", "Adjacent discards merged."),
    ),
    (
        lambda r: r.discarded_bytes,
        _desc("hypermesh_disk_discarded_bytes_total", "counter", "Bytes discarded.", "bytes"),
    ),
    (
        lambda r: r.discard_time_seconds,
        _desc("hypermesh_disk_discard_time_seconds_total", "counter", "Seconds spent by all discards.", "seconds"),
    ),
    (
        lambda r: r.flush_requests,
        _desc("hypermesh_disk_flush_requests_total", "counter", "Cache flush requests completed."),
    ),
    (
        lambda r: r.flush_time_seconds,
        _desc(
            "hypermesh_disk_flush_requests_time_seconds_total",
            "counter",
            "Seconds spent by all flush requests.",
            "seconds",
        ),
    ),
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
            for device, row in devices:
                value = column(row)
                if value is not None:
                    family.samples.append(((("device", device),), float(value)))
            if family.samples:
                families.append(family)
        return families
