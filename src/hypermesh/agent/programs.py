"""eBPF programs the agent keeps loaded (``--ebpf syscalls``), shared by /metrics, /v1/ebpf and the page.

eBPF is optional: a program that cannot load (no CAP_BPF, no BTF, an old kernel) becomes an error
string in /v1/ebpf and ``hypermesh_ebpf_program_loaded{program} 0``; the agent serves everything else.
Readings are cached for ``MAX_AGE_S``: a read walks the program's maps, and Prometheus, the page and
JSON clients asking within the same second get the same reading.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time

from hypermesh.model import Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from hypermesh.ebpf.probe import ProbeReport

__all__ = ["AGENT_PROGRAMS", "NOT_PROBED", "AgentPrograms", "EbpfStatus", "ProgramState", "read_ebpf_status"]

log = logging.getLogger("hypermesh.agent")

# Programs the agent can keep running without further arguments, with the options it gives them.
AGENT_PROGRAMS: dict[str, dict[str, object]] = {"syscalls": {}}
MAX_AGE_S = 1.0
TOP_PROCESSES = 10


@record
class EbpfStatus(Record):
    """Whether this agent can load eBPF programs, why not, and the probe that decided it (``/v1/ebpf``)."""

    available: bool
    reason: str | None
    probe: ProbeReport | None


NOT_PROBED = EbpfStatus(available=False, reason="not probed yet", probe=None)


def read_ebpf_status() -> EbpfStatus:
    """The probe's own verdict; eBPF is optional, so a pillar that cannot even be imported becomes a reason."""
    try:
        # Imported by name: eBPF is an optional pillar, absent on some builds.
        ebpf = importlib.import_module("hypermesh.ebpf")
        report: ProbeReport = ebpf.probe()
    except Exception as exc:  # ImportError, HypermeshError (Unsupported, PermissionDenied) or a broken probe
        return EbpfStatus(available=False, reason=f"ebpf unavailable: {exc}", probe=None)
    return EbpfStatus(available=report.available, reason=report.reason or None, probe=report)


@record
class ProgramState(Record):
    """One configured program: loaded or not, why not, and its latest reading (the program's own record)."""

    loaded: bool
    error: str | None
    reading: Record | None


class AgentPrograms:
    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self._programs: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._cache: tuple[float, dict[str, ProgramState]] | None = None

    def start(self) -> None:
        if not self.names:
            return
        try:
            ebpf = importlib.import_module("hypermesh.ebpf")
        except ImportError as exc:
            self.errors = {name: f"ebpf unavailable: {exc}" for name in self.names}
            return
        for name in self.names:
            try:
                program = ebpf.load(name, **AGENT_PROGRAMS.get(name, {}))
                program.attach()
            except Exception as exc:  # HypermeshError (Unsupported, PermissionDenied, VerifierError) or OSError
                self.errors[name] = f"{type(exc).__name__}: {exc}"
                log.warning("eBPF program %s not loaded: %s", name, self.errors[name])
            else:
                self._programs[name] = program

    def close(self) -> None:
        """Detach and unload (blocks up to ~0.1 s per link in the kernel: call it off the event loop)."""
        with self._lock:
            programs, self._programs = self._programs, {}
        for program in programs.values():
            program.close()

    def readings(self) -> dict[str, ProgramState]:
        """The state of every configured program, its reading as the program's record (JSON only in summary())."""
        now = time.monotonic()
        with self._lock:
            if self._cache is not None and now - self._cache[0] < MAX_AGE_S:
                return self._cache[1]
            out: dict[str, ProgramState] = {}
            for name in self.names:
                program = self._programs.get(name)
                error, reading = self.errors.get(name), None
                if program is not None:
                    try:
                        reading = program.read()
                    except Exception as exc:  # a map read failing now must not fail the scrape
                        error = f"{type(exc).__name__}: {exc}"
                out[name] = ProgramState(loaded=program is not None, error=error, reading=reading)
            self._cache = (now, out)
            return out

    def summary(self) -> dict[str, dict[str, Any]]:
        """Readings as JSON, trimmed to the busiest processes."""
        out = {}
        for name, state in self.readings().items():
            entry = state.to_dict()
            reading = entry["reading"]
            if isinstance(reading, dict) and isinstance(reading.get("processes"), list):
                entry["reading"] = dict(reading, processes=reading["processes"][:TOP_PROCESSES])
            out[name] = entry
        return out
