"""The other half of /proc/net/dev's 16 columns, per interface (the network collector exports the first half)."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Desc, Family, counter
from hypermesh.agent.metrics.scrape import Scrape

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from hypermesh.model_node import NetDevStats

__all__ = ["NetdevCollector"]


def _counter(name: str, text: str) -> Desc:
    return counter(name, f"{text} (/proc/net/dev)")


# The NetDevStats column -> its description.
_COLUMNS: tuple[tuple[Callable[[NetDevStats], int | None], Desc], ...] = (
    (
        lambda r: r.receive_fifo,
        _counter("hypermesh_network_receive_fifo_total", "Receive FIFO (ring buffer) overruns."),
    ),
    (
        lambda r: r.receive_frame,
        _counter("hypermesh_network_receive_frame_total", "Received frames with framing or CRC errors."),
    ),
    (
        lambda r: r.receive_compressed,
        _counter("hypermesh_network_receive_compressed_total", "Compressed packets received."),
    ),
    (
        lambda r: r.receive_multicast,
        _counter("hypermesh_network_receive_multicast_total", "Multicast packets received."),
    ),
    (lambda r: r.transmit_fifo, _counter("hypermesh_network_transmit_fifo_total", "Transmit FIFO errors.")),
    (
        lambda r: r.transmit_collisions,
        _counter("hypermesh_network_transmit_collisions_total", "Collisions while transmitting."),
    ),
    (
        lambda r: r.transmit_carrier,
        _counter("hypermesh_network_transmit_carrier_total", "Carrier losses while transmitting."),
    ),
    (
        lambda r: r.transmit_compressed,
        _counter("hypermesh_network_transmit_compressed_total", "Compressed packets sent."),
    ),
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
            for interface, row in interfaces:
                value = column(row)
                if value is not None:
                    family.samples.append(((("interface", interface),), float(value)))
            if family.samples:
                families.append(family)
        return families
