"""Sampler: rates since the previous reading, on demand or on a drift-free schedule."""

from __future__ import annotations

import threading
import time

from hypermesh.errors import InvalidInput
from hypermesh.model import (
    Counters,
    CpuTimes,
    DiskCounters,
    LoadAverage,
    MemorySample,
    NetworkCounters,
    Pressure,
    PressureTotals,
    Sample,
)
from hypermesh.sampling import counters as rates

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Protocol

    class StopFlag(Protocol):
        """What stream() takes as ``stop``: threading.Event, or anything with its is_set() and wait(timeout)."""

        def is_set(self) -> bool: ...

        def wait(self, timeout: float | None = None) -> bool: ...

    from hypermesh.model_node import NodeStats
    from hypermesh.platform.base import Backend, RawCounters

__all__ = ["MAX_SECONDS", "MIN_INTERVAL", "Sampler"]


# Longest interval we accept: time.sleep and Event.wait overflow near 2**63 ns, and no schedule needs more.
MAX_SECONDS = 1e6
# Shortest: 1 kHz. One reading costs 50-150 µs of CPU, so far below this the schedule only counts missed
# deadlines while a core spins; and the deadline arithmetic overflows for subnormal intervals (1e-320).
MIN_INTERVAL = 0.001


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInput(f"{name} must be a number of seconds, got {type(value).__name__} {value!r}")
    if not MIN_INTERVAL <= value <= MAX_SECONDS:  # also refuses NaN
        raise InvalidInput(
            f"{name} must be a number of seconds from {MIN_INTERVAL:g} (1 kHz) to {MAX_SECONDS:g}, got {value!r}"
        )
    return float(value)


