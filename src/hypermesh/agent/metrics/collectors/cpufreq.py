"""Current and limit frequency of each CPU where a cpufreq driver runs (none on most VMs)."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, gauge
from hypermesh.agent.metrics.scrape import NoData, Scrape

__all__ = ["CpufreqCollector"]

# In the order of NodeStats.cpu_frequency_hz's columns.
_COLUMNS = (
    gauge("hypermesh_cpu_frequency_hertz", "Current frequency of each CPU (cpufreq scaling_cur_freq).", "hertz"),
    gauge("hypermesh_cpu_frequency_min_hertz", "Lowest frequency the CPU supports (cpuinfo_min_freq).", "hertz"),
    gauge("hypermesh_cpu_frequency_max_hertz", "Highest frequency the CPU supports (cpuinfo_max_freq).", "hertz"),
)


class CpufreqCollector:
    area = "cpufreq"
    reads_node_stats = True

    def collect(self, scrape: Scrape) -> list[Family]:
        frequencies = scrape.node_stats.cpu_frequency_hz
        if not frequencies:
            raise NoData("no cpufreq driver (/sys/devices/system/cpu/cpuN/cpufreq)")
        cpus = sorted(frequencies.items())
        families = []
        for column, desc in enumerate(_COLUMNS):
            family = desc.family()
            for cpu, values in cpus:
                family.samples.append(((("cpu", str(cpu)),), values[column]))
            families.append(family)
        return families
