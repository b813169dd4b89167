"""Time and entries per cpuidle state and CPU (/sys/devices/system/cpu/cpuN/cpuidle): how deep CPUs sleep."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter
from hypermesh.agent.metrics.scrape import NoData, Scrape

__all__ = ["CpuidleCollector"]

SECONDS = counter(
    "hypermesh_cpu_idle_state_seconds_total",
    "Seconds each CPU spent in each idle state (cpuidle residency; added when the CPU wakes).",
    "seconds",
)
ENTRIES = counter("hypermesh_cpu_idle_state_entries_total", "Times each CPU entered each idle state.")


class CpuidleCollector:
    area = "cpuidle"
    reads_node_stats = True

    def collect(self, scrape: Scrape) -> list[Family]:
        states = scrape.node_stats.cpuidle
        if not states:
            raise NoData("no cpuidle driver (/sys/devices/system/cpu/cpuidle)")
        seconds = SECONDS.family()
        entries = ENTRIES.family()
        for state in states:
            label = (("cpu", str(state.cpu)), ("state", state.state))
            seconds.samples.append((label, state.time_seconds))
            entries.samples.append((label, float(state.entries)))
        return [seconds, entries]
