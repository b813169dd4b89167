"""``syscalls``: counts per syscall name and per process, with pid and cgroup filters applied in the kernel.

Three hooks fill the same maps: ``kprobe`` (on x64_sys_call, x86-64 kernels with CONFIG_KPROBES),
``raw_tracepoint`` (sys_enter through BPF_RAW_TRACEPOINT_OPEN, Linux >= 4.17, no tracefs needed) and
``tracepoint`` (raw_syscalls:sys_enter, whose id libbpf reads from tracefs). ``auto`` takes the kprobe
where the kernel has kprobes, else the raw tracepoint, else the tracefs tracepoint; ``attach_type``
says which.
"""

from __future__ import annotations

import ctypes
import operator
import platform
import struct

from hypermesh.ebpf.filters import check_cgroup, check_process, positive_int_or_none, set_filters
from hypermesh.ebpf.link import Link
from hypermesh.ebpf.object import Collection, ObjectSpec
from hypermesh.ebpf.probe import Feature, check_capabilities, kprobes_absent_reason, probe, raw_tracepoints
from hypermesh.ebpf.program import Program
from hypermesh.ebpf.syscall_names import syscall_name
from hypermesh.errors import InvalidInput, Unsupported
from hypermesh.model import Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["PROCESS_TABLE_SIZE", "SyscallCounts", "SyscallsProgram", "choose_hook"]

ATTACH_TYPES = ("auto", "kprobe", "raw_tracepoint", "tracepoint")
# The program each hook loads (the others' autoload is off).
HOOK_PROGRAMS = {"kprobe": "on_x64_sys_call", "raw_tracepoint": "raw_sys_enter", "tracepoint": "on_sys_enter"}
KPROBE_FUNCTION = "x64_sys_call"
_PROC_COUNT = struct.Struct("<Q16sQ")  # struct proc_count: count, comm, refresh
PROCESS_TABLE_SIZE = 10240  # process_counts' max_entries in syscalls.bpf.c


@record
class ProcessCount(Record):
    pid: int
    comm: str
    count: int


@record
class SyscallCounts(Record):
    attach_type: str
    pid_filter: int | None
    cgroup_filter: str | None
    total: int
    syscalls: Mapping[str, int]
    processes: tuple[ProcessCount, ...]
    # Syscalls (in total) of processes the per-process table had no room for: it holds
    # PROCESS_TABLE_SIZE processes per run, and a long run over a busy machine can see more.
    untracked: int


_kallsyms_cache: dict[str, bool] = {}
_names_cache: list[str] = []


def _names(slots: int) -> list[str]:
    """Syscall names by number, made once per process (512 lookups cost ~0.3 ms: not at every load)."""
    if len(_names_cache) != slots:
        _names_cache[:] = [syscall_name(nr) for nr in range(slots)]
    return _names_cache


def _has_kallsyms_symbol(name: str) -> bool:
    """Whether the running kernel has the function ``name`` (cached: /proc/kallsyms is ~10 MB)."""
    if name not in _kallsyms_cache:
        needle = f" {name}\n".encode()
        try:
            with open("/proc/kallsyms", "rb") as f:
                _kallsyms_cache[name] = needle in f.read()
        except OSError:
            _kallsyms_cache[name] = False
    return _kallsyms_cache[name]


def choose_hook(
    attach: str,
    kprobe: Feature,
    *,
    kernel_has_kprobes: bool,
    machine: str,
    has_symbol: bool,
    raw_tracepoint: Feature | None = None,
) -> tuple[str, str]:
    """(hook, why) for ``attach`` given what was observed. ``kprobe`` is the probe's answer, which
    is unsupported either because the kernel has no kprobes (``kernel_has_kprobes`` False) or because
    this process may not use them; ``raw_tracepoint`` says whether raw tracepoints load (None: they
    do). Raises for an explicit ``kprobe`` that cannot be had."""
    if attach in ("tracepoint", "raw_tracepoint"):
        return attach, "asked for"
    if not kprobe.supported:
        # (only the first clause of a capability reason: the fix follows in the error, if any)
        usable = kprobe.reason.split(";", 1)[0]
        why = "no kprobes in this kernel" if not kernel_has_kprobes else f"kprobes not usable here: {usable}"
    elif machine != "x86_64":
        why = f"the kprobe on {KPROBE_FUNCTION} exists on x86-64 only, this is {machine}"
    elif not has_symbol:
        why = f"the kernel has kprobes but no {KPROBE_FUNCTION} to probe (x86-64 >= 6.9 or the 6.1/6.6 stable series)"
    else:
        return "kprobe", "the kernel has kprobes" if attach == "auto" else "asked for"
    if attach == "kprobe":
        if not kprobe.supported:
            if kernel_has_kprobes:
                # The probe could not tell for lack of a capability: that is the actionable reason.
                check_capabilities(SyscallsProgram.capabilities, what="the syscalls program's kprobe")
            raise Unsupported("kprobe attach", kprobe.reason)
        raise Unsupported("kprobe attach", why)
    if raw_tracepoint is None or raw_tracepoint.supported:
        return "raw_tracepoint", why
    return "tracepoint", f"{why}; no raw tracepoints: {raw_tracepoint.reason}"


