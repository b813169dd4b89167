"""CPU time per CPU and mode, and the load averages, from the Sampler's counters (/proc/stat, /proc/loadavg)."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, Labels, counter, gauge
from hypermesh.agent.metrics.scrape import Scrape

__all__ = ["CpuCollector"]

_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_FIELDS = tuple(f"{m}_seconds" for m in _MODES)

SECONDS = counter(
    "hypermesh_cpu_seconds_total", "Seconds each CPU spent in each mode since boot (/proc/stat).", "seconds"
)
LOAD1, LOAD5, LOAD15 = (
    gauge(f"hypermesh_load{window}", f"{window}-minute load average: runnable plus uninterruptible tasks.")
    for window in ("1", "5", "15")
)


class CpuCollector:
    area = "cpu"

    def __init__(self) -> None:
        # (cpu, mode) -> sorted labels; CPUs come and go rarely (hot-plug), so the cache stays tiny.
        self._labels: dict[tuple[int, str], Labels] = {}

    def collect(self, scrape: Scrape) -> list[Family]:
        counters = scrape.counters
        seconds = SECONDS.family()
        labels = self._labels
        for times in counters.cpu:
            cpu = times.cpu
            for mode, field in zip(_MODES, _FIELDS, strict=True):
                key = (cpu, mode)
                label = labels.get(key)
                if label is None:
                    label = labels[key] = (("cpu", str(cpu)), ("mode", mode))
                seconds.samples.append((label, getattr(times, field)))
        load = counters.load
        return [seconds, LOAD1.value(load.avg1), LOAD5.value(load.avg5), LOAD15.value(load.avg15)]
