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
TCP_ORPHAN = gauge("hypermesh_sockstat_tcp_orphan", "TCP sockets no longer attached to a process. (/proc/net/sockstat)")
TCP_TIME_WAIT = gauge("hypermesh_sockstat_tcp_time_wait", "TCP sockets in TIME-WAIT. (/proc/net/sockstat)")
TCP_ALLOCATED = gauge("hypermesh_sockstat_tcp_allocated", "TCP sockets allocated (any state). (/proc/net/sockstat)")


class SockstatCollector:
    area = "sockstat"
    sources = ("net/sockstat", "net/sockstat6")
    reads_node_stats = True

    def collect(self, scrape: Scrape) -> list[Family]:
        sockstat = scrape.node_stats.sockstat
        if sockstat.sockets_used is None and not sockstat.protocols:
            raise NoData("no /proc/net/sockstat")
        families = []
        if sockstat.sockets_used is not None:
            families.append(SOCKETS_USED.value(float(sockstat.sockets_used)))
        inuse = INUSE.family()
        memory = MEMORY.family()
        tcp = None
        for line in sockstat.protocols:
            label = (("protocol", line.protocol),)
            if line.inuse is not None:
                inuse.samples.append((label, float(line.inuse)))
            if line.memory_bytes is not None:
                memory.samples.append((label, float(line.memory_bytes)))
            if line.protocol == "TCP":
                tcp = line
        families.extend((inuse, memory))
        if tcp is not None:
            for value, desc in ((tcp.orphan, TCP_ORPHAN), (tcp.tw, TCP_TIME_WAIT), (tcp.alloc, TCP_ALLOCATED)):
                if value is not None:
                    families.append(desc.value(float(value)))
        return families
