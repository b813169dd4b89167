"""One collector per area, one file each; ``default_collectors()`` is the agent's list, in /metrics order.

A collector is a class with an ``area`` (its ``collector`` label) and ``collect(scrape) -> list[Family]``; it may
name the procfs ``sources`` whose being unreadable makes it fail and say ``reads_node_stats = True`` (see
``hypermesh.agent.metrics.runner``). It raises ``NoData`` when this host has none of what it exports.
"""

from __future__ import annotations

from hypermesh.agent.metrics.collectors.agent import AgentCollector
from hypermesh.agent.metrics.collectors.allocations import AllocationsCollector
from hypermesh.agent.metrics.collectors.arp import ArpCollector
from hypermesh.agent.metrics.collectors.assets import AssetsCollector
from hypermesh.agent.metrics.collectors.cpu import CpuCollector
from hypermesh.agent.metrics.collectors.cpufreq import CpufreqCollector
from hypermesh.agent.metrics.collectors.cpuidle import CpuidleCollector
from hypermesh.agent.metrics.collectors.disk import DiskCollector
from hypermesh.agent.metrics.collectors.diskstats import DiskstatsCollector
from hypermesh.agent.metrics.collectors.ebpf import EbpfCollector
from hypermesh.agent.metrics.collectors.filesystem import FilesystemCollector
from hypermesh.agent.metrics.collectors.gpu import GpuCollector
from hypermesh.agent.metrics.collectors.kernel import KernelCollector
from hypermesh.agent.metrics.collectors.meminfo import MeminfoCollector
from hypermesh.agent.metrics.collectors.memory import MemoryCollector
from hypermesh.agent.metrics.collectors.netclass import NetclassCollector
from hypermesh.agent.metrics.collectors.netdev import NetdevCollector
from hypermesh.agent.metrics.collectors.netstat import NetstatCollector
from hypermesh.agent.metrics.collectors.network import NetworkCollector
from hypermesh.agent.metrics.collectors.pressure import PressureCollector
from hypermesh.agent.metrics.collectors.pressure_cpu_io import PressureCpuIoCollector
from hypermesh.agent.metrics.collectors.sockstat import SockstatCollector
from hypermesh.agent.metrics.collectors.softirqs import SoftirqsCollector
from hypermesh.agent.metrics.collectors.softnet import SoftnetCollector
from hypermesh.agent.metrics.collectors.uname import UnameCollector
from hypermesh.agent.metrics.collectors.vmstat import VmstatCollector

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hypermesh.agent.metrics.runner import Collector

__all__ = [
    "AgentCollector",
    "AllocationsCollector",
    "ArpCollector",
    "AssetsCollector",
    "CpuCollector",
    "CpufreqCollector",
    "CpuidleCollector",
    "DiskCollector",
    "DiskstatsCollector",
    "EbpfCollector",
    "FilesystemCollector",
    "GpuCollector",
    "KernelCollector",
    "MeminfoCollector",
    "MemoryCollector",
    "NetclassCollector",
    "NetdevCollector",
    "NetstatCollector",
    "NetworkCollector",
    "PressureCollector",
    "PressureCpuIoCollector",
    "SockstatCollector",
    "SoftirqsCollector",
    "SoftnetCollector",
    "UnameCollector",
    "VmstatCollector",
    "default_collectors",
]


def default_collectors(version: str) -> list[Collector]:
    # The order is /metrics' order. The ones from meminfo to uname read the node stats, read once per scrape just
    # before meminfo (the runner's node_read step).
    return [
        CpuCollector(),
        MemoryCollector(),
        PressureCollector(),
        DiskCollector(),
        NetworkCollector(),
        EbpfCollector(),
        MeminfoCollector(),
        VmstatCollector(),
        KernelCollector(),
        SoftirqsCollector(),
        SoftnetCollector(),
        NetdevCollector(),
        DiskstatsCollector(),
        NetstatCollector(),
        SockstatCollector(),
        PressureCpuIoCollector(),
        FilesystemCollector(),
        CpuidleCollector(),
        CpufreqCollector(),
        NetclassCollector(),
        ArpCollector(),
        UnameCollector(),
        AssetsCollector(version),
        AllocationsCollector(),
        GpuCollector(),
        AgentCollector(),
    ]
