"""The Sampler under the loads the issue names: threads, 100 Hz for 10 s, 1000 readings, hot-plug."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
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


STREAM_100_HZ = """
import json, threading, time, hypermesh


def wake_ups(seconds):
    # The best any Python schedule can do here: plain Event.wait towards the same 10 ms deadlines.
    event, start, late = threading.Event(), time.monotonic(), []
    for k in range(1, int(seconds * 100) + 1):
        event.wait(max(0.0, start + k * 0.01 - time.monotonic()))
        late.append(max(0.0, time.monotonic() - (start + k * 0.01)))
    return late


control = wake_ups(3.0)
sampler = hypermesh.Sampler()
offsets = []
n = 0
for n, _s in enumerate(sampler.stream(0.01, count=1000), start=1):
    # Yield n is due at the stream's start + (n + skipped) * 0.01: a deadline missed by a whole interval is skipped,
    # not chased. This side cannot see the start (it follows the baseline read), so the earliest yield stands for
    # it: each error is how much later than that best case a yield came. The first yield is no reference: it also
    # pays for the first use of the Sample records.
    offsets.append(time.monotonic() - (n + sampler.missed_deadlines) * 0.01)
base = min(offsets)
errors = [o - base for o in offsets]
total = offsets[-1] - offsets[0] + (n - 1 + sampler.missed_deadlines) * 0.01
control += wake_ups(3.0)
print(json.dumps({"n": n, "total": total, "errors": errors, "missed": sampler.missed_deadlines, "control": control}))
"""


def p99(values: list[float]) -> float:
    return sorted(values)[int(0.99 * len(values))]


@pytest.mark.slow
def test_100_hz_for_10_seconds() -> None:
    """Count exact, no drift, and a p99 schedule error within 10 ms (half the original's ±20 ms), or within 2 ms (the
    goal) of what plain Event.wait achieves in the same process just before and after, where the VM's own wake-ups
    are worse (under host CPU steal they reach 3-7 ms at p99 here). `make bench` measures the figure itself (p99
    0.3-4 ms on this VM across runs).

    In a process of its own: inside the pytest process the threads and children of earlier tests compete for the
    GIL, which says nothing about the Sampler.
    """
    out = subprocess.run([sys.executable, "-c", STREAM_100_HZ], capture_output=True, text=True, timeout=90, check=True)
    result = json.loads(out.stdout)
    assert result["n"] == 1000
    # Deadlines are start + k * interval: no drift accumulates (skipped deadlines add their intervals).
    assert 9.89 <= result["total"] - 0.01 * result["missed"] <= 10.5  # 999 intervals after the first yield
    assert result["missed"] <= 20  # a consumer that keeps up misses none; a stalled VM a few
    bound = max(0.010, p99(result["control"]) + 0.002)
    assert p99(result["errors"]) <= bound, (p99(result["errors"]), p99(result["control"]), result["missed"])


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
    assert time.monotonic() - began < 2.5  # not the 5 s interval: a deadline missed by seconds, whatever the load
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
    assert time.monotonic() - began < 2.5  # not the 5 s interval: a deadline missed by seconds, whatever the load
    assert got == []
    assert stop is None or not stop.is_set()  # the caller's event is theirs: close() does not touch it
