"""Per-CPU packet processing (/proc/net/softnet_stat): drops and squeezes mean the CPU could not keep up."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter
from hypermesh.agent.metrics.scrape import NoData, Scrape

__all__ = ["SoftnetCollector"]

# In the order of NodeStats.softnet's columns.
_COLUMNS = (
    counter("hypermesh_softnet_processed_total", "Packets processed by each CPU's network stack."),
    counter("hypermesh_softnet_dropped_total", "Packets dropped because the CPU's backlog queue was full."),
    counter(
        "hypermesh_softnet_times_squeezed_total",
        "Times the CPU ran out of budget or time with packets still waiting (net.core.netdev_budget).",
    ),
)


class SoftnetCollector:
    area = "softnet"
    sources = ("net/softnet_stat",)
    reads_node_stats = True

    def collect(self, scrape: Scrape) -> list[Family]:
        softnet = scrape.node_stats.softnet
        if not softnet:
            raise NoData("no /proc/net/softnet_stat")
        cpus = sorted(softnet.items())
        families = []
        for column, desc in enumerate(_COLUMNS):
            family = desc.family()
            for cpu, values in cpus:
                family.samples.append(((("cpu", str(cpu)),), float(values[column])))
            families.append(family)
        return families
