"""GPUs: NVIDIA through NVML, AMD and Intel through DRM sysfs, per-process use through DRM fdinfo and NVML.

>>> from hypermesh.gpu import GpuReader
>>> reader = GpuReader()                 # roots default to /sys and /proc; tests pass fixture trees
>>> reader.read()                        # [GpuReading, ...]; [] on a headless host, never an error
>>> reader.processes()                   # [GpuProcess, ...]: who uses which GPU

Indexes run over NVML's devices first (NVML order), then the DRM cards of other vendors (card-number order).
An NVIDIA card that NVML cannot read (no library, no binding, the driver refusing) is still listed from DRM sysfs,
degraded, with NVML's reason; a failure of one source never hides another's GPUs.
"""

from __future__ import annotations

from hypermesh.gpu import drm, fdinfo
from hypermesh.gpu.model import IDENTITY, GpuProcess, GpuReading
from hypermesh.gpu.nvml import Nvml, library_path

__all__ = ["IDENTITY", "GpuProcess", "GpuReader", "GpuReading", "identities"]

_NVIDIA = "0x10de"


class GpuReader:
    """Reads every GPU of a host (or of a recorded tree: ``sys_root``/``proc_root``); keeps NVML open between reads.

    ``problems`` says which source could not be read on the last call, ``{"nvml": "reason"}``; those GPUs still
    show, degraded, where another source (DRM sysfs) can name them.
    """

    def __init__(self, sys_root: str = "/sys", proc_root: str = "/proc", nvml_library: str | None = None) -> None:
        self.sys_root = sys_root.rstrip("/") or ""
        self.proc_root = proc_root.rstrip("/") or ""
        self._library = nvml_library
        self._nvml: Nvml | None = None
        self._busy = fdinfo.EngineBusy()
        self.problems: dict[str, str] = {}

    def _session(self) -> Nvml | None:
        library = self._library or library_path(self.sys_root)
        if library is None:
            return None
        if self._nvml is None:
            try:
                self._nvml = Nvml.open(library)
            except OSError as exc:
                self.problems["nvml"] = f"{library} could not be loaded ({exc}); is the NVIDIA driver installed?"
            except ImportError:
                self.problems["nvml"] = "nvidia-ml-py is not installed: pip install 'hypermesh[gpu]'"
            except Exception as exc:  # pynvml.NVMLError, whose class we have only once pynvml imported
                self.problems["nvml"] = f"NVML did not initialise: {exc}"
        return self._nvml

    def read(self) -> list[GpuReading]:
        self.problems = {}
        nvidia: list[GpuReading] = []
        session = self._session()
        if session is not None:
            try:
                nvidia = session.devices()
            except Exception as exc:  # NVMLError on the device count: the session is unusable, reopen next time
                self.problems["nvml"] = f"NVML device count failed: {exc}"
                self._drop_session()
        skip = frozenset({_NVIDIA}) if session is not None and "nvml" not in self.problems else frozenset()
        others = drm.read_cards(self.sys_root, len(nvidia), skip)
        reason = self.problems.get("nvml")
        if reason:
            others = [_degraded(g, reason) if g.vendor == "nvidia" else g for g in others]
        return nvidia + others

    def processes(self) -> list[GpuProcess]:
        """DRM fdinfo clients of every process, plus NVML's compute processes not already seen through DRM."""
        found = fdinfo.scan(self.proc_root)
        session = self._session()
        if session is not None:
            known = {(p.pid, p.pci_bus_id) for p in found}
            try:
                found += [p for p in session.processes() if (p.pid, p.pci_bus_id) not in known]
            except Exception as exc:
                self.problems["nvml"] = f"NVML process list failed: {exc}"
        return found

    def engine_busy(self, clients: list[GpuProcess]) -> dict[str, float]:
        """{pci_bus_id: busy percent} from fdinfo engine time since the previous call (Intel has no other source)."""
        return self._busy.update(clients)

    def _drop_session(self) -> None:
        session, self._nvml = self._nvml, None
        if session is not None:
            try:
                session.close()
            except Exception as exc:  # shutting down a broken session: what matters is already in problems
                self.problems.setdefault("nvml", f"NVML shutdown failed: {exc}")

    def close(self) -> None:
        self._drop_session()


def _degraded(gpu: GpuReading, reason: str) -> GpuReading:
    values = gpu.to_dict()
    values.update(status="degraded", reason="; ".join(r for r in (gpu.reason, reason) if r))
    return GpuReading(**values)


def identities(sys_root: str = "/sys", proc_root: str = "/proc") -> list[dict[str, object]]:
    """What ``profile().gpus`` lists: each GPU's index, vendor, model, uuid, pci_bus_id, driver, memory_total_bytes."""
    reader = GpuReader(sys_root, proc_root)
    try:
        return [gpu.identity() for gpu in reader.read()]
    finally:
        reader.close()
