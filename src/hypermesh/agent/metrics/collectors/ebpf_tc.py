"""What the agent's ``tc:INTERFACE`` eBPF programs export: packets and bytes by direction and protocol."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hypermesh.ebpf.programs.tc import TcCounts

__all__ = ["export"]

PACKETS = counter(
    "hypermesh_ebpf_tc_packets_total",
    "Packets through the interface since the agent attached its TC programs, by direction and protocol.",
)
BYTES = counter(
    "hypermesh_ebpf_tc_bytes_total",
    "Bytes (whole frames) through the interface since the agent attached its TC programs, by direction and protocol.",
    "bytes",
)


def export(program: str, reading: TcCounts) -> list[Family]:
    packets, octets = PACKETS.family(), BYTES.family()
    for direction, counts in (("ingress", reading.ingress), ("egress", reading.egress)):
        if counts is None:
            continue
        for protocol, count in counts.packets.items():
            labels = (("interface", reading.interface), ("direction", direction), ("protocol", protocol))
            packets.samples.append((labels, float(count)))
            octets.samples.append((labels, float(counts.bytes[protocol])))
    return [packets, octets]
