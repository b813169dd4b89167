"""What ``/metrics`` says: one collector per area, a runner that reports how each did, one writer for both formats.

- ``family``: ``Family`` (a name, type, help, unit and the samples of one scrape) and ``Desc`` (what a family is,
  declared once per collector; ``desc.value(v)`` emits a one-sample family in one expression).
- ``scrape``: ``Scrape``, everything one scrape reads, each source at most once, and ``NoData``.
- ``collectors/``: one file per area (cpu, memory, pressure, disk, network, ebpf, the node stats areas from
  meminfo to uname, assets, allocations, gpu, agent), each built from the Sampler's raw counters or node stats: monotonic ``_total``
  counters stay counters (Prometheus computes rates), everything in base units (seconds, bytes, ratios 0..1).
- ``runner``: ``collect()`` runs them and adds per-collector ``hypermesh_scrape_collector_success`` and
  ``hypermesh_scrape_collector_duration_seconds``, as node_exporter does; a failing collector drops its own
  families, never the scrape; one with nothing here (``NoData``) is not a failure.
- ``exposition``: ``TextWriter`` (Prometheus text 0.0.4 and OpenMetrics 1.0) and ``wants_openmetrics()``.
"""

from __future__ import annotations

from hypermesh.agent.metrics.collectors import (
    AgentCollector,
    AllocationsCollector,
    ArpCollector,
    AssetsCollector,
    CpuCollector,
    CpufreqCollector,
    CpuidleCollector,
    DiskCollector,
    DiskstatsCollector,
    EbpfCollector,
    FilesystemCollector,
    GpuCollector,
    KernelCollector,
    MeminfoCollector,
    MemoryCollector,
    NetclassCollector,
    NetdevCollector,
    NetstatCollector,
    NetworkCollector,
    PressureCollector,
    PressureCpuIoCollector,
    SockstatCollector,
    SoftirqsCollector,
    SoftnetCollector,
    UnameCollector,
    VmstatCollector,
    default_collectors,
)
from hypermesh.agent.metrics.exposition import OPENMETRICS_TYPE, TEXT_TYPE, TextWriter, wants_openmetrics
from hypermesh.agent.metrics.family import Desc, Family, Labels, counter, gauge
from hypermesh.agent.metrics.runner import NODE_READ, collect
from hypermesh.agent.metrics.scrape import NoData, Scrape

__all__ = [
    "NODE_READ",
    "OPENMETRICS_TYPE",
    "TEXT_TYPE",
    "AgentCollector",
    "AllocationsCollector",
    "ArpCollector",
    "AssetsCollector",
    "CpuCollector",
    "CpufreqCollector",
    "CpuidleCollector",
    "Desc",
    "DiskCollector",
    "DiskstatsCollector",
    "EbpfCollector",
    "Family",
    "FilesystemCollector",
    "GpuCollector",
    "KernelCollector",
    "Labels",
    "MeminfoCollector",
    "MemoryCollector",
    "NetclassCollector",
    "NetdevCollector",
    "NetstatCollector",
    "NetworkCollector",
    "NoData",
    "PressureCollector",
    "PressureCpuIoCollector",
    "Scrape",
    "SockstatCollector",
    "SoftirqsCollector",
    "SoftnetCollector",
    "TextWriter",
    "UnameCollector",
    "VmstatCollector",
    "collect",
    "counter",
    "default_collectors",
    "gauge",
    "wants_openmetrics",
]
