"""Network traffic counters per interface, from the Sampler's counters (/proc/net/dev; the rest is netdev's)."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter, per_row
from hypermesh.agent.metrics.scrape import Scrape

__all__ = ["NetworkCollector"]

_COLUMNS = (
    (counter("hypermesh_network_receive_bytes_total", "Bytes received (/proc/net/dev).", "bytes"), "rx_bytes"),
    (counter("hypermesh_network_receive_packets_total", "Packets received."), "rx_packets"),
    (counter("hypermesh_network_receive_errors_total", "Receive errors."), "rx_errors"),
    (counter("hypermesh_network_receive_drops_total", "Received packets dropped."), "rx_drops"),
    (counter("hypermesh_network_transmit_bytes_total", "Bytes transmitted.", "bytes"), "tx_bytes"),
    (counter("hypermesh_network_transmit_packets_total", "Packets transmitted."), "tx_packets"),
    (counter("hypermesh_network_transmit_errors_total", "Transmit errors."), "tx_errors"),
    (counter("hypermesh_network_transmit_drops_total", "Transmitted packets dropped."), "tx_drops"),
)


class NetworkCollector:
    area = "network"
    sources = ("net/dev",)

    def collect(self, scrape: Scrape) -> list[Family]:
        return per_row(scrape.counters.network, _COLUMNS, "interface")
