"""``profile``: on-CPU stacks sampled by a software cpu-clock perf event, symbolised in user space.

One perf event per online CPU fires ``frequency_hz`` times per second of CPU time; the BPF program
(profile.bpf.c) records the interrupted task's kernel and user stacks in a stack map and counts
samples per (process, comm, user stack, kernel stack). ``read()`` turns that into stacks of named
frames (hypermesh.ebpf.symbols), ``folded()`` into FlameGraph's folded format, and
hypermesh.ebpf.flamegraph into an SVG.

Nothing is dropped silently: samples the counts map had no room for, stacks the stack map could not
store (a hash collision or a full map) and frames no symbol was found for are counted in the report,
and appear in the folded output as ``[lost ...]`` frames and ``module+0xoffset`` names.
"""

from __future__ import annotations

import ctypes
import struct
import time

from hypermesh.ebpf.btf import minimised_btf
from hypermesh.ebpf.cgroup_target import CgroupTarget, resolve_cgroup
from hypermesh.ebpf.filters import check_process
from hypermesh.ebpf.link import Link
from hypermesh.ebpf.object import Collection
from hypermesh.ebpf.perf_event import CpuOffline, online_cpus, open_cpu_clock
from hypermesh.ebpf.program import Program
from hypermesh.ebpf.symbols import Frame, Symbolizer
from hypermesh.errors import InvalidInput
from hypermesh.model import Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_FREQUENCY_HZ",
    "ProfileProgram",
    "ProfileReport",
    "ProfileStack",
    "folded",
    "report_summary",
    "report_svg",
]

DEFAULT_FREQUENCY_HZ = 99  # not 100: stays out of lock-step with timer ticks and 10 ms periodic work
MAX_FREQUENCY_HZ = 10_000
EFAULT, ENOMEM, EEXIST = 14, 12, 17
# (tgid u32, user stack id s32, kernel stack id s32, comm char[16]) as in profile.bpf.c
_KEY = struct.Struct("<Iii16s")
_CONFIG = struct.Struct("<IIIIQ")  # struct profile_config
# stats[] in profile.bpf.c, by index
STATS = (
    "samples",
    "idle",
    "kernel_stack_collision",
    "kernel_stack_map_full",
    "kernel_stack_other",
    "user_stack_collision",
    "user_stack_map_full",
    "user_stack_other",
    "counts_map_full",
)
KALLSYMS_HIDDEN = (
    "/proc/kallsyms shows this process only zero addresses (kernel.kptr_restrict, or perf_event_paranoid > 1 "
    "without CAP_SYSLOG), so kernel frames stay [unknown]: run as root or grant CAP_SYSLOG"
)
_LOST_STACK = {-EEXIST: "collision", -ENOMEM: "stack map full"}


@record
class ProfileStack(Record):
    pid: int
    comm: str
    count: int
    frames: tuple[Frame, ...]  # outermost first: user frames, then kernel frames


@record
class ProfileReport(Record):
    frequency_hz: int
    duration_seconds: float
    pid_filter: int | None
    cgroup_filter: str | None
    cpus: tuple[int, ...]
    samples: int  # samples that passed the filters
    recorded_samples: int  # of those, the ones in `stacks` (the rest: lost_samples)
    lost_samples: int  # whole samples lost: the counts map was full
    idle_samples: int  # samples of the idle task, not recorded
    lost_stacks: Mapping[str, int]  # samples recorded with a stack the stack map could not store, by cause
    frames: int  # frames in `stacks`
    unsymbolized_frames: int  # of those, no symbol found
    stacks: tuple[ProfileStack, ...]
    notes: tuple[str, ...] = ()  # why frames could not be named, and what to do about it


def _frequency(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"frequency_hz must be an int, got {type(value).__name__} {value!r}")
    if not 1 <= value <= MAX_FREQUENCY_HZ:
        raise InvalidInput(f"--frequency must be between 1 and {MAX_FREQUENCY_HZ} Hz, got {value}")
    return value


