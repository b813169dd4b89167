"""Each GPU's utilisation, memory, temperature and power, from the same asset snapshot as the allocations area.

Every series carries ``gpu`` (the index), ``uuid``, ``pci_bus_id`` (sysfs form, ``0000:03:00.0``, whichever source
read it) and ``vendor``, so they join with NVIDIA's DCGM exporter (``UUID``, ``pci_bus_id``), AMD's exporters and
our own ``hypermesh_asset_*{kind="gpu", asset=<uuid>}``. A value the device does not expose has no series. A host
without GPUs has none at all (NoData: not a failure).
"""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, gauge
from hypermesh.agent.metrics.scrape import NoData, Scrape

__all__ = ["GpuCollector"]

INFO = gauge("hypermesh_gpu_info", "Always 1; labels name each GPU: model, driver and health status.")
BUSY = gauge("hypermesh_gpu_busy_ratio", "Share of the last sampling period the GPU was busy, 0..1.")
MEMORY_USED = gauge("hypermesh_gpu_memory_used_bytes", "Device memory in use (VRAM; NVML's used memory).", "bytes")
MEMORY_TOTAL = gauge("hypermesh_gpu_memory_total_bytes", "Device memory in all.", "bytes")
TEMPERATURE = gauge("hypermesh_gpu_temperature_celsius", "GPU temperature (hwmon temp1, NVML's GPU sensor).", "celsius")
POWER = gauge("hypermesh_gpu_power_watts", "Power the board draws (hwmon power1, NVML's power usage).", "watts")


class GpuCollector:
    area = "gpu"

    def collect(self, scrape: Scrape) -> list[Family]:
        gpus = [a for a in scrape.assets.snapshot.assets if a.kind == "gpu"]
        if not gpus:
            raise NoData("no GPU on this host")
        info, busy, used, total, temperature, power = (
            INFO.family(),
            BUSY.family(),
            MEMORY_USED.family(),
            MEMORY_TOTAL.family(),
            TEMPERATURE.family(),
            POWER.family(),
        )
        for asset in gpus:
            d = asset.details
            if "uuid" not in d:
                continue  # a failed GPU adapter: its last ids stay in the asset metrics, no readings here
            labels = {"gpu": str(d["index"]), "uuid": d["uuid"], "pci_bus_id": d["pci_bus_id"], "vendor": d["vendor"]}
            info.add(1.0, model=d["model"], driver=d["driver"] or "", status=asset.health.status, **labels)
            for family, key, scale in (
                (busy, "busy_percent", 0.01),
                (used, "memory_used_bytes", 1.0),
                (total, "memory_total_bytes", 1.0),
                (temperature, "temperature_celsius", 1.0),
                (power, "power_watts", 1.0),
            ):
                if d.get(key) is not None:
                    family.add(float(d[key]) * scale, **labels)
        return [info, busy, used, total, temperature, power]
