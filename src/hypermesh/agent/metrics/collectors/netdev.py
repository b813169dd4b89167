"""The other half of /proc/net/dev's 16 columns, per interface (the network collector exports the first half)."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter
from hypermesh.agent.metrics.scrape import Scrape

__all__ = ["NetdevCollector"]

# NodeStats.net_dev column -> its description.
_COLUMNS = tuple(
    (column, counter(name, f"{text} (/proc/net/dev)"))
    for column, name, text in (
        ("receive_fifo", "hypermesh_network_receive_fifo_total", "Receive FIFO (ring buffer) overruns."),
        ("receive_frame", "hypermesh_network_receive_frame_total", "Received frames with framing or CRC errors."),
        ("receive_compressed", "hypermesh_network_receive_compressed_total", "Compressed packets received."),
        ("receive_multicast", "hypermesh_network_receive_multicast_total", "Multicast packets received."),
        ("transmit_fifo", "hypermesh_network_transmit_fifo_total", "Transmit FIFO errors."),
        ("transmit_collisions", "hypermesh_network_transmit_collisions_total", "Collisions while transmitting."),
        ("transmit_carrier", "hypermesh_network_transmit_carrier_total", "Carrier losses while transmitting."),
        ("transmit_compressed", "hypermesh_network_transmit_compressed_total", "Compressed packets sent."),
    )
)


class NetdevCollector:
    area = "netdev"
    sources = ("net/dev",)
    reads_node_stats = True

    def collect(self, scrape: Scrape) -> list[Family]:
        interfaces = sorted(scrape.node_stats.net_dev.items())
        families = []
        for column, desc in _COLUMNS:
            family = desc.family()
            for interface, values in interfaces:
                value = values.get(column)
                if value is not None:
                    family.samples.append(((("interface", interface),), float(value)))
            if family.samples:
                families.append(family)
        return families
