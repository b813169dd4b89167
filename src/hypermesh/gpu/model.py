"""GPU records: one reading of a device and one process's use of one, JSON-ready through ``to_dict()``."""

from __future__ import annotations

from hypermesh.model import Record, record

__all__ = ["IDENTITY", "GpuProcess", "GpuReading"]

# The identity fields ``profile().gpus`` carries, in this order, by these names.
IDENTITY = ("index", "vendor", "model", "uuid", "pci_bus_id", "driver", "memory_total_bytes")


@record
class GpuReading(Record):
    """A GPU's identity and what it reports now; a value the device does not expose is None.

    ``uuid`` is the vendor's (NVML's ``GPU-...``, amdgpu's ``unique_id``) or, where the vendor has none, the PCI
    address, so it is always a stable key. ``pci_bus_id`` is in sysfs form (``0000:03:00.0``) whichever source
    read it, so NVML and DRM readings join. ``status`` is ok or degraded; ``reason`` says what could not be read.
    """

    index: int
    vendor: str
    model: str
    uuid: str
    pci_bus_id: str
    driver: str | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    busy_percent: float | None
    temperature_celsius: float | None
    power_watts: float | None
    status: str
    reason: str | None

    def identity(self) -> dict[str, object]:
        """The fields ``profile().gpus`` lists for this GPU."""
        return {name: getattr(self, name) for name in IDENTITY}


@record
class GpuProcess(Record):
    """One DRM client (or NVML process) on one GPU.

    ``engines_ns``: busy nanoseconds per engine since the client opened the device (fdinfo ``drm-engine-*``),
    held at their highest value seen (the counters of some drivers step back when a context is torn down);
    ``memory_bytes``: per memory region (fdinfo ``drm-memory-*``/``drm-resident-*``, NVML used memory as "vram").
    ``engine_capacity``: engines of a class that count together (``drm-engine-capacity-video: 2``), where not 1.
    """

    pid: int
    pci_bus_id: str
    driver: str
    client_id: str
    engines_ns: dict[str, int]
    memory_bytes: dict[str, int]
    engine_capacity: dict[str, int] | None = None
