"""Counters to rates: the only place hypermesh turns two readings into per-second figures.

Rules, the same for every backend and device:
- A counter that went forward gives ``cur - prev``.
- A counter that went backwards from the upper half of its range wrapped (32- or 64-bit): the delta is what
  crossed the boundary. That is exact for any true increment below half the range within one interval.
- A counter that went backwards from the lower half was reset (driver reload, device removed and re-added):
  there is no honest delta, so the device takes a new baseline and is left out of this one sample.
- A device present in only one of the two readings (hot-plug) is likewise left out until it has a baseline.
Nothing here returns a negative rate.
"""

from __future__ import annotations

from hypermesh.model import CpuSample, DiskRates, NetworkRates, Pressure
from hypermesh.platform.base import DISK_WIDTHS, NET_WIDTHS

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from hypermesh.platform.base import RawCounters

__all__ = ["CpuRates", "counter_delta", "disk_rates", "network_rates", "pressure"]

# Shares of an interval closer than this to one half are an even split of its ticks (float noise aside).
TIE_TOLERANCE = 1e-9


def counter_delta(prev: int, cur: int, bits: int = 64) -> int | None:
    """How much a ``bits``-wide counter advanced from ``prev`` to ``cur``; None when it was reset."""
    if cur >= prev:
        return cur - prev
    if prev >= 1 << (bits - 1):
        return cur + (1 << bits) - prev
    return None


_NO_CHANGE = (0,) * 8


def _deltas(prev: tuple[int, ...], cur: tuple[int, ...], widths: tuple[int, ...]) -> tuple[int, ...] | list[int] | None:
    if cur is prev:  # the reader reuses the parsed tuple of an unchanged line (procfs.LineMemo)
        return _NO_CHANGE
    out = []
    for p, c, w in zip(prev, cur, widths, strict=True):
        if c >= p:
            out.append(c - p)
        else:
            d = counter_delta(p, c, w)
            if d is None:
                return None
            out.append(d)
    return out


def _changed(
    before: dict[str, tuple[int, ...]], after: dict[str, tuple[int, ...]], widths: tuple[int, ...]
) -> Iterator[tuple[str, tuple[int, ...] | list[int]]]:
    """(device, deltas) for each device in both readings whose counters did not reset in between."""
    for name, values in after.items():
        old = before.get(name)
        if old is not None and (d := _deltas(old, values, widths)) is not None:
            yield name, d


# A device whose line did not change has all-zero rates whatever the interval: records are immutable, so one
# per name serves every sample (most interfaces and disks of a host are idle in most intervals). Bounded: names
# come and go with hot-plug, so the cache starts over past this many.
_IDLE_CACHE_MAX = 4096
_idle_disks: dict[str, DiskRates] = {}
_idle_networks: dict[str, NetworkRates] = {}


def _idle_disk(name: str) -> DiskRates:
    if len(_idle_disks) >= _IDLE_CACHE_MAX:
        _idle_disks.clear()
    rates = _idle_disks[name] = DiskRates(name, 0.0, 0.0, 0.0, 0.0, 0.0)
    return rates


