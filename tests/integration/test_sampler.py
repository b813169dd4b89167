"""The Sampler under the loads the issue names: threads, 100 Hz for 10 s, 1000 readings, hot-plug."""

from __future__ import annotations

import gc
import threading
import time

import psutil
import pytest

import hypermesh
from hypermesh.errors import InvalidInput


def test_first_sample_covers_a_real_interval() -> None:
    sampler = hypermesh.Sampler(min_interval=0.2)
    s = sampler.sample()
    assert 0.2 <= s.interval_s < 1.0
    sampler.close()


def test_one_sampler_shared_by_ten_threads() -> None:
    sampler = hypermesh.Sampler(min_interval=0.01)
    sampler.sample()
    results: list[hypermesh.Sample] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = time.monotonic()

    def work() -> None:
        try:
            for _ in range(50):
                s = sampler.sample()
                with lock:
                    results.append(s)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    elapsed = time.monotonic() - start
    assert not errors
    assert len(results) == 500
    # Each sample covers the time since the reading just before it: together they tile the run, no overlap.
    stamps = sorted(s.timestamp for s in results)
    assert len(set(stamps)) == 500
    assert sum(s.interval_s for s in results) == pytest.approx(stamps[-1] - stamps[0] + results[0].interval_s, rel=0.05)
    assert sum(s.interval_s for s in results) <= elapsed + 0.05
    for s in results:
        assert s.interval_s > 0
        assert all(0 <= p <= 100 for p in s.cpu.per_core)
    sampler.close()


@pytest.mark.slow
def test_100_hz_for_10_seconds() -> None:
    """Count exact; schedule error p99 within 5 ms (docs/benchmarks.md): 2.5x the 2 ms goal as margin for a noisy
    shared CI machine, a quarter of the original's ±20 ms. The real figure is measured by `make bench`."""
    sampler = hypermesh.Sampler()
    start = time.monotonic()
    errors = []
    n = 0
    for n, _s in enumerate(sampler.stream(0.01, count=1000), start=1):
        errors.append(abs(time.monotonic() - (start + n * 0.01)))
    total = time.monotonic() - start
    errors.sort()
    assert n == 1000
    assert 9.9 <= total <= 10.5
    assert errors[int(0.99 * len(errors))] <= 0.005 + 0.01 * sampler.missed_deadlines


def test_thousand_samples_and_profiles_keep_rss_bounded() -> None:
    process = psutil.Process()
    sampler = hypermesh.Sampler(min_interval=0.001)
    for _ in range(200):  # warm up caches and allocator pools first
        sampler.sample()
        hypermesh.profile()
    gc.collect()
    before = process.memory_info().rss
    for _ in range(1000):
        sampler.sample()
        hypermesh.profile()
    gc.collect()
    growth = process.memory_info().rss - before
    assert growth <= 2 * 1024**2, f"RSS grew {growth / 1024**2:.1f} MiB over 1000 samples and profiles"
    sampler.close()


def test_sampler_keeps_no_file_descriptors_after_close() -> None:
    process = psutil.Process()
    before = process.num_fds()
    for _ in range(50):
        with hypermesh.Sampler(min_interval=0.001) as s:
            s.sample()
    assert process.num_fds() == before


def test_bad_arguments_are_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        hypermesh.Sampler(min_interval=0)
    sampler = hypermesh.Sampler()
    with pytest.raises(InvalidInput):
        next(sampler.stream(0))
    with pytest.raises(InvalidInput):
        next(sampler.stream(0.1, count=0))
    sampler.close()


def test_stream_ends_promptly_when_stop_is_set() -> None:
    sampler = hypermesh.Sampler()
    stop = threading.Event()
    got: list[hypermesh.Sample] = []

    def consume() -> None:
        got.extend(sampler.stream(5.0, stop=stop))

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.2)
    began = time.monotonic()
    stop.set()
    t.join(timeout=10)
    assert not t.is_alive()
    assert time.monotonic() - began < 1.0  # not the 5 s interval
    assert got == []  # stopped before the first deadline: no sample, and certainly no fake one
    sampler.close()


def test_closed_sampler_says_so() -> None:
    sampler = hypermesh.Sampler()
    sampler.close()
    assert sampler.closed
    for call in (sampler.sample, sampler.counters, lambda: next(sampler.stream(0.01))):
        with pytest.raises(InvalidInput, match="closed"):
            call()


def test_close_from_another_thread_ends_a_running_stream() -> None:
    sampler = hypermesh.Sampler()
    got: list[hypermesh.Sample] = []
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            got.extend(sampler.stream(0.01, count=1000))
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.3)
    sampler.close()
    t.join(timeout=10)
    assert not t.is_alive() and not errors
    assert 5 <= len(got) < 1000


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"interval": "a"}, "number of seconds"),
        ({"interval": True}, "number of seconds"),
        ({"interval": float("nan")}, "from 0.001"),
        ({"interval": 1e308}, "to 1e"),
        ({"interval": 1e-320}, "from 0.001"),  # subnormal: the deadline arithmetic overflowed (OverflowError)
        ({"interval": 0.0005}, "from 0.001"),
        ({"interval": 0.01, "count": 1.5}, "whole number"),
        ({"interval": 0.01, "count": True}, "whole number"),
    ],
)
def test_stream_arguments_are_checked(kwargs: dict[str, object], needle: str) -> None:
    sampler = hypermesh.Sampler()
    with pytest.raises(InvalidInput, match=needle):
        next(sampler.stream(**kwargs))  # type: ignore[arg-type]
    sampler.close()


def test_min_interval_is_checked() -> None:
    with pytest.raises(InvalidInput, match="number of seconds"):
        hypermesh.Sampler(min_interval="x")  # type: ignore[arg-type]


@pytest.mark.parametrize("with_stop", [False, True])
def test_close_wakes_a_stream_waiting_for_a_long_deadline(with_stop: bool) -> None:
    """close() from another thread ends a stream at once, not when its 5 s interval is over."""
    sampler = hypermesh.Sampler()
    stop = threading.Event() if with_stop else None
    got: list[hypermesh.Sample] = []
    t = threading.Thread(target=lambda: got.extend(sampler.stream(5.0, stop=stop)))
    t.start()
    time.sleep(0.2)
    began = time.monotonic()
    sampler.close()
    t.join(timeout=10)
    assert not t.is_alive()
    assert time.monotonic() - began < 0.5
    assert got == []
    assert stop is None or not stop.is_set()  # the caller's event is theirs: close() does not touch it
