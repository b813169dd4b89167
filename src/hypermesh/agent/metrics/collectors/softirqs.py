"""Softirqs handled per CPU and type (/proc/softirqs): NET_RX piling on one CPU shows an RSS imbalance."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter
from hypermesh.agent.metrics.scrape import NoData, Scrape

__all__ = ["SoftirqsCollector"]

SOFTIRQS = counter("hypermesh_softirqs_total", "Softirqs handled since boot, by CPU and type (/proc/softirqs).")


class SoftirqsCollector:
    area = "softirqs"
    sources = ("softirqs",)
    reads_node_stats = True

    def collect(self, scrape: Scrape) -> list[Family]:
        softirqs = scrape.node_stats.softirqs
        if not softirqs:
            raise NoData("no /proc/softirqs")
        family = SOFTIRQS.family()
        for kind, counts in softirqs.items():
            for cpu, count in enumerate(counts):
                family.samples.append(((("cpu", str(cpu)), ("type", kind)), float(count)))
        return [family]
