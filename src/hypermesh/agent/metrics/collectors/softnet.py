"""Per-CPU packet processing (/proc/net/softnet_stat): drops and squeezes mean the CPU could not keep up."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter
from hypermesh.agent.metrics.scrape import NoData, Scrape

__all__ = ["SoftnetCollector"]

PROCESSED = counter("hypermesh_softnet_processed_total", "Packets processed by each CPU's network stack.")
DROPPED = counter("hypermesh_softnet_dropped_total", "Packets dropped because the CPU's backlog queue was full.")
SQUEEZED = counter(
    "hypermesh_softnet_times_squeezed_total",
    "Times the CPU ran out of budget or time with packets still waiting (net.core.netdev_budget).",
)


class SoftnetCollector:
    area = "softnet"
    sources = ("net/softnet_stat",)
    reads_node_stats = True

    def collect(self, scrape: Scrape) -> list[Family]:
        softnet = scrape.node_stats.softnet
        if not softnet:
            raise NoData("no /proc/net/softnet_stat")
        processed, dropped, squeezed = PROCESSED.family(), DROPPED.family(), SQUEEZED.family()
        for row in softnet:
            label = (("cpu", str(row.cpu)),)
            processed.samples.append((label, float(row.processed)))
            dropped.samples.append((label, float(row.dropped)))
            squeezed.samples.append((label, float(row.time_squeeze)))
        return [processed, dropped, squeezed]
