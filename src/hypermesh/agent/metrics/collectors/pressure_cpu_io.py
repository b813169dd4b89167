"""CPU and I/O stall information (PSI, /proc/pressure/cpu and io); memory is the pressure collector's."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter, gauge
from hypermesh.agent.metrics.scrape import NoData, Scrape

__all__ = ["PressureCpuIoCollector"]

# resource -> (waiting, avg10) descriptions.
_RESOURCES = tuple(
    (
        resource,
        counter(
            f"hypermesh_pressure_{resource}_waiting_seconds_total",
            f"Seconds in which at least one task waited for {what} (PSI 'some').",
            "seconds",
        ),
        gauge(
            f"hypermesh_pressure_{resource}_avg10_ratio",
            f"Share of the last 10 s in which tasks waited for {what}, 0..1 (PSI avg10), by kind some/full.",
            "ratio",
        ),
    )
    for resource, what in (("cpu", "a CPU"), ("io", "I/O"))
)
IO_STALLED = counter(
    "hypermesh_pressure_io_stalled_seconds_total",
    "Seconds in which all non-idle tasks stalled on I/O at once (PSI 'full').",
    "seconds",
)


class PressureCpuIoCollector:
    area = "pressure_cpu_io"
    sources = ("pressure/cpu", "pressure/io")
    reads_node_stats = True

    def collect(self, scrape: Scrape) -> list[Family]:
        pressure = scrape.node_stats.pressure
        if pressure.cpu is None and pressure.io is None and pressure.memory is None:
            raise NoData("the kernel reports no pressure stall information (PSI, /proc/pressure)")
        families = []
        for (resource, waiting, avg10), values in zip(_RESOURCES, (pressure.cpu, pressure.io), strict=True):
            if values is None:
                continue
            families.append(waiting.value(values.some_total_seconds))
            # The system-wide cpu 'full' line (5.13+) is always 0: only cgroups can have every task stalled on CPU.
            if resource == "io" and values.full_total_seconds is not None:
                families.append(IO_STALLED.value(values.full_total_seconds))
            avg = avg10.family()
            avg.samples.append(((("kind", "some"),), values.some_avg10 / 100.0))
            if resource == "io" and values.full_avg10 is not None:
                avg.samples.append(((("kind", "full"),), values.full_avg10 / 100.0))
            families.append(avg)
        return families