class ProfileProgram(Program):
    name = "profile"

    def __init__(
        self,
        pid: int | None = None,
        cgroup: str | None = None,
        frequency_hz: int = DEFAULT_FREQUENCY_HZ,
        symbolizer: Symbolizer | None = None,
    ) -> None:
        super().__init__()
        if pid is not None and cgroup is not None:
            raise InvalidInput("--pid and --cgroup are exclusive: choose one filter")
        if pid is not None:
            if isinstance(pid, bool) or not isinstance(pid, int) or pid < 1:
                raise InvalidInput(f"pid must be an int >= 1, got {pid!r}")
            check_process(pid)  # a process, not one of its threads: the filter compares the tgid
        self.pid = pid
        self.cgroup: CgroupTarget | None = resolve_cgroup(cgroup) if cgroup is not None else None
        self.frequency_hz = _frequency(frequency_hz)
        self.symbolizer = symbolizer or Symbolizer()
        self.cpus: tuple[int, ...] = ()
        self._started: float | None = None
        self._seen_pids: set[int] = set()

    # The cgroup filter reads kernel structs with CO-RE: relocating against the whole vmlinux BTF made a
    # load 169 ms (p50, a 2-vCPU VM), execsnoop's cached minimised BTF 33 ms.
    def _btf_custom_path(self) -> str | None:
        return minimised_btf(self.object_path)

    def _btf_fallbacks(self, failed: str) -> list[str | None]:
        rebuilt = minimised_btf(self.object_path, rebuild=True)
        return [rebuilt, None] if rebuilt is not None else [None]

    def _after_load(self, collection: Collection) -> None:
        target = self.cgroup
        config = _CONFIG.pack(
            self.pid or 0,
            0 if target is None else target.mode,
            0 if target is None else target.hierarchy_id,
            0 if target is None else target.level,
            0 if target is None else target.cgroup_id,
        )
        collection.map("settings").update(struct.pack("<I", 0), config)
        self._counts = collection.map("counts")
        self._stacks = collection.map("stacks")
        self._stats = collection.map("stats")

    def _attach(self, collection: Collection) -> list[Link]:
        links: list[Link] = []
        cpus = []
        try:
            for cpu in online_cpus():
                try:
                    fd = open_cpu_clock(cpu, self.frequency_hz)
                except CpuOffline:
                    continue  # went offline since the list was read
                links.append(collection.attach_perf_event("on_sample", fd, f"cpu-clock cpu{cpu}"))
                cpus.append(cpu)
        except BaseException:
            for link in links:
                link.close()
            raise
        self.cpus = tuple(cpus)
        self._started = time.monotonic()
        return links

    def remember_processes(self) -> int:
        """Snapshot the maps of processes sampled so far (while they run: one may exit before the
        end); returns how many processes have been seen. Call it now and then during a profile."""
        with self._read_lock:
            self._require_loaded()
            pairs = self._counts.items()
        for key, _ in pairs:
            pid = _KEY.unpack_from(key)[0]
            if pid not in self._seen_pids:
                self._seen_pids.add(pid)
                self.symbolizer.remember(pid)
        return len(self._seen_pids)

    def read(self) -> ProfileReport:
        with self._read_lock:
            self._require_loaded()
            # The program keeps sampling while we read: counts first, the stats (their totals) last.
            pairs = self._counts.items()
            ids = {i for key, _ in pairs for i in _KEY.unpack_from(key)[1:3] if i >= 0}
            addresses = {i: self._read_stack(i) for i in ids}
            stats = self._read_stats()
        duration = 0.0 if self._started is None else time.monotonic() - self._started
        kernel_cache: dict[int, list[Frame]] = {}
        user_cache: dict[tuple[int, int], list[Frame]] = {}
        stacks = []
        for key, value in pairs:
            pid, user_id, kernel_id, comm = _KEY.unpack_from(key)
            if user_id >= 0 and (pid, user_id) not in user_cache:
                user_cache[pid, user_id] = self.symbolizer.user_frames(pid, addresses[user_id])[::-1]
            if kernel_id >= 0 and kernel_id not in kernel_cache:
                kernel_cache[kernel_id] = self.symbolizer.kernel_frames(addresses[kernel_id])[::-1]
            frames = [
                *_stack_part(user_id, user_cache.get((pid, user_id)), "user"),
                *_stack_part(kernel_id, kernel_cache.get(kernel_id), "kernel"),
            ]
            stacks.append(
                ProfileStack(
                    pid=pid,
                    comm=comm.split(b"\0", 1)[0].decode("utf-8", "replace"),
                    count=int.from_bytes(value[:8], "little"),
                    frames=tuple(frames),
                )
            )
        stacks.sort(key=lambda s: (-s.count, s.pid, s.comm))
        all_frames = [f for s in stacks for f in s.frames if f.kind != "lost"]
        notes = []
        if not stats["samples"]:
            notes.append("no samples: nothing that matches the filter ran on a CPU during the profile")
        if kernel_cache and self.symbolizer.kernel().restricted:
            notes.append(KALLSYMS_HIDDEN)
        return ProfileReport(
            frequency_hz=self.frequency_hz,
            duration_seconds=round(duration, 3),
            pid_filter=self.pid,
            cgroup_filter=None if self.cgroup is None else self.cgroup.path,
            cpus=self.cpus,
            samples=stats["samples"],
            recorded_samples=sum(s.count for s in stacks),
            lost_samples=stats["counts_map_full"],
            idle_samples=stats["idle"],
            lost_stacks={k: v for k, v in stats.items() if "_stack_" in k},
            frames=len(all_frames),
            unsymbolized_frames=sum(1 for f in all_frames if not f.symbolized),
            stacks=tuple(stacks),
            notes=tuple(notes),
        )

    def _read_stack(self, stack_id: int) -> list[int]:
        key = ctypes.create_string_buffer(struct.pack("<I", stack_id), 4)
        value = ctypes.create_string_buffer(self._stacks.value_size)
        if not self._stacks.lookup_into(key, value):
            return []
        words = memoryview(value.raw).cast("Q")
        out = []
        for address in words:
            if address == 0:  # the kernel zero-fills past the last frame
                break
            out.append(address)
        return out

    def _read_stats(self) -> dict[str, int]:
        values: dict[str, int] = {}
        key = ctypes.create_string_buffer(4)
        value = ctypes.create_string_buffer(self._stats.value_buffer_size)
        for index, name in enumerate(STATS):
            ctypes.memmove(key, struct.pack("<I", index), 4)
            found = self._stats.lookup_into(key, value)
            values[name] = sum(memoryview(value.raw).cast("Q")) if found else 0
        return values


