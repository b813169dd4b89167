"""Memory pressure stall information (PSI, /proc/pressure/memory), from the Sampler's counters."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter, gauge
from hypermesh.agent.metrics.scrape import NoData, Scrape

__all__ = ["PressureCollector"]

WAITING = counter(
    "hypermesh_pressure_memory_waiting_seconds_total",
    "Seconds in which at least one task stalled waiting for memory (PSI 'some').",
    "seconds",
)
STALLED = counter(
    "hypermesh_pressure_memory_stalled_seconds_total",
    "Seconds in which all non-idle tasks stalled waiting for memory (PSI 'full').",
    "seconds",
)
AVG10 = gauge(
    "hypermesh_pressure_memory_avg10_ratio",
    "Share of the last 10 s in which tasks stalled on memory, 0..1 (PSI avg10), by kind some/full.",
    "ratio",
)


class PressureCollector:
    area = "pressure"
    sources = ("pressure/memory",)

    def collect(self, scrape: Scrape) -> list[Family]:
        pressure = scrape.counters.pressure
        if pressure is None:
            raise NoData("the kernel reports no memory pressure (PSI, /proc/pressure/memory)")
        families = [WAITING.value(pressure.some_total_seconds)]
        avg = AVG10.family()
        avg.samples.append(((("kind", "some"),), pressure.some_avg10 / 100.0))
        if pressure.full_total_seconds is not None:
            families.append(STALLED.value(pressure.full_total_seconds))
        if pressure.full_avg10 is not None:
            avg.samples.append(((("kind", "full"),), pressure.full_avg10 / 100.0))
        families.append(avg)
        return families
