"""NVIDIA GPUs through NVML (the ``nvidia-ml-py`` binding, extra ``hypermesh[gpu]``).

NVML lives in ``libnvidia-ml.so.1``, installed with the driver. We dlopen it ourselves first: without it there is
no NVIDIA GPU to read and ``pynvml`` is never imported. ``HYPERMESH_NVML=/path/libnvidia-ml.so.1`` (or the
``library`` argument) names another copy; pynvml then finds it already loaded, because the dynamic loader matches
``dlopen("libnvidia-ml.so.1")`` against the SONAME of libraries already in the process.

Every device call is its own try: a device that answers NVML_ERROR_GPU_IS_LOST to one query is degraded with that
reason, the others read on.
"""

from __future__ import annotations

import os
import sys

from hypermesh.gpu.model import GpuProcess, GpuReading

__all__ = ["Nvml", "library_path"]

LIBRARY = "libnvidia-ml.so.1"
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any


def library_path(sys_root: str = "/sys") -> str | None:
    """The NVML library to try, or None when this host cannot have an NVIDIA GPU to read.

    On Linux NVML needs the nvidia kernel module: without /sys/module/nvidia we skip the dlopen (and the ~4 ms
    import of ctypes) on every headless or AMD/Intel host.
    """
    explicit = os.environ.get("HYPERMESH_NVML")
    if explicit:
        return explicit
    if sys.platform == "win32":  # the driver installs NVML in System32 (DCH drivers), as pynvml looks for it
        return os.path.join(os.environ.get("WINDIR", "C:/Windows"), "System32", "nvml.dll")
    if not sys.platform.startswith("linux") or not os.path.isdir(f"{sys_root}/module/nvidia"):
        return None  # macOS and the BSDs have no NVML
    return LIBRARY


def bus_id(raw: bytes | str) -> str:
    """NVML's ``00000000:01:00.0`` as sysfs writes it, ``0000:01:00.0``: one key across NVML, DRM and fdinfo."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    domain, _, rest = text.lower().partition(":")
    return f"{int(domain, 16):04x}:{rest}" if rest else text.lower()


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


class Nvml:
    """An initialised NVML session. ``open()`` returns None when there is no NVML here (no driver or library)."""

    def __init__(self, pynvml: ModuleType) -> None:
        self._nv = pynvml

    @classmethod
    def open(cls, library: str | None) -> Nvml:
        """Load and initialise NVML from ``library``; raises OSError (no library), ImportError (no binding) or
        pynvml.NVMLError (the driver refused)."""
        import ctypes

        ctypes.CDLL(library or LIBRARY, mode=ctypes.RTLD_GLOBAL)
        import pynvml

        pynvml.nvmlInit()
        return cls(pynvml)

    def close(self) -> None:
        self._nv.nvmlShutdown()

    def devices(self, first_index: int = 0) -> list[GpuReading]:
        return [self._device(i, first_index + i) for i in range(self._nv.nvmlDeviceGetCount())]

    def _device(self, nvml_index: int, index: int) -> GpuReading:
        nv = self._nv
        problems: list[str] = []

        def ask(what: str, call: Callable[[], Any]) -> Any:
            try:
                return call()
            except nv.NVMLError as exc:
                problems.append(f"NVML {what}: {exc}")
                return None

        handle = ask("device handle", lambda: nv.nvmlDeviceGetHandleByIndex(nvml_index))
        if handle is None:
            return _lost(index, "; ".join(problems))
        name = ask("name", lambda: nv.nvmlDeviceGetName(handle))
        uuid = ask("uuid", lambda: nv.nvmlDeviceGetUUID(handle))
        pci = ask("PCI info", lambda: nv.nvmlDeviceGetPciInfo(handle))
        memory = ask("memory", lambda: nv.nvmlDeviceGetMemoryInfo(handle))
        utilization = ask("utilization", lambda: nv.nvmlDeviceGetUtilizationRates(handle))
        temperature = ask("temperature", lambda: nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU))
        power_mw = ask("power", lambda: nv.nvmlDeviceGetPowerUsage(handle))
        pci_bus = bus_id(pci.busId) if pci is not None else f"nvml:{nvml_index}"
        return GpuReading(
            index=index,
            vendor="nvidia",
            model=_text(name) if name is not None else "NVIDIA GPU",
            uuid=_text(uuid) if uuid is not None else pci_bus,
            pci_bus_id=pci_bus,
            driver="nvidia",
            memory_total_bytes=None if memory is None else int(memory.total),
            memory_used_bytes=None if memory is None else int(memory.used),
            busy_percent=None if utilization is None else float(utilization.gpu),
            temperature_celsius=None if temperature is None else float(temperature),
            power_watts=None if power_mw is None else power_mw / 1000.0,
            status="degraded" if problems else "ok",
            reason="; ".join(problems) or None,
        )

    def processes(self) -> list[GpuProcess]:
        """Compute processes on every device (NVML's view; graphics clients show up in DRM fdinfo)."""
        nv = self._nv
        out = []
        for i in range(nv.nvmlDeviceGetCount()):
            try:
                handle = nv.nvmlDeviceGetHandleByIndex(i)
                pci = bus_id(nv.nvmlDeviceGetPciInfo(handle).busId)
                procs = nv.nvmlDeviceGetComputeRunningProcesses(handle)
            except nv.NVMLError:
                continue  # devices() reports the device degraded; no process list is not a wrong one
            for p in procs:
                used = p.usedGpuMemory
                out.append(
                    GpuProcess(
                        pid=int(p.pid),
                        pci_bus_id=pci,
                        driver="nvidia",
                        client_id=f"nvml-{p.pid}",
                        engines_ns={},
                        memory_bytes={} if used is None else {"vram": int(used)},
                    )
                )
        return out


def _lost(index: int, reason: str) -> GpuReading:
    return GpuReading(
        index=index,
        vendor="nvidia",
        model="NVIDIA GPU",
        uuid=f"nvml:{index}",
        pci_bus_id=f"nvml:{index}",
        driver="nvidia",
        memory_total_bytes=None,
        memory_used_bytes=None,
        busy_percent=None,
        temperature_celsius=None,
        power_watts=None,
        status="degraded",
        reason=reason,
    )