def _idle_network(name: str) -> NetworkRates:
    if len(_idle_networks) >= _IDLE_CACHE_MAX:
        _idle_networks.clear()
    rates = _idle_networks[name] = NetworkRates(name, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    return rates


def disk_rates(prev: RawCounters, cur: RawCounters, elapsed: float) -> list[DiskRates]:
    return [
        (_idle_disks.get(name) or _idle_disk(name))
        if d is _NO_CHANGE
        else DiskRates(
            name=name,
            read_bytes_per_s=d[1] / elapsed,
            write_bytes_per_s=d[4] / elapsed,
            read_ops_per_s=d[0] / elapsed,
            write_ops_per_s=d[3] / elapsed,
            # io_ticks is ms with a request in flight; merged requests can push it a hair past wall time.
            busy_percent=min(100.0, d[6] / 10.0 / elapsed),
        )
        for name, d in _changed(prev.disks, cur.disks, DISK_WIDTHS)
    ]


def network_rates(prev: RawCounters, cur: RawCounters, elapsed: float) -> list[NetworkRates]:
    return [
        (_idle_networks.get(name) or _idle_network(name))
        if d is _NO_CHANGE
        else NetworkRates(
            name=name,
            rx_bytes_per_s=d[0] / elapsed,
            tx_bytes_per_s=d[4] / elapsed,
            rx_packets_per_s=d[1] / elapsed,
            tx_packets_per_s=d[5] / elapsed,
            errors_per_s=(d[2] + d[6]) / elapsed,
            drops_per_s=(d[3] + d[7]) / elapsed,
        )
        for name, d in _changed(prev.network, cur.network, NET_WIDTHS)
    ]


def pressure(prev: RawCounters, cur: RawCounters, elapsed: float) -> Pressure | None:
    now, before = cur.pressure, prev.pressure
    if now is None:
        return None
    some_avg, full_avg, some_total, full_total = now
    some_rate = full_rate = None
    if before is not None:
        some = counter_delta(before[2], some_total)
        some_rate = some / elapsed if some is not None else None
        if full_total is not None and before[3] is not None:
            full = counter_delta(before[3], full_total)
            full_rate = full / elapsed if full is not None else None
    return Pressure(
        some_avg10=some_avg,
        full_avg10=full_avg,
        some_stall_us_per_s=some_rate if some_rate is not None else 0.0,
        full_stall_us_per_s=full_rate if full_total is not None else None,
    )


def _split_since_boot(raw: RawCounters) -> tuple[float, float, float]:
    user = sum(t[0] + t[1] for t in raw.cpu.values())
    system = sum(t[2] + t[5] + t[6] for t in raw.cpu.values())
    steal = sum(t[7] for t in raw.cpu.values())
    busy = user + system + steal
    return (user / busy, system / busy, steal / busy) if busy > 0 else (0.0, 0.0, 0.0)


class CpuRates:
    """Per-core and total CPU busy percentages, keeping what the finer sources need between readings.

    /proc/stat advances in USER_HZ (10 ms) ticks, so at 100 Hz a core reads 0 % or 100 %. Finer sources:
    - schedstat: nanoseconds each CPU spent running tasks; busy = delta / elapsed. The kernel adds a task's run
      when it *leaves* the CPU (sched_info_depart at a context switch), so a lone CPU hog that nobody preempts
      adds nothing for as long as it runs: the mirror image of cpuidle below, corrected the same way.
    - cpuidle: microseconds each CPU spent in idle states. The kernel adds an idle period's length when the CPU
      *leaves* it, so an interval spent entirely inside one long idle period shows no idle time at all and
      would read as 100 % busy. When no idle time was added in an interval, the coarse /proc/stat counters
      (which do include an idle period in progress, fs/proc/stat.c get_idle_time) say whether the CPU was
      idle or busy; idle we credit in advance is subtracted from the residency that arrives when the period ends.
    Mode shares (user, system, iowait, steal) come from /proc/stat; over an interval with no tick they keep the
    last split, scaled to the current busy figure.
    """

    __slots__ = ("_coarse_source", "_credit", "_in_counted_state", "_last_busy", "_last_split")

    def __init__(self, coarse_source: str = "proc_stat") -> None:
        self._coarse_source = coarse_source  # cpu.source when only the coarse per-mode times are there
        self._credit: dict[int, float] = {}
        # cpu -> whether the last interval the fine counter did not advance in was spent in the state it counts
        # (running for schedstat, idle for cpuidle), as the ticks judged it.
        self._in_counted_state: dict[int, bool] = {}
        self._last_busy: dict[int, float] = {}
        self._last_split: tuple[float, float, float] | None = None

    def compute(self, prev: RawCounters, cur: RawCounters, elapsed: float) -> CpuSample:
        fine_kind = cur.fine_kind if cur.fine_kind == prev.fine_kind else None
        fine_now, fine_before = cur.fine or {}, prev.fine or {}
        from_fine = None
        if cur.fine is not None and prev.fine is not None and fine_kind in ("cpuidle", "schedstat"):
            from_fine = self._from_fine
        counts_idle = fine_kind == "cpuidle"
        last_busy = self._last_busy
        per_core: list[float] = []
        ticks_total = ticks_user = ticks_system = ticks_iowait = ticks_steal = 0.0
        for cpu, now in cur.cpu.items():
            before = prev.cpu.get(cpu)
            if before is None:
                continue  # came online since the last reading
            if now is before:
                total = idle_coarse = 0.0
            else:
                # Grouped deltas, each clamped: a mode that steps back (iowait can, see
                # Documentation/filesystems/proc.rst) cannot make a figure negative. Unpacked names and plain
                # comparisons instead of sum()/max() calls: a third of the cost, paid per CPU per sample.
                u0, n0, s0, i0, w0, q0, sq0, st0 = before
                u1, n1, s1, i1, w1, q1, sq1, st1 = now
                user = u1 + n1 - u0 - n0
                system = s1 + q1 + sq1 - s0 - q0 - sq0
                idle_coarse = i1 + w1 - i0 - w0
                iowait = w1 - w0
                steal = st1 - st0
                if user < 0:
                    user = 0.0
                if system < 0:
                    system = 0.0
                if idle_coarse < 0:
                    idle_coarse = 0.0
                if iowait < 0:
                    iowait = 0.0
                if steal < 0:
                    steal = 0.0
                total = user + system + idle_coarse + steal
                ticks_total += total
                ticks_user += user
                ticks_system += system
                ticks_iowait += iowait
                ticks_steal += steal
            if from_fine is not None:
                busy = from_fine(cpu, fine_now.get(cpu), fine_before.get(cpu), elapsed, total, idle_coarse, counts_idle)
            else:
                busy = min(1.0, max(0.0, (total - idle_coarse) / total)) if total > 0 else None
            if busy is None:
                busy = last_busy.get(cpu, 0.0)
            last_busy[cpu] = busy
            per_core.append(round(busy * 100.0, 2))
        percent = sum(per_core) / len(per_core) if per_core else 0.0
        busy_ticks = ticks_user + ticks_system + ticks_steal
        if busy_ticks > 0:
            self._last_split = (ticks_user / busy_ticks, ticks_system / busy_ticks, ticks_steal / busy_ticks)
        elif self._last_split is None:
            # No tick yet (the first intervals at 100 Hz and more): the split since boot, not user 0 % system 0 %
            # beside a busy CPU.
            self._last_split = _split_since_boot(cur)
        # The busy figure (fine or coarse) is spread over the modes in the proportions the ticks show.
        user_share, system_share, steal_share = self._last_split
        user, system, steal = percent * user_share, percent * system_share, percent * steal_share
        iowait = min(100.0, 100.0 * ticks_iowait / ticks_total) if ticks_total > 0 else 0.0
        return CpuSample(
            percent=round(percent, 2),
            per_core=tuple(per_core),
            user_percent=round(user, 2),
            system_percent=round(system, 2),
            iowait_percent=round(iowait, 2),
            steal_percent=round(steal, 2),
            source=fine_kind or self._coarse_source,
        )

    def _from_fine(
        self,
        cpu: int,
        now: tuple[float, int] | None,
        before: tuple[float, int] | None,
        elapsed: float,
        ticks: float,
        idle_ticks: float,
        counts_idle: bool,
    ) -> float | None:
        """The busy share of one CPU from a counter the kernel adds to only when a period *ends*.

        schedstat counts running (``counts_idle`` False), cpuidle counts idling (True): the same algorithm with the
        polarity flipped. ``share`` is the counted state's share of the interval; busy is it or its complement.
        """
        if now is None or before is None:
            return None
        added = now[0] - before[0]
        credit = self._credit.get(cpu, 0.0)
        if added > 0:
            # A counted period ended in this interval; the part of it already reported is not counted twice.
            share = min(1.0, max(0.0, added - credit) / elapsed)
            self._credit[cpu] = 0.0
        else:
            # No counted period ended: either none happened, or one is still going on. The ticks (which count an
            # idle period in progress, and a running one) say which; within a single tick, the last verdict stands.
            if ticks > 0:
                idle_share = idle_ticks / ticks
                share = idle_share if counts_idle else max(0.0, 1.0 - idle_share)
                # An even split (within float noise) keeps the last verdict: breaking it toward the counted state
                # would call the same CPU idle under cpuidle and running under schedstat.
                if abs(share - 0.5) > TIE_TOLERANCE:
                    self._in_counted_state[cpu] = share > 0.5
            else:
                share = 1.0 if self._in_counted_state.get(cpu, False) else 0.0
            if share > 0:
                self._credit[cpu] = credit + share * elapsed
        return 1.0 - share if counts_idle else share
