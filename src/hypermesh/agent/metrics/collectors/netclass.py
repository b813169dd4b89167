"""Each network interface's state from sysfs (/sys/class/net): up, carrier, MTU, queue, carrier flaps, errors."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter, gauge
from hypermesh.agent.metrics.scrape import NoData, Scrape

__all__ = ["NetclassCollector"]

INFO = gauge("hypermesh_network_info", "Always 1; labels give each interface's MAC address, operstate, duplex.")
UP = gauge(
    "hypermesh_network_up",
    "1 if the interface is up: IFF_UP and operstate up, or operstate unknown (loopback, drivers that report none) "
    "with a carrier.",
)
CARRIER = gauge("hypermesh_network_carrier", "1 if the link has a carrier (cable, peer); absent while down.")
MTU = gauge("hypermesh_network_mtu_bytes", "Maximum transmission unit.", "bytes")
QUEUE = gauge("hypermesh_network_transmit_queue_length", "Transmit queue length (txqueuelen), packets.")
CHANGES = counter("hypermesh_network_carrier_changes_total", "Times the link went up or down.")
UPS = counter("hypermesh_network_carrier_up_changes_total", "Times the link came up.")
DOWNS = counter("hypermesh_network_carrier_down_changes_total", "Times the link went down.")
# InterfaceStats.error_counters key (statistics/<name>) -> its description.
_ERRORS = tuple(
    (key, counter(name, text))
    for key, name, text in (
        (
            "rx_crc_errors",
            "hypermesh_network_receive_crc_errors_total",
            "Frames received with a bad checksum (cable, optics, duplex mismatch).",
        ),
        ("rx_length_errors", "hypermesh_network_receive_length_errors_total", "Frames received with a bad length."),
        (
            "rx_missed_errors",
            "hypermesh_network_receive_missed_errors_total",
            "Frames the NIC dropped for lack of host buffers (receive ring full).",
        ),
        ("rx_over_errors", "hypermesh_network_receive_over_errors_total", "Receive ring or FIFO overruns."),
        (
            "rx_nohandler",
            "hypermesh_network_receive_nohandler_total",
            "Packets dropped because no protocol handler wanted them (e.g. on an inactive bond slave).",
        ),
        ("tx_aborted_errors", "hypermesh_network_transmit_aborted_errors_total", "Transmissions aborted."),
        ("tx_heartbeat_errors", "hypermesh_network_transmit_heartbeat_errors_total", "Heartbeat (SQE) errors."),
        (
            "tx_window_errors",
            "hypermesh_network_transmit_window_errors_total",
            "Late collisions (outside the window).",
        ),
    )
)


class NetclassCollector:
    area = "netclass"
    sources = ("net/dev",)
    reads_node_stats = True

    def collect(self, scrape: Scrape) -> list[Family]:
        interfaces = scrape.node_stats.interfaces
        if not interfaces:
            raise NoData("no interface in /sys/class/net")
        info, up, carrier, mtu, queue, changes, ups, downs = (
            desc.family() for desc in (INFO, UP, CARRIER, MTU, QUEUE, CHANGES, UPS, DOWNS)
        )
        for iface in interfaces:
            label = (("interface", iface.name),)
            info.samples.append(
                (
                    (
                        ("address", iface.address),
                        ("duplex", iface.duplex),
                        ("interface", iface.name),
                        ("operstate", iface.operstate),
                    ),
                    1.0,
                )
            )
            up.samples.append((label, 1.0 if iface.up else 0.0))
            for family, value in (
                (carrier, iface.carrier),
                (mtu, iface.mtu),
                (queue, iface.tx_queue_length),
                (changes, iface.carrier_changes),
                (ups, iface.carrier_up_changes),
                (downs, iface.carrier_down_changes),
            ):
                if value is not None:
                    family.samples.append((label, float(value)))
        families = [info, up, carrier, mtu, queue, changes, ups, downs]
        for key, desc in _ERRORS:
            family = desc.family()
            for iface in interfaces:
                value = iface.error_counters.get(key)
                if value is not None:
                    family.samples.append(((("interface", iface.name),), float(value)))
            if family.samples:
                families.append(family)
        return families
