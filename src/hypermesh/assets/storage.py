"""Storage as assets: one per mounted filesystem on a block device, in bytes, with its device's I/O rates.

Capacity and free space come from statvfs of each mount (through the platform layer's block reader), the device's
read/write rates from the Sampler. I/O latency would come from the biolatency eBPF program; the assets layer does
not load eBPF programs on a snapshot (a load costs milliseconds and needs CAP_BPF), so ``io_latency`` is absent
with that reason — the agent's ebpf area reports biolatency where it runs.
"""

from __future__ import annotations

import sys

from hypermesh.assets.base import Context, Reading
from hypermesh.errors import BackendError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hypermesh.model import StorageDevice

__all__ = ["StorageAdapter"]

LATENCY_ABSENT = "not measured by a snapshot: biolatency (eBPF) runs in the agent's ebpf area, not here"


class StorageAdapter:
    kind = "storage"

    def __init__(self, proc_root: str | None = None, sys_root: str | None = None) -> None:
        """Roots default to the snapshot's; a test points ``proc_root`` elsewhere to make this adapter fail."""
        self._proc = proc_root
        self._sys = sys_root

    def _devices(self, ctx: Context) -> list[StorageDevice]:
        if not sys.platform.startswith("linux"):
            from hypermesh.platform import backend

            return backend().profile().storage
        from hypermesh.platform.linux import block, files

        proc = self._proc or ctx.proc
        data = files.read_to_end(f"{proc}/self/mountinfo")
        if data is None:
            raise BackendError(f"cannot read {proc}/self/mountinfo: is procfs mounted?")
        return block.storage_devices(self._sys or ctx.sys, data.decode(errors="surrogateescape"), "")

    def read(self, ctx: Context) -> list[Reading]:
        sample = ctx.need_sample()
        rates = {d.name: d for d in sample.disks}
        out = []
        for device in self._devices(ctx):
            rate = rates.get(device.name)
            for mount in device.mounts:
                if mount.total_bytes is None:
                    continue
                used = None if mount.free_bytes is None else mount.total_bytes - mount.free_bytes
                out.append(
                    Reading(
                        id=mount.mountpoint,
                        unit="bytes",
                        capacity=float(mount.total_bytes),
                        usage=None if used is None else float(used),
                        details={
                            "device": device.name,
                            "device_kind": device.kind,
                            "fstype": mount.fstype,
                            "free_bytes": mount.free_bytes,
                            "io": None if rate is None else rate.to_dict(),
                            "io_latency": None,
                            "io_latency_reason": LATENCY_ABSENT,
                        },
                    )
                )
        return out

    def close(self) -> None:
        return None