def _stack_part(stack_id: int, frames: list[Frame] | None, kind: str) -> list[Frame]:
    if stack_id >= 0:
        return frames or []
    if stack_id == -EFAULT:  # no stack of this kind: user mode (kernel part) or a kernel thread (user part)
        return []
    cause = _LOST_STACK.get(stack_id, f"error {-stack_id}")
    return [Frame(f"[{kind} stack lost: {cause}]", "lost", "", 0, False)]


def folded_name(frame: Frame) -> str:
    """A frame as FlameGraph's folded format writes it (kernel frames marked _[k], JIT frames _[j])."""
    name = frame.name.replace(";", ":").replace("\n", " ")
    if frame.kind == "kernel":
        return name + "_[k]"
    if frame.kind == "jit":
        return name + "_[j]"
    return name


def folded(report: ProfileReport) -> str:
    """``comm;outermost;...;leaf count`` a line, identical stacks of several processes merged."""
    lines: dict[str, int] = {}
    for stack in report.stacks:
        names = [stack.comm.replace(";", ":") or "[unnamed]", *(folded_name(f) for f in stack.frames)]
        line = ";".join(names)
        lines[line] = lines.get(line, 0) + stack.count
    if report.lost_samples:
        lines["[lost samples: counts map full]"] = report.lost_samples
    return "".join(f"{line} {count}\n" for line, count in sorted(lines.items(), key=lambda kv: (-kv[1], kv[0])))


PROGRAM = ProfileProgram


def report_summary(report: ProfileReport) -> str:
    """One line: samples, what was lost and why, frames left unnamed."""
    lost_stacks = sum(report.lost_stacks.values())
    return (
        f"{report.samples} samples in {len(report.stacks)} stacks, {report.lost_samples} lost (counts map full), "
        f"{lost_stacks} with a stack lost (stack map), {report.unsymbolized_frames} of {report.frames} frames "
        f"unsymbolised, {report.idle_samples} idle"
    )


def report_svg(report: ProfileReport) -> str:
    """The report as a self-contained interactive flame graph (flamegraph.py)."""
    from hypermesh.ebpf.flamegraph import parse_folded, render_svg

    where = f"pid {report.pid_filter}" if report.pid_filter else report.cgroup_filter or "all processes"
    title = f"hypermesh ebpf profile: {where}, {report.duration_seconds:g} s at {report.frequency_hz} Hz"
    return render_svg(parse_folded(folded(report)), title=title, subtitle=report_summary(report))