def _choose_hook(attach: str) -> tuple[str, str]:
    if attach == "tracepoint":
        return "tracepoint", "asked for"
    if attach == "raw_tracepoint":
        raw = raw_tracepoints()
        if not raw.supported:
            check_capabilities(SyscallsProgram.capabilities, what="the syscalls program's raw tracepoint")
            raise Unsupported("raw tracepoint attach", raw.reason)
        return "raw_tracepoint", "asked for"
    known = _settled_hooks.get(attach)
    if known is not None:
        return known
    # Without the kprobe PMU no capability or probe can change the answer: the whole probe() (tens
    # of ms, a load of an fentry program among others) is skipped.
    absent = kprobes_absent_reason()
    kprobe = Feature("kprobe", False, absent) if absent is not None else probe().feature("kprobe")
    raw_tp = None if attach == "kprobe" else raw_tracepoints()
    chosen = choose_hook(
        attach,
        kprobe,
        kernel_has_kprobes=absent is None,
        machine=platform.machine(),
        has_symbol=kprobe.supported and _has_kallsyms_symbol(KPROBE_FUNCTION),
        raw_tracepoint=raw_tp,
    )
    if absent is not None and raw_tp is not None and raw_tp.supported:
        # Both answers hold for the life of the kernel (no kprobes; raw tracepoints load): so does the choice.
        _settled_hooks[attach] = chosen
    return chosen


_settled_hooks: dict[str, tuple[str, str]] = {}


class SyscallsProgram(Program):
    name = "syscalls"

    def __init__(
        self, pid: int | None = None, attach: str = "auto", top: int | None = None, cgroup: str | None = None
    ) -> None:
        super().__init__()
        if attach not in ATTACH_TYPES:
            raise InvalidInput(f"--attach must be one of {', '.join(ATTACH_TYPES)}, got {attach!r}")
        pid = positive_int_or_none("pid", pid)
        self.top = positive_int_or_none("top", top)
        if pid is not None:
            check_process(pid)
        self.pid = pid
        self.cgroup = None if cgroup is None else check_cgroup(cgroup)
        self.requested_attach = attach
        self.attach_type, self.attach_reason = _choose_hook(attach)

    def _configure(self, spec: ObjectSpec) -> None:
        # A fresh handle loads every program (no section of ours is "?"-prefixed): only the other
        # hooks' programs are turned off, a libbpf call less per load.
        for hook, program in HOOK_PROGRAMS.items():
            if hook != self.attach_type:
                spec.set_autoload(program, False)

    def _after_load(self, collection: Collection) -> None:
        set_filters(collection, "config", self.pid, self.cgroup)
        self._reader_ready = False

    def _prepare_read(self, collection: Collection) -> None:
        """The maps and buffers ``read()`` uses, made at the first read rather than in the load."""
        self._syscalls = collection.map("syscall_counts")
        self._processes = collection.map("process_counts")
        self._syscall_slots = self._syscalls.value_size // 8  # syscall_table: one u64 per syscall number
        self._names = _names(self._syscall_slots)
        self._cpus = self._syscalls.cpus
        self._table_key = ctypes.create_string_buffer(4)  # key 0: the one value holds every counter
        self._table_value = ctypes.create_string_buffer(self._syscalls.value_buffer_size)
        self._untracked = collection.map("untracked")
        self._untracked_key = ctypes.create_string_buffer(4)  # key 0
        self._untracked_value = ctypes.create_string_buffer(self._untracked.value_buffer_size)
        self._reader_ready = True

    def _attach(self, collection: Collection) -> list[Link]:
        if self.attach_type == "kprobe":
            return [collection.attach_kprobe("on_x64_sys_call", KPROBE_FUNCTION)]
        if self.attach_type == "raw_tracepoint":
            return [collection.attach_raw_tracepoint("raw_sys_enter", "sys_enter")]
        return [collection.attach_tracepoint("on_sys_enter", "raw_syscalls", "sys_enter")]

    def read(self) -> SyscallCounts:
        with self._read_lock:
            collection = self._require_loaded()  # under the lock: close() takes it too
            if not self._reader_ready:
                self._prepare_read(collection)
            # The program keeps counting while we read (our own bpf() calls among them): the parts first, the
            # totals last, so that no process or untracked count can exceed the total read with it.
            processes = self._read_processes()
            untracked = 0
            if self._untracked.lookup_into(self._untracked_key, self._untracked_value):
                untracked = sum(memoryview(self._untracked_value).cast("B").cast("Q"))
            syscalls = self._read_syscalls()
        processes.sort(key=lambda p: (-p.count, p.pid))
        ordered = dict(sorted(syscalls.items(), key=lambda kv: (-kv[1], kv[0])))
        if self.top is not None:
            ordered = dict(list(ordered.items())[: self.top])
            processes = processes[: self.top]
        return SyscallCounts(
            attach_type=self.attach_type,
            pid_filter=self.pid,
            cgroup_filter=self.cgroup,
            total=sum(syscalls.values()),
            syscalls=ordered,
            processes=tuple(processes),
            untracked=untracked,
        )

    def _read_syscalls(self) -> dict[str, int]:
        if not self._syscalls.lookup_into(self._table_key, self._table_value):
            return {}
        # One table per possible CPU, one after the other: add them up slot by slot.
        slots = self._syscall_slots
        words = memoryview(self._table_value).cast("B").cast("Q")
        totals = list(words[0:slots])
        for cpu in range(1, self._cpus):
            totals = list(map(operator.add, totals, words[cpu * slots : (cpu + 1) * slots]))
        names = self._names
        return {names[nr]: count for nr, count in enumerate(totals) if count}

    def _read_processes(self) -> list[ProcessCount]:
        keys, values, _ = self._processes.read_all()  # one batched bpf() call (kernel >= 5.6)
        return [
            ProcessCount(pid=pid, comm=comm.split(b"\0", 1)[0].decode("utf-8", "replace"), count=count)
            for pid, (count, comm, _refresh) in zip(keys.cast("I"), _PROC_COUNT.iter_unpack(values), strict=True)
        ]


PROGRAM = SyscallsProgram
