"""What the agent's ``xdp:INTERFACE`` eBPF programs export: packets and bytes received, by protocol."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hypermesh.ebpf.programs.xdp import XdpCounts

__all__ = ["export"]

PACKETS = counter(
    "hypermesh_ebpf_xdp_packets_total",
    "Packets the interface received since the agent attached its XDP program, by protocol.",
)
BYTES = counter(
    "hypermesh_ebpf_xdp_bytes_total",
    "Bytes (whole frames) the interface received since the agent attached its XDP program, by protocol.",
    "bytes",
)


def export(program: str, reading: XdpCounts) -> list[Family]:
    packets, octets = PACKETS.family(), BYTES.family()
    for protocol, count in reading.packets.items():
        labels = (("interface", reading.interface), ("protocol", protocol))
        packets.samples.append((labels, float(count)))
        octets.samples.append((labels, float(reading.bytes[protocol])))
    return [packets, octets]
