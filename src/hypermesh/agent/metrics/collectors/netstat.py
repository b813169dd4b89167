"""IP, ICMP, TCP and UDP counters of the kernel's SNMP MIBs (/proc/net/snmp, snmp6, netstat).

One counter family per protocol, ``hypermesh_netstat_<protocol>_total``, with the kernel's field name as the
``field`` label (``rate(hypermesh_netstat_tcp_total{field="RetransSegs"}[5m])``); the three current values are
gauges of their own. Field names as in include/uapi/linux/snmp.h and the MIBs (RFC 4293, 4022, 4113); what they
mean is in docs/metrics.md.
"""

from __future__ import annotations

from hypermesh.agent.metrics.family import Desc, Family, Labels, counter, gauge, snake_case
from hypermesh.agent.metrics.scrape import Scrape

__all__ = ["NetstatCollector"]

_FIELDS = {
    "Ip": "Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards "
    "InDelivers OutRequests OutDiscards OutNoRoutes ReasmTimeout ReasmReqds ReasmOKs ReasmFails FragOKs FragFails "
    "FragCreates OutTransmits",
    "Icmp": "InMsgs InErrors InCsumErrors InDestUnreachs InTimeExcds InEchos InEchoReps OutMsgs OutErrors "
    "OutRateLimitGlobal OutRateLimitHost OutDestUnreachs OutTimeExcds OutEchos OutEchoReps",
    "Tcp": "ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts "
    "InCsumErrors",
    "Udp": "InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors",
    "UdpLite": "InErrors",
    "Ip6": "InReceives InHdrErrors InTooBigErrors InNoRoutes InAddrErrors InUnknownProtos InTruncatedPkts InDiscards "
    "InDelivers OutForwDatagrams OutRequests OutDiscards OutNoRoutes ReasmFails FragFails InOctets OutOctets",
    "Icmp6": "InMsgs InErrors OutMsgs OutErrors InCsumErrors InDestUnreachs OutDestUnreachs",
    "Udp6": "InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors",
    "UdpLite6": "InErrors",
    "TcpExt": "SyncookiesSent SyncookiesRecv SyncookiesFailed EmbryonicRsts PruneCalled RcvPruned OfoPruned TW "
    "TWKilled ListenOverflows ListenDrops TCPLostRetransmit TCPFastRetrans TCPSlowStartRetrans TCPTimeouts "
    "TCPSynRetrans TCPAbortOnData TCPAbortOnClose TCPAbortOnMemory TCPAbortOnTimeout TCPAbortOnLinger "
    "TCPAbortFailed TCPMemoryPressures TCPBacklogDrop TCPRcvQDrop TCPOFOQueue TCPOFODrop TCPZeroWindowDrop "
    "TCPRetransFail TCPReqQFullDrop TCPReqQFullDoCookies TCPKeepAlive TCPDSACKRecv TCPSackRecovery "
    "TCPSpuriousRTOs TCPOrigDataSent DelayedACKs DelayedACKLost",
    "IpExt": "InNoRoutes InTruncatedPkts InMcastPkts OutMcastPkts InBcastPkts OutBcastPkts InOctets OutOctets "
    "InCsumErrors ReasmOverlaps",
}
_SOURCE = {
    "Ip6": "/proc/net/snmp6",
    "Icmp6": "/proc/net/snmp6",
    "Udp6": "/proc/net/snmp6",
    "UdpLite6": "/proc/net/snmp6",
    "TcpExt": "/proc/net/netstat",
    "IpExt": "/proc/net/netstat",
}
# The current values among the fields: gauges, each a family of its own (the rest are counters).
_GAUGES = {
    ("Ip", "Forwarding"): gauge(
        "hypermesh_netstat_ip_forwarding",
        "1 if the node forwards IPv4 packets (a router), 2 if not (/proc/net/snmp Ip Forwarding).",
    ),
    ("Ip", "DefaultTTL"): gauge(
        "hypermesh_netstat_ip_default_ttl",
        "Default time-to-live of outgoing IPv4 packets (/proc/net/snmp Ip DefaultTTL).",
    ),
    ("Tcp", "CurrEstab"): gauge(
        "hypermesh_netstat_tcp_current_established",
        "TCP connections in ESTABLISHED or CLOSE-WAIT now (/proc/net/snmp Tcp CurrEstab).",
    ),
}
# protocol -> (its counter family, [(field, labels)]): the label tuples are built once and reused every scrape.
_COUNTERS: dict[str, tuple[Desc, list[tuple[str, Labels]]]] = {
    protocol: (
        counter(
            f"hypermesh_netstat_{snake_case(protocol)}_total",
            f"{protocol} counters from {_SOURCE.get(protocol, '/proc/net/snmp')}, by the kernel's field name "
            "(include/uapi/linux/snmp.h).",
        ),
        [(field, (("field", field),)) for field in fields.split() if (protocol, field) not in _GAUGES],
    )
    for protocol, fields in _FIELDS.items()
}


class NetstatCollector:
    area = "netstat"
    sources = ("net/snmp", "net/netstat", "net/snmp6")
    reads_node_stats = True

    def collect(self, scrape: Scrape) -> list[Family]:
        snmp = scrape.node_stats.snmp
        families = []
        for protocol, (desc, fields) in _COUNTERS.items():
            values = snmp.get(protocol)
            if not values:
                continue
            family = desc.family()
            for field, labels in fields:
                value = values.get(field)
                if value is not None:
                    family.samples.append((labels, float(value)))
            families.append(family)
        for (protocol, field), desc in _GAUGES.items():
            value = snmp.get(protocol, {}).get(field)
            if value is not None:
                families.append(desc.value(float(value)))
        return families
