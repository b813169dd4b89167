"""GPUs as assets: one per device, allocated whole or in fractions of one device.

Readings come from hypermesh.gpu (NVML, DRM sysfs); a GPU its source reports degraded (an NVML query failing, a
sysfs attribute unreadable) is a degraded asset with that reason. Usage is the device's busy fraction where the
device reports one, else the fdinfo engine time of its clients (Intel).
"""

from __future__ import annotations

from hypermesh.assets.base import Context, Reading
from hypermesh.gpu import GpuProcess, GpuReader

__all__ = ["GpuAdapter"]


class GpuAdapter:
    kind = "gpu"

    def __init__(self, sys_root: str | None = None, proc_root: str | None = None) -> None:
        self._roots = (sys_root, proc_root)
        self._reader: GpuReader | None = None

    @property
    def problems(self) -> dict[str, str]:
        """Sources the last read could not use ({"nvml": reason}); the GPUs they could not name are missing."""
        return dict(self._reader.problems) if self._reader is not None else {}

    def reader(self, ctx: Context) -> GpuReader:
        if self._reader is None:
            sys_root, proc_root = self._roots
            self._reader = GpuReader(sys_root or ctx.sys, proc_root or ctx.proc)
        return self._reader

    def read(self, ctx: Context) -> list[Reading]:
        reader = self.reader(ctx)
        gpus = reader.read()
        busy: dict[str, float] = {}
        if any(g.busy_percent is None for g in gpus):  # only then is a /proc scan worth its cost
            busy = reader.engine_busy(reader.processes())
        out = []
        for g in gpus:
            percent = g.busy_percent if g.busy_percent is not None else busy.get(g.pci_bus_id)
            out.append(
                Reading(
                    id=g.uuid,
                    unit="devices",
                    capacity=1.0,
                    usage=None if percent is None else round(percent / 100.0, 4),
                    details=g.to_dict(),
                    problem=g.reason if g.status != "ok" else None,
                )
            )
        return out

    def users(self, ctx: Context, asset_id: str) -> list[int]:
        """Pids using the GPU ``asset_id`` now (DRM fdinfo clients, NVML compute processes)."""
        reader = self.reader(ctx)
        by_uuid = {g.uuid: g.pci_bus_id for g in reader.read()}
        pci = by_uuid.get(asset_id, asset_id)
        processes: list[GpuProcess] = reader.processes()
        return sorted({p.pid for p in processes if p.pci_bus_id == pci})

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
