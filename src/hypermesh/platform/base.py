"""The seam every OS backend implements, and the raw reading that crosses it.

A backend answers two questions: what the machine is (``profile()``) and what its counters say now
(``counter_reader().read()``). Counters are monotonic since boot; a backend never computes a rate:
``hypermesh.sampling.counters`` does, in one place, for every backend alike.

``RawCounters`` is deliberately not a public record: it is built up to 100 times a second, so it is a
slotted object of plain tuples and dicts; ``hypermesh.sampling.sampler.Sampler.counters()`` turns it into the
public ``hypermesh.model.Counters`` record when someone asks.
"""

from __future__ import annotations

import time

from hypermesh.errors import BackendError
from hypermesh.model import SystemProfile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol, TypeVar

    from hypermesh.model import CpuInfo, Limits, MemoryInfo, NetworkInterface, OsInfo, StorageDevice
    from hypermesh.model_node import NodeStats

    T = TypeVar("T")

    class CounterReader(Protocol):
        # Sources that should be there but could not be read: {name: "path: reason"} (empty where all were).
        unreadable: dict[str, str]

        def read(self) -> RawCounters: ...

        def close(self) -> None: ...

    class Backend(Protocol):
        name: str
        # Where the coarse per-mode CPU times come from, reported as cpu.source when no finer source exists.
        cpu_times_source: str

        def profile(self) -> SystemProfile: ...

        def counter_reader(self) -> CounterReader: ...

        def node_stats(self) -> NodeStats: ...

        def node_stats_unreadable(self) -> dict[str, str]:
            """The node-stats sources the last node_stats() could not read: {name: "path: reason"}."""
            ...

        def node_stats_may_block(self) -> bool:
            """Whether node_stats() may wait on something outside the kernel (a network or FUSE filesystem)."""
            ...


__all__ = ["CPU_MODES", "DISK_FIELDS", "DISK_WIDTHS", "NET_FIELDS", "NET_WIDTHS", "RawCounters", "assemble_profile"]


# Positions inside the tuples of RawCounters (documented once, used by sampling and the portable backend).
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
DISK_FIELDS = ("read_ops", "read_bytes", "read_ms", "write_ops", "write_bytes", "write_ms", "busy_ms")
NET_FIELDS = (
    "rx_bytes",
    "rx_packets",
    "rx_errors",
    "rx_drops",
    "tx_bytes",
    "tx_packets",
    "tx_errors",
    "tx_drops",
)

# Bit widths of counters the kernel keeps narrower than 64 bits on 64-bit machines.
# /proc/diskstats io_ticks and the time fields are `unsigned int` milliseconds (block/genhd.c).
DISK_WIDTHS = (64, 64, 32, 64, 64, 32, 32)
NET_WIDTHS = (64,) * 8


class RawCounters:
    """One read of every counter.

    - ``monotonic``/``wall``: time.monotonic() and time.time() at the read.
    - ``cpu``: {cpu id: seconds in each of CPU_MODES} (coarse: USER_HZ ticks on Linux).
    - ``fine_kind``/``fine``: a finer per-CPU source where the OS has one, else None:
      "schedstat" -> {cpu: (busy_seconds, 0)}; "cpuidle" -> {cpu: (idle_seconds, idle_exits)}.
    - ``memory``: (total, available, cached, used, swap_used) bytes; cached = page cache + reclaimable slab.
    - ``pressure``: (some_avg10, full_avg10 | None, some_total_us, full_total_us | None) or None without PSI.
    - ``disks``: {name: DISK_FIELDS values}; ``network``: {name: NET_FIELDS values}.
    - ``load``: (avg1, avg5, avg15).
    """

    __slots__ = (
        "cpu",
        "disks",
        "fine",
        "fine_kind",
        "load",
        "memory",
        "monotonic",
        "network",
        "pressure",
        "wall",
    )

    def __init__(
        self,
        monotonic: float,
        wall: float,
        cpu: dict[int, tuple[float, ...]],
        fine_kind: str | None,
        fine: dict[int, tuple[float, int]] | None,
        memory: tuple[int, int, int, int, int],
        pressure: tuple[float, float | None, int, int | None] | None,
        disks: dict[str, tuple[int, ...]],
        network: dict[str, tuple[int, ...]],
        load: tuple[float, float, float],
    ) -> None:
        self.monotonic = monotonic
        self.wall = wall
        self.cpu = cpu
        self.fine_kind = fine_kind
        self.fine = fine
        self.memory = memory
        self.pressure = pressure
        self.disks = disks
        self.network = network
        self.load = load


class Stopwatch:
    """Per-part timings of a profile in milliseconds, as SystemProfile.timings_ms reports them.

    >>> watch = Stopwatch(); os_info = read_os(); watch.lap("os"); ...; watch.timings_ms()
    """

    __slots__ = ("_last", "_start", "_timings")

    def __init__(self) -> None:
        self._timings: dict[str, float] = {}
        self._start = self._last = time.perf_counter()

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self._timings[part] = round((now - self._last) * 1000.0, 3)
        self._last = now

    def timings_ms(self) -> dict[str, float]:
        """The laps so far plus ``total``."""
        return {**self._timings, "total": round((self._last - self._start) * 1000.0, 3)}


def assemble_profile(
    *,
    os: Callable[[], OsInfo],
    cpu: Callable[[], CpuInfo],
    memory: Callable[[], MemoryInfo],
    storage: Callable[[], list[StorageDevice]],
    network: Callable[[], list[NetworkInterface]],
    limits: Callable[[], Limits],
    gpus: Callable[[], list[dict[str, object]]],
    where: str | None = None,
) -> SystemProfile:
    """The SystemProfile every backend returns: its parts read in this order, each timed.

    ``where`` names what the parts read (a Linux root): a part whose files do not parse (ValueError, IndexError,
    KeyError from a parser) then raises BackendError naming the part and that place. Without it such errors pass.
    """
    watch = Stopwatch()

    def part(name: str, read: Callable[[], T]) -> T:
        try:
            return read()
        except (ValueError, IndexError, KeyError) as exc:
            if where is None:
                raise
            raise BackendError(f"the {name} part of the profile under {where} did not parse: {exc}") from exc
        finally:
            watch.lap(name)

    os_info = part("os", os)
    cpu_info = part("cpu", cpu)
    memory_info = part("memory", memory)
    storage_devices = part("storage", storage)
    interfaces = part("network", network)
    binding_limits = part("limits", limits)
    gpu_identities = part("gpus", gpus)  # the gpu layer (NVML, DRM) on every OS; a headless host has none
    return SystemProfile(
        os=os_info,
        cpu=cpu_info,
        memory=memory_info,
        storage=tuple(storage_devices),
        network=tuple(interfaces),
        gpus=tuple(gpu_identities),
        limits=binding_limits,
        timings_ms=watch.timings_ms(),
    )
