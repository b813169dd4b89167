"""Current and limit frequency of each CPU where a cpufreq driver runs (none on most VMs)."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, gauge
from hypermesh.agent.metrics.scrape import NoData, Scrape

__all__ = ["CpufreqCollector"]

CURRENT = gauge("hypermesh_cpu_frequency_hertz", "Current frequency of each CPU (cpufreq scaling_cur_freq).", "hertz")
MIN = gauge("hypermesh_cpu_frequency_min_hertz", "Lowest frequency the CPU supports (cpuinfo_min_freq).", "hertz")
MAX = gauge("hypermesh_cpu_frequency_max_hertz", "Highest frequency the CPU supports (cpuinfo_max_freq).", "hertz")


class CpufreqCollector:
    area = "cpufreq"
    reads_node_stats = True

    def collect(self, scrape: Scrape) -> list[Family]:
        frequencies = scrape.node_stats.cpu_frequency_hz
        if not frequencies:
            raise NoData("no cpufreq driver (/sys/devices/system/cpu/cpuN/cpufreq)")
        current, low, high = CURRENT.family(), MIN.family(), MAX.family()
        for cpu in frequencies:
            label = (("cpu", str(cpu.cpu)),)
            current.samples.append((label, cpu.scaling_cur_freq))
            low.samples.append((label, cpu.cpuinfo_min_freq))
            high.samples.append((label, cpu.cpuinfo_max_freq))
        return [current, low, high]
