"""Sockets in use by protocol and socket memory (/proc/net/sockstat and sockstat6)."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, gauge
from hypermesh.agent.metrics.scrape import NoData, Scrape

__all__ = ["SockstatCollector"]

SOCKETS_USED = gauge("hypermesh_sockstat_sockets_used", "Sockets of all kinds in use (/proc/net/sockstat).")
INUSE = gauge("hypermesh_sockstat_inuse", "Sockets in use, by protocol (/proc/net/sockstat, sockstat6).")
MEMORY = gauge(
    "hypermesh_sockstat_memory_bytes",
    "Memory held by sockets' buffers, by protocol (TCP/UDP mem pages; FRAG reassembly memory).",
    "bytes",
)
# NodeStats.sockstat["TCP"] field -> its description.
_TCP = tuple(
    (field, gauge(name, f"{text} (/proc/net/sockstat)"))
    for field, name, text in (
        ("orphan", "hypermesh_sockstat_tcp_orphan", "TCP sockets no longer attached to a process."),
        ("tw", "hypermesh_sockstat_tcp_time_wait", "TCP sockets in TIME-WAIT."),
        ("alloc", "hypermesh_sockstat_tcp_allocated", "TCP sockets allocated (any state)."),
    )
)


class SockstatCollector:
    area = "sockstat"
    sources = ("net/sockstat", "net/sockstat6")
    reads_node_stats = True

    def collect(self, scrape: Scrape) -> list[Family]:
        sockstat = scrape.node_stats.sockstat
        if not sockstat:
            raise NoData("no /proc/net/sockstat")
        families = []
        used = sockstat.get("sockets", {}).get("used")
        if used is not None:
            families.append(SOCKETS_USED.value(float(used)))
        inuse = INUSE.family()
        memory = MEMORY.family()
        for protocol, fields in sorted(sockstat.items()):
            if "inuse" in fields and protocol != "sockets":
                inuse.samples.append(((("protocol", protocol),), float(fields["inuse"])))
            mem = fields.get("mem_bytes", fields.get("memory"))
            if mem is not None:
                memory.samples.append(((("protocol", protocol),), float(mem)))
        families.extend((inuse, memory))
        tcp = sockstat.get("TCP", {})
        for field, desc in _TCP:
            if field in tcp:
                families.append(desc.value(float(tcp[field])))
        return families