class Sampler:
    """Turns the backend's counters into a Sample of rates since the previous reading.

    >>> s = Sampler()
    >>> s.sample().cpu.percent          # first call: baseline, waits min_interval, reads again
    >>> for sample in s.stream(0.01, count=100): ...   # 100 Hz on a deadline schedule

    One Sampler may be shared between threads: readings and the rate state are taken under one lock, so each
    caller gets the rates since whichever reading came just before its own.
    """

    def __init__(self, min_interval: float = 0.1, backend: Backend | None = None) -> None:
        min_interval = _seconds("min_interval", min_interval)
        if backend is None:
            from hypermesh.platform import backend as default_backend

            backend = default_backend()
        self.min_interval = float(min_interval)
        self.backend = backend
        self._reader = backend.counter_reader()
        self._lock = threading.Lock()
        self._prev: RawCounters | None = None
        self._cpu = rates.CpuRates(backend.cpu_times_source)
        self._closed = False
        self._closing = threading.Event()  # wakes a stream() sleeping towards its next deadline
        self.missed_deadlines = 0

    def close(self) -> None:
        """Release the files the reader keeps open. Later calls raise InvalidInput; a running stream() ends."""
        self._closed = True
        self._closing.set()
        with self._lock:
            self._reader.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _read(self) -> RawCounters:
        # Under self._lock.
        if self._closed:
            raise InvalidInput("this Sampler is closed; create a new hypermesh.Sampler()")
        return self._reader.read()

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def sample(self) -> Sample:
        """Rates since the previous reading; the first call takes a baseline and waits ``min_interval``."""
        with self._lock:
            prev = self._prev
            if prev is None:
                prev = self._read()
                time.sleep(self.min_interval)
            cur = self._read()
            elapsed = cur.monotonic - prev.monotonic
            if elapsed <= 0:  # two reads within the clock's resolution: nothing to divide by yet
                time.sleep(1e-6)
                cur = self._read()
                elapsed = max(cur.monotonic - prev.monotonic, 1e-9)
            self._prev = cur
            return self._build(prev, cur, elapsed)

    def _build(self, prev: RawCounters, cur: RawCounters, elapsed: float) -> Sample:
        return Sample(
            timestamp=cur.wall,
            interval_s=elapsed,
            cpu=self._cpu.compute(prev, cur, elapsed),
            memory=_memory(cur, rates.pressure(prev, cur, elapsed)),
            disks=tuple(rates.disk_rates(prev, cur, elapsed)),
            network=tuple(rates.network_rates(prev, cur, elapsed)),
            load=LoadAverage(*cur.load),
        )

    def stream(self, interval: float, count: int | None = None, stop: StopFlag | None = None) -> Iterator[Sample]:
        """Yield a Sample every ``interval`` seconds, ``count`` times (forever when None) or until ``stop`` is set
        (a threading.Event, or anything with its ``is_set()`` and ``wait(timeout)``: looked at every 0.1 s at most).

        Deadlines are ``start + k * interval``, so time spent by the consumer or the reading never accumulates
        as drift. A consumer slower than the interval skips the deadlines it missed rather than bursting to
        catch up; ``missed_deadlines`` counts them.
        """
        interval = _seconds("interval", interval)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise InvalidInput(f"count must be a whole number, 1 or more, got {count!r}")
        with self._lock:
            if self._prev is None:
                self._prev = self._read()
        start = time.monotonic()
        k = 0
        while (count is None or k < count) and not (stop is not None and stop.is_set()) and not self._closed:
            k += 1
            deadline = start + k * interval
            delay = deadline - time.monotonic()
            if delay > 0:
                if self._wait(delay, stop):
                    return  # stopped or closed while waiting: nobody need wait out the interval
            elif -delay >= interval:
                skipped = int(-delay // interval)
                self.missed_deadlines += skipped
                start += skipped * interval
            try:
                sample = self.sample()
            except InvalidInput:
                if self._closed:
                    return  # closed by another thread while we waited: the stream just ends
                raise
            yield sample

    def _wait(self, delay: float, stop: StopFlag | None) -> bool:
        """Sleep ``delay`` seconds; True as soon as ``stop`` is set or the Sampler is closed."""
        if stop is None:
            return self._closing.wait(delay)
        # Two events cannot be waited on at once: wait on the caller's, looking at ours every 0.1 s.
        end = time.monotonic() + delay
        while not stop.wait(min(delay, 0.1)):
            delay = end - time.monotonic()
            if self._closed:
                return True
            if delay <= 0:
                return False
        return True

    def node_stats(self) -> NodeStats:
        """The node's other kernel statistics (meminfo, vmstat, SNMP, filesystems...) read fresh; own files, own lock."""
        return self.backend.node_stats()

    def unreadable_sources(self) -> dict[str, str]:
        """Kernel files that should be there but could not be read, by the counters or the last node_stats():
        ``{name: "path: reason"}``. A collector built on them has nothing to report and should say it failed."""
        found = dict(self._reader.unreadable)  # a C-level copy, whole under the GIL: no lock to wait behind
        found.update(self.backend.node_stats_unreadable())
        return found

    def node_stats_may_block(self) -> bool:
        """Whether node_stats() may wait on a network or FUSE filesystem, as of its last read (True before one)."""
        return self.backend.node_stats_may_block()

    def counters(self) -> Counters:
        """A fresh reading of the raw monotonic counters (what Prometheus wants), leaving the rate state alone."""
        with self._lock:
            raw = self._read()
        psi = raw.pressure
        return Counters(
            timestamp=raw.wall,
            monotonic=raw.monotonic,
            cpu=tuple([CpuTimes(cpu, *times) for cpu, times in sorted(raw.cpu.items())]),
            memory=_memory(raw, None),
            pressure=None
            if psi is None
            else PressureTotals(
                some_total_seconds=psi[2] / 1e6,
                full_total_seconds=None if psi[3] is None else psi[3] / 1e6,
                some_avg10=psi[0],
                full_avg10=psi[1],
            ),
            disks=tuple(
                [
                    DiskCounters(
                        name=name,
                        read_ops=v[0],
                        read_bytes=v[1],
                        read_time_seconds=v[2] / 1000,
                        write_ops=v[3],
                        write_bytes=v[4],
                        write_time_seconds=v[5] / 1000,
                        busy_seconds=v[6] / 1000,
                    )
                    for name, v in sorted(raw.disks.items())
                ]
            ),
            network=tuple([NetworkCounters(name, *values) for name, values in sorted(raw.network.items())]),
            load=LoadAverage(*raw.load),
        )


def _memory(raw: RawCounters, pressure: Pressure | None) -> MemorySample:
    total, available, cached, used, swap_used = raw.memory
    return MemorySample(
        total_bytes=total,
        used_bytes=used,
        available_bytes=available,
        cached_bytes=cached,
        swap_used_bytes=swap_used,
        pressure=pressure,
    )
