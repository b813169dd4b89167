"""eBPF programs the agent keeps loaded (``--ebpf syscalls --ebpf xdp:eth0``), shared by /metrics, /v1/ebpf,
/v1/events and the page.

``AGENT_PROGRAMS`` is the table of what the agent can run: one ``AgentProgram`` entry per built-in says how it is
spelled (``xdp:INTERFACE`` takes an argument), how it is opened (loaded and attached), and how its reading is
exported to /metrics. A new program is one more entry. Reading is the opened thing's own ``read()``.

eBPF is optional: a program that cannot load (no CAP_BPF, no BTF, an old kernel, no such interface) becomes an
error string in /v1/ebpf, ``hypermesh_ebpf_program_loaded{program} 0`` and ``..._success 0``; the others and the
rest of the agent keep running. Readings are cached for ``MAX_AGE_S``: a read walks the program's maps, and
Prometheus, the page and JSON clients asking within the same second get the same reading.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import threading
import time

from hypermesh.agent.metrics.collectors import ebpf_biolatency, ebpf_execsnoop, ebpf_syscalls, ebpf_tc, ebpf_xdp
from hypermesh.model import Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    from hypermesh.agent.exec_feed import ExecFeed
    from hypermesh.agent.metrics.family import Family
    from hypermesh.ebpf.probe import ProbeReport

    class Opened(Protocol):
        """A program the agent holds: loaded and attached; closing it detaches and unloads it."""

        def read(self) -> Record: ...

        def close(self) -> object: ...


__all__ = [
    "AGENT_PROGRAMS",
    "NOT_PROBED",
    "AgentProgram",
    "AgentPrograms",
    "EbpfStatus",
    "ProgramState",
    "export_reading",
    "parse_program",
    "read_ebpf_status",
]

log = logging.getLogger("hypermesh.agent")

MAX_AGE_S = 1.0
TOP_PROCESSES = 10


def _load_attached(name: str, **options: object) -> Opened:
    # Imported by name: eBPF is an optional pillar, absent on some builds.
    ebpf = importlib.import_module("hypermesh.ebpf")
    program = ebpf.load(name, **options)
    try:
        program.attach()
    except BaseException:
        program.close()
        raise
    opened: Opened = program
    return opened


def _open_execsnoop(_argument: str | None) -> Opened:
    from hypermesh.agent.exec_feed import ExecFeed
    from hypermesh.ebpf.programs.execsnoop import ExecsnoopProgram

    program = _load_attached("execsnoop")
    assert isinstance(program, ExecsnoopProgram)
    return ExecFeed(program)


@dataclasses.dataclass(frozen=True, slots=True)
class AgentProgram:
    """One built-in the agent can run: its name, its argument (``xdp:INTERFACE``), how to open and export it."""

    name: str
    open: Callable[[str | None], Opened]  # load and attach; the argument after "name:", if the entry takes one
    export: Callable[[str, Any], list[Family]]  # (the program as configured, its reading) -> families
    argument: str | None = None  # what follows "name:", e.g. "INTERFACE"; None: the program takes none
    summary: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # trims its JSON reading for /v1/ebpf


def _top_processes(reading: dict[str, Any]) -> dict[str, Any]:
    processes = reading.get("processes")
    return dict(reading, processes=processes[:TOP_PROCESSES]) if isinstance(processes, list) else reading


AGENT_PROGRAMS: dict[str, AgentProgram] = {
    entry.name: entry
    for entry in (
        AgentProgram("syscalls", lambda _: _load_attached("syscalls"), ebpf_syscalls.export, summary=_top_processes),
        AgentProgram("biolatency", lambda _: _load_attached("biolatency"), ebpf_biolatency.export),
        AgentProgram("execsnoop", _open_execsnoop, ebpf_execsnoop.export),
        AgentProgram("xdp", lambda interface: _load_attached("xdp", interface=interface), ebpf_xdp.export, "INTERFACE"),
        AgentProgram("tc", lambda interface: _load_attached("tc", interface=interface), ebpf_tc.export, "INTERFACE"),
    )
}


def program_spellings() -> list[str]:
    """How each entry is written on the command line: ``syscalls``, ``xdp:INTERFACE``."""
    return [f"{e.name}:{e.argument}" if e.argument else e.name for e in AGENT_PROGRAMS.values()]


def parse_program(spec: str) -> tuple[AgentProgram, str | None] | str:
    """``"xdp:eth0"`` -> (its entry, ``"eth0"``); a string saying what is wrong with ``spec`` otherwise."""
    name, colon, argument = spec.partition(":")
    entry = AGENT_PROGRAMS.get(name)
    if entry is None:
        return f"{spec!r} is not a program the agent runs (choose from: {', '.join(program_spellings())})"
    if entry.argument is None and colon:
        return f"{name} takes no argument: write {name!r}, not {spec!r}"
    if entry.argument is not None and not argument:
        return f"{name} needs its {entry.argument.lower()}: write {name}:{entry.argument}, e.g. {name}:eth0"
    if entry.argument is not None:
        from hypermesh.platform.linux.net import interface_name_problem

        problem = interface_name_problem(argument)
        if problem is not None:
            return f"{spec!r}: {problem}"
    return entry, (argument if entry.argument is not None else None)


def export_reading(name: str, reading: Record) -> list[Family]:
    """The families of configured program ``name`` (``"xdp:eth0"``) for its ``reading``, as its entry exports them."""
    parsed = parse_program(name)
    return [] if isinstance(parsed, str) else parsed[0].export(name, reading)


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
    """The configured programs (``["syscalls", "xdp:eth0"]``), each opened on its own: one failing leaves the rest."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self._opened: dict[str, Opened] = {}
        self.errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._cache: tuple[float, dict[str, ProgramState]] | None = None

    def start(self) -> None:
        for name in self.names:
            parsed = parse_program(name)
            if isinstance(parsed, str):  # the config checked it; a library caller may not have
                self.errors[name] = parsed
                continue
            entry, argument = parsed
            try:
                opened = entry.open(argument)
            except Exception as exc:  # ImportError, HypermeshError (Unsupported, PermissionDenied, NotFound), OSError
                self.errors[name] = f"{type(exc).__name__}: {exc}"
                log.warning("eBPF program %s not loaded: %s", name, self.errors[name])
            else:
                self._opened[name] = opened

    def close(self) -> None:
        """Detach and unload (blocks up to ~0.1 s per link in the kernel: call it off the event loop)."""
        with self._lock:
            opened, self._opened = self._opened, {}
        for program in opened.values():
            program.close()

    def exec_feed(self) -> ExecFeed | None:
        """The running execsnoop's feed (what /v1/events streams), or None when it does not run."""
        from hypermesh.agent.exec_feed import ExecFeed

        feed = self._opened.get("execsnoop")
        return feed if isinstance(feed, ExecFeed) else None

    def readings(self) -> dict[str, ProgramState]:
        """The state of every configured program, its reading as the program's record (JSON only in summary())."""
        now = time.monotonic()
        with self._lock:
            if self._cache is not None and now - self._cache[0] < MAX_AGE_S:
                return self._cache[1]
            out: dict[str, ProgramState] = {}
            for name in self.names:
                program = self._opened.get(name)
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
        """Readings as JSON, each trimmed as its entry says (the busiest processes only)."""
        out = {}
        for name, state in self.readings().items():
            entry = state.to_dict()
            parsed = parse_program(name)
            if not isinstance(parsed, str) and parsed[0].summary is not None and isinstance(entry["reading"], dict):
                entry["reading"] = parsed[0].summary(entry["reading"])
            out[name] = dict(entry, program=name.partition(":")[0])
            out[name]["argument"] = name.partition(":")[2] or None
        return out
