"""eBPF on Linux through libbpf: compiled CO-RE programs, a clean lifecycle, honest errors.

Import it explicitly (``import hypermesh.ebpf``); ``import hypermesh`` does not, to stay cheap.

    import hypermesh.ebpf
    print(hypermesh.ebpf.probe().to_dict())
    with hypermesh.ebpf.load("syscalls", pid=1234) as prog:
        prog.attach()
        ...
        print(prog.read().to_dict())

Built-in programs (``PROGRAMS``): ``xdp`` (per-protocol packet/byte counts on an interface), ``syscalls``
(counts per syscall and per process), ``biolatency`` (block I/O latency histograms), ``execsnoop``
(exec events through a ring buffer), ``tc`` (per-protocol counts in each direction of an interface, through
tcx links or clsact filters), ``profile`` (on-CPU stacks sampled by a cpu-clock perf event,
symbolised: folded stacks, flame graph), ``execguard`` (a BPF LSM guard: audit or refuse execs under path
prefixes for one cgroup). ``ObjectSpec`` opens any user ``.bpf.o`` (what it declares, no
privileges needed); its ``load()`` returns the ``Collection`` the kernel holds (maps, program fds).

Rooms: ``libbpf`` (the binding, the only file touching libbpf.so.1), ``probe`` (features, capabilities
and what to do about a missing one), ``object`` (spec and collection), ``maps``, ``link`` (attach,
detach thread), ``pin`` (what is pinned on bpffs), ``program`` (the built-ins' base), ``programs/``.
"""

from __future__ import annotations

import importlib

from hypermesh.ebpf.link import Link
from hypermesh.ebpf.maps import Map
from hypermesh.ebpf.object import Collection, MapInfo, ObjectInfo, ObjectSpec, ProgramInfo
from hypermesh.ebpf.pin import PIN_ROOT, PinnedObject, PinnedProgram, detach_pinned, pinned
from hypermesh.ebpf.probe import Feature, ProbeReport, probe
from hypermesh.ebpf.program import Program, close_all
from hypermesh.errors import NotFound

__all__ = [
    "PIN_ROOT",
    "PROGRAMS",
    "BpfObject",
    "Collection",
    "Feature",
    "Link",
    "Map",
    "MapInfo",
    "ObjectInfo",
    "ObjectSpec",
    "PinnedObject",
    "PinnedProgram",
    "ProbeReport",
    "Program",
    "ProgramInfo",
    "close_all",
    "detach_pinned",
    "load",
    "pinned",
    "probe",
    "program_class",
]

PROGRAMS = ("xdp", "syscalls", "biolatency", "execsnoop", "tc", "profile", "execguard")

# The earlier name of ObjectSpec, from when one class was both the opened file and the loaded object:
# ``BpfObject(path)`` still opens a file; its ``load()`` now returns the Collection.
BpfObject = ObjectSpec


_classes: dict[str, type[Program]] = {}


def program_class(name: str) -> type[Program]:
    cls = _classes.get(name)
    if cls is None:
        if name not in PROGRAMS:
            raise NotFound(f"no built-in eBPF program {name!r}", list(PROGRAMS))
        module = importlib.import_module(f"hypermesh.ebpf.programs.{name}")
        cls = _classes[name] = module.PROGRAM
    return cls


def load(name: str, **options: object) -> Program:
    """Load the built-in program ``name`` (one of PROGRAMS) into the kernel, not yet attached.

    Options are the program's own (``xdp``: interface, mode; ``syscalls``: pid, attach; ...). The
    result is a context manager: leaving the ``with`` block detaches and unloads it.
    """
    prog = program_class(name)(**options)
    return prog.load()
