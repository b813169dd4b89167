"""Neighbour (ARP) entries per interface (/proc/net/arp): a full table drops traffic to new neighbours."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, gauge
from hypermesh.agent.metrics.scrape import Scrape

__all__ = ["ArpCollector"]

ENTRIES = gauge("hypermesh_arp_entries", "IPv4 neighbour (ARP) entries, by interface.")


class ArpCollector:
    area = "arp"
    sources = ("net/arp",)
    reads_node_stats = True

    def collect(self, scrape: Scrape) -> list[Family]:
        family = ENTRIES.family()
        for interface, count in sorted(scrape.node_stats.arp_entries.items()):
            family.samples.append(((("interface", interface),), float(count)))
        return [family]
