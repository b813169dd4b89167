"""Per-process GPU use from DRM fdinfo (Documentation/gpu/drm-usage-stats.rst), the way nvtop reads it.

A process using a GPU holds a file descriptor on a DRM character device (major 226: /dev/dri/cardN or renderDN).
``/proc/PID/fdinfo/FD`` of that descriptor then carries ``drm-driver``, ``drm-pdev`` (PCI address),
``drm-client-id`` and per-engine busy time ``drm-engine-<name>: <ns> ns``, memory ``drm-memory-<region>`` (legacy)
or ``drm-resident-<region>``/``drm-total-<region>`` in B, KiB or MiB.

One client (one open of the device) can sit behind several descriptors (dup(2)) and several processes (fork):
clients are counted once, by (pdev, client id), under the lowest pid that holds them. Engine counters may step back
(amdgpu before 6.x dropped a finished context's time) and are held at their highest value seen.
"""

from __future__ import annotations

import os
import stat
import time

from hypermesh.gpu.model import GpuProcess
from hypermesh.platform.linux.files import listdir, read_once

__all__ = ["EngineBusy", "is_drm_fd", "scan"]

DRM_MAJOR = 226
_UNITS = {"": 1, "B": 1, "KiB": 1024, "MiB": 1024 * 1024, "GiB": 1024**3}


def is_drm_fd(fd_path: str) -> bool:
    """Whether a /proc/PID/fd entry is a DRM device.

    stat(2) through the magic link reaches the open file even when its device node is not in our mount namespace;
    a link whose target cannot be reached (a recorded tree) is judged by the path the kernel names, /dev/dri/.
    """
    try:
        st = os.stat(fd_path)
    except OSError:
        try:
            return os.readlink(fd_path).startswith("/dev/dri/")
        except OSError:
            return False
    return stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == DRM_MAJOR


def parse_fdinfo(text: str) -> dict[str, str] | None:
    """The drm-* keys of one fdinfo file, or None when it is not a DRM client (no drm-driver key)."""
    keys: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.startswith("drm-"):
            keys[key] = value.strip()
    return keys if "drm-driver" in keys else None


def _amount(value: str) -> int | None:
    number, _, unit = value.partition(" ")
    try:
        return int(number) * _UNITS[unit.strip()]
    except (ValueError, KeyError):
        return None


def client(pid: int, keys: dict[str, str]) -> GpuProcess:
    """A GpuProcess from the drm-* keys of one fdinfo file."""
    engines: dict[str, int] = {}
    capacity: dict[str, int] = {}
    memory: dict[str, int] = {}
    resident: dict[str, int] = {}
    for key, value in keys.items():
        if key.startswith("drm-engine-capacity-"):
            count = _amount(value)
            if count is not None and count > 1:
                capacity[key[len("drm-engine-capacity-") :]] = count
        elif key.startswith("drm-engine-"):
            ns = _amount(value.removesuffix(" ns"))
            if ns is not None:
                engines[key[len("drm-engine-") :]] = ns
        elif key.startswith(("drm-memory-", "drm-total-", "drm-resident-")):
            prefix, _, region = key[len("drm-") :].partition("-")
            amount = _amount(value)
            if amount is None:
                continue
            (resident if prefix == "resident" else memory).setdefault(region, amount)
    memory.update(resident)  # resident is what occupies the device now; total includes what was swapped out
    return GpuProcess(
        pid=pid,
        pci_bus_id=keys.get("drm-pdev", ""),
        driver=keys["drm-driver"],
        client_id=keys.get("drm-client-id", f"pid{pid}"),
        engines_ns=engines,
        memory_bytes=memory,
        engine_capacity=capacity or None,
    )


def scan(proc_root: str = "/proc") -> list[GpuProcess]:
    """Every DRM client of every process we may look at, once each (lowest pid), in (pdev, client id) order."""
    seen: dict[tuple[str, str], GpuProcess] = {}
    pids = sorted(int(name) for name in listdir(proc_root) if name.isdigit())
    for pid in pids:
        fd_dir = f"{proc_root}/{pid}/fd"
        for fd in listdir(fd_dir):  # a process we may not inspect, or one that exited, lists nothing
            if not is_drm_fd(f"{fd_dir}/{fd}"):
                continue
            data = read_once(f"{proc_root}/{pid}/fdinfo/{fd}")
            keys = parse_fdinfo(data.decode(errors="replace")) if data else None
            if keys is None:
                continue
            found = client(pid, keys)
            seen.setdefault((found.pci_bus_id, found.client_id), found)
    return [seen[k] for k in sorted(seen)]


class EngineBusy:
    """Per-GPU busy percentage from two scans: the busiest engine class's summed client time over the interval
    (divided by the class's capacity, as drm-usage-stats.rst defines it).

    Counters that step back are held at their previous maximum, so a torn-down context never makes time negative;
    a client that vanished between two scans contributes nothing to that interval (its last slice is lost, as in
    nvtop and intel_gpu_top's client view).
    """

    def __init__(self) -> None:
        self._peak: dict[tuple[str, str, str], int] = {}
        self._at: float | None = None

    def update(self, clients: list[GpuProcess], now: float | None = None) -> dict[str, float]:
        """{pci_bus_id: busy percent} since the previous update ({} on the first: a baseline, never a fake 0)."""
        now = time.monotonic() if now is None else now
        peak: dict[tuple[str, str, str], int] = {}
        busy_ns: dict[tuple[str, str], int] = {}
        capacity: dict[tuple[str, str], int] = {}
        for c in clients:
            for engine, count in (c.engine_capacity or {}).items():
                capacity[(c.pci_bus_id, engine)] = count
            for engine, ns in c.engines_ns.items():
                key = (c.pci_bus_id, c.client_id, engine)
                previous = self._peak.get(key)
                value = ns if previous is None else max(ns, previous)
                peak[key] = value
                if previous is not None:
                    busy_ns[(c.pci_bus_id, engine)] = busy_ns.get((c.pci_bus_id, engine), 0) + value - previous
        elapsed = None if self._at is None else now - self._at
        self._peak, self._at = peak, now
        if not elapsed or elapsed <= 0:
            return {}
        out: dict[str, float] = {c.pci_bus_id: 0.0 for c in clients}
        for (pdev, engine), ns in busy_ns.items():
            # an engine class with capacity N (two video engines) is fully busy at N times the interval
            share = ns / (elapsed * 1e9 * capacity.get((pdev, engine), 1)) * 100.0
            out[pdev] = max(out[pdev], min(100.0, share))
        return out
