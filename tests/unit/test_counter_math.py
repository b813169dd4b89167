"""Counter math under hypothesis: wraparound at 2**32 and 2**64, resets, devices that come and go."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from hypermesh.model import Sample
from hypermesh.platform.base import DISK_WIDTHS, NET_WIDTHS, RawCounters
from hypermesh.sampling.counters import CpuRates, counter_delta, disk_rates, network_rates, pressure


@given(bits=st.sampled_from([32, 64]), data=st.data())
def test_wrap_gives_the_true_increment(bits: int, data: st.DataObject) -> None:
    prev = data.draw(st.integers(0, 2**bits - 1))
    inc = data.draw(st.integers(0, 2 ** (bits - 1) - 1))
    cur = (prev + inc) % 2**bits
    assert counter_delta(prev, cur, bits) == inc


@given(bits=st.sampled_from([32, 64]), data=st.data())
def test_backwards_from_lower_half_is_a_reset(bits: int, data: st.DataObject) -> None:
    prev = data.draw(st.integers(1, 2 ** (bits - 1) - 1))
    cur = data.draw(st.integers(0, prev - 1))
    assert counter_delta(prev, cur, bits) is None


def test_wrap_at_exact_boundaries() -> None:
    assert counter_delta(2**32 - 1, 0, 32) == 1
    assert counter_delta(2**64 - 1, 0, 64) == 1
    assert counter_delta(2**32 - 10, 5, 32) == 15
    assert counter_delta(5, 5, 32) == 0


def raw(
    mono: float,
    disks: dict[str, tuple[int, ...]] | None = None,
    net: dict[str, tuple[int, ...]] | None = None,
    cpu: dict[int, tuple[float, ...]] | None = None,
    psi: tuple[float, float | None, int, int | None] | None = None,
) -> RawCounters:
    return RawCounters(
        monotonic=mono,
        wall=1e9 + mono,
        cpu=cpu or {},
        fine_kind=None,
        fine=None,
        memory=(100, 50, 10, 50, 0),
        pressure=psi,
        disks=disks or {},
        network=net or {},
        load=(0.0, 0.0, 0.0),
    )


counter64 = st.integers(0, 2**64 - 1)
counter32 = st.integers(0, 2**32 - 1)
disk_values = st.tuples(counter64, counter64, counter32, counter64, counter64, counter32, counter32)
net_values = st.tuples(*([counter64] * 8))
names = st.sampled_from(["sda", "sdb", "nvme0n1", "vda", "eth0", "lo", "veth1"])


@settings(max_examples=300)
@given(
    before=st.dictionaries(names, disk_values, max_size=5),
    after=st.dictionaries(names, disk_values, max_size=5),
    nb=st.dictionaries(names, net_values, max_size=5),
    na=st.dictionaries(names, net_values, max_size=5),
    elapsed=st.floats(1e-4, 100),
)
def test_rates_are_never_negative_and_only_for_devices_in_both_readings(
    before: dict[str, tuple[int, ...]],
    after: dict[str, tuple[int, ...]],
    nb: dict[str, tuple[int, ...]],
    na: dict[str, tuple[int, ...]],
    elapsed: float,
) -> None:
    prev, cur = raw(0.0, before, nb), raw(elapsed, after, na)
    disks = disk_rates(prev, cur, elapsed)
    nets = network_rates(prev, cur, elapsed)

    # Exactly the devices in both readings whose counters did not reset: each field went forward, or went back
    # from the upper half of its width (a wrap). Worked out here field by field, not with the code under test.
    def kept(old: dict[str, tuple[int, ...]], new: dict[str, tuple[int, ...]], widths: tuple[int, ...]) -> set[str]:
        return {
            name
            for name in old.keys() & new.keys()
            if all(c >= p or p >= 2 ** (w - 1) for p, c, w in zip(old[name], new[name], widths, strict=True))
        }

    assert {d.name for d in disks} == kept(before, after, DISK_WIDTHS)
    assert {n.name for n in nets} == kept(nb, na, NET_WIDTHS)
    for d in disks:
        assert min(d.read_bytes_per_s, d.write_bytes_per_s, d.read_ops_per_s, d.write_ops_per_s) >= 0
        assert 0 <= d.busy_percent <= 100
    for n in nets:
        assert min(n.rx_bytes_per_s, n.tx_bytes_per_s, n.rx_packets_per_s, n.errors_per_s, n.drops_per_s) >= 0


@given(start=st.integers(2**32 - 5000, 2**32 - 1), inc=st.integers(0, 10_000))
def test_disk_busy_time_wraps_as_the_32_bit_counter_it_is(start: int, inc: int) -> None:
    assert DISK_WIDTHS[6] == 32  # io_ticks is an unsigned int in the kernel
    before = {"sda": (0, 0, 0, 0, 0, 0, start)}
    after = {"sda": (0, 0, 0, 0, 0, 0, (start + inc) % 2**32)}
    (rate,) = disk_rates(raw(0.0, before), raw(100.0, after), 100.0)
    assert abs(rate.busy_percent - min(100.0, inc / 1000 / 100 * 100)) < 1e-9


def test_reset_device_is_left_out_for_one_interval_then_returns() -> None:
    a = raw(0.0, net={"eth0": (10_000_000,) * 8})
    b = raw(1.0, net={"eth0": (100,) * 8})  # driver reloaded: counters restart near zero
    c = raw(2.0, net={"eth0": (1100,) * 8})
    assert network_rates(a, b, 1.0) == []
    (rate,) = network_rates(b, c, 1.0)
    assert rate.rx_bytes_per_s == 1000.0


def test_unchanged_parsed_line_short_circuits_to_zero() -> None:
    same = (5, 6, 7, 8, 9, 10, 11, 12)
    (rate,) = network_rates(raw(0.0, net={"lo": same}), raw(1.0, net={"lo": same}), 1.0)
    assert rate.rx_bytes_per_s == rate.tx_packets_per_s == 0.0


cpu_times = st.tuples(*([st.floats(0, 1e6, allow_nan=False)] * 8))


@settings(max_examples=300)
@given(seq=st.lists(st.dictionaries(st.integers(0, 7), cpu_times, min_size=1, max_size=8), min_size=2, max_size=6))
def test_cpu_percentages_stay_in_range_whatever_the_counters_do(seq: list[dict[int, tuple[float, ...]]]) -> None:
    rates = CpuRates()
    readings = [raw(float(i), cpu=c) for i, c in enumerate(seq)]
    for prev, cur in itertools.pairwise(readings):
        s = rates.compute(prev, cur, 1.0)
        assert all(0.0 <= p <= 100.0 for p in s.per_core)
        assert 0.0 <= s.percent <= 100.0
        for v in (s.user_percent, s.system_percent, s.iowait_percent, s.steal_percent):
            assert 0.0 <= v <= 100.0 + 1e-6


def test_cpu_percent_from_ticks_is_exact() -> None:
    # cpu0: 30 busy (user) + 70 idle seconds-worth of ticks; cpu1: fully idle.
    a = raw(0.0, cpu={0: (0.0,) * 8, 1: (0.0,) * 8})
    b = raw(1.0, cpu={0: (0.3, 0, 0, 0.7, 0, 0, 0, 0), 1: (0, 0, 0, 1.0, 0, 0, 0, 0)})
    s = CpuRates().compute(a, b, 1.0)
    assert s.per_core == (30.0, 0.0)
    assert s.percent == 15.0
    assert s.user_percent == 15.0
    assert s.source == "proc_stat"


def test_cpuidle_long_idle_period_is_not_reported_busy() -> None:
    """An interval inside one long idle period adds no residency; the ticks say idle, so it reads idle."""
    rates = CpuRates()

    def r(mono: float, idle_ticks: float, busy_ticks: float, residency: float) -> RawCounters:
        x = raw(mono, cpu={0: (busy_ticks, 0, 0, idle_ticks, 0, 0, 0, 0)})
        x.fine_kind, x.fine = "cpuidle", {0: (residency, 0)}
        return x

    a = r(0.0, 0.0, 0.0, 0.0)
    b = r(1.0, 1.0, 0.0, 0.0)  # idle all second, the idle period still going on: no residency yet
    c = r(2.0, 2.0, 0.0, 2.0)  # the period ends: 2 s of residency arrive at once
    first = rates.compute(a, b, 1.0)
    second = rates.compute(b, c, 1.0)
    assert first.per_core == (0.0,) and first.source == "cpuidle"
    assert second.per_core == (0.0,)  # the second already credited is not counted twice, nor pushed below 0


def test_modes_add_up_to_the_busy_figure_before_the_first_tick() -> None:
    """At 100 Hz an interval often sees no tick: the modes then take the split since boot, not 0 % each."""
    since_boot = {0: (60.0, 0, 20.0, 500.0, 0, 0, 0, 20.0), 1: (60.0, 0, 20.0, 500.0, 0, 0, 0, 20.0)}
    a, b = raw(0.0, cpu=since_boot), raw(0.01, cpu=dict(since_boot))
    a.fine_kind, a.fine = "schedstat", {0: (100.0, 0), 1: (100.0, 0)}
    b.fine_kind, b.fine = "schedstat", {0: (100.005, 0), 1: (100.0, 0)}  # cpu0 ran half of the 10 ms
    s = CpuRates().compute(a, b, 0.01)
    assert s.per_core == (50.0, 0.0) and s.percent == 25.0
    assert (s.user_percent, s.system_percent, s.steal_percent) == (15.0, 5.0, 5.0)


def test_schedstat_lone_cpu_hog_reads_busy_while_it_runs() -> None:
    """rq_cpu_time grows only when a task leaves the CPU (kernel/sched/stats.h sched_info_depart): a hog nobody
    preempts adds nothing for its whole run, then all of it at once. The ticks say busy meanwhile."""
    rates = CpuRates()

    def r(k: int, run_seconds: float) -> RawCounters:
        # cpu0 at 100 Hz: one tick per interval, user while the hog runs, idle afterwards.
        user = min(k, 100) * 0.01
        x = raw(k * 0.01, cpu={0: (user, 0, 0, max(0, k - 100) * 0.01, 0, 0, 0, 0)})
        x.fine_kind, x.fine = "schedstat", {0: (run_seconds, 0)}
        return x

    readings = [r(k, 0.0) for k in range(100)]  # the hog runs 1 s without being switched out
    readings.append(r(100, 1.0))  # it leaves the CPU: its whole second arrives at once
    readings += [r(k, 1.0) for k in range(101, 120)]  # idle: nothing runs, nothing arrives
    per_core = [rates.compute(a, b, 0.01).per_core[0] for a, b in itertools.pairwise(readings)]
    assert per_core[:100] == [100.0] * 100  # not 0 % while it runs
    assert per_core[100:] == [0.0] * 19  # the second that arrived late is not counted twice


def test_pressure_stall_rate() -> None:
    a = raw(0.0, psi=(1.0, 0.5, 1_000_000, 400_000))
    b = raw(2.0, psi=(2.0, 1.0, 1_500_000, 500_000))
    p = pressure(a, b, 2.0)
    assert p is not None
    assert p.some_stall_us_per_s == 250_000.0 and p.full_stall_us_per_s == 50_000.0
    assert pressure(a, raw(2.0), 2.0) is None


def test_sample_record_is_immutable() -> None:
    import pytest

    fields = Sample._fields
    assert fields == ("timestamp", "interval_s", "cpu", "memory", "disks", "network", "load")
    s = CpuRates().compute(raw(0.0, cpu={0: (0.0,) * 8}), raw(1.0, cpu={0: (0.0,) * 8}), 1.0)
    with pytest.raises(AttributeError):
        s.percent = 5.0  # type: ignore[misc]


def test_an_idle_device_gets_the_all_zero_record_and_a_busy_one_its_own() -> None:
    """Unchanged lines (the reader hands back the very same tuple) share one immutable zero record per name."""
    line = (10, 20, 30, 40, 50, 60, 70, 80)
    idle = {"lo": line}
    a, b = raw(0.0, net=idle), raw(0.5, net=idle)
    first, second = network_rates(a, b, 0.5), network_rates(a, b, 0.25)
    assert first[0] is second[0]  # shared, whatever the interval
    assert first[0].to_dict() == {
        "name": "lo",
        "rx_bytes_per_s": 0.0,
        "tx_bytes_per_s": 0.0,
        "rx_packets_per_s": 0.0,
        "tx_packets_per_s": 0.0,
        "errors_per_s": 0.0,
        "drops_per_s": 0.0,
    }
    busy = network_rates(raw(0.0, net={"lo": line}), raw(0.5, net={"lo": tuple(v + 5 for v in line)}), 0.5)
    assert busy[0].rx_bytes_per_s == 10.0 and busy[0] is not first[0]
    disks = {"vda": (1, 2, 3, 4, 5, 6, 7)}
    (disk,) = disk_rates(raw(0.0, disks), raw(1.0, disks), 1.0)
    assert disk.to_dict() == {
        "name": "vda",
        "read_bytes_per_s": 0.0,
        "write_bytes_per_s": 0.0,
        "read_ops_per_s": 0.0,
        "write_ops_per_s": 0.0,
        "busy_percent": 0.0,
    }
