"""The same contract, run against every backend this machine can host (linux and portable here).

Whatever the backend, a user gets the same record shapes, monotonic counters and sane rates; values are
cross-checked against the kernel's own files, not against the backend under test.
"""

from __future__ import annotations

import os
import time

import pytest

from hypermesh.model import Sample, SystemProfile
from hypermesh.platform import BACKENDS, create
from hypermesh.sampling.sampler import Sampler


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def kernel_mem_total() -> int:
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) * 1024


def test_profile_contract(backend_name: str) -> None:
    profile = create(backend_name).profile()
    assert isinstance(profile, SystemProfile)
    assert profile.memory.total_bytes == kernel_mem_total()
    assert profile.cpu.logical_cores == os.cpu_count()
    assert profile.cpu.core_types and profile.cpu.frequency_mhz is not None
    assert profile.gpus == []
    assert "total" in profile.timings_ms or profile.timings_ms
    assert any(n.name == "lo" for n in profile.network)
    assert all(d.kind in ("nvme", "ssd", "hdd", "virtual") for d in profile.storage)
    root_mounts = [m for d in profile.storage for m in d.mounts if m.mountpoint == "/"]
    assert root_mounts, "the device holding / must be listed with its mount"
    st = os.statvfs("/")
    assert root_mounts[0].total_bytes == st.f_blocks * st.f_frsize
    assert profile.to_dict()["cpu"]["logical_cores"] == os.cpu_count()


def test_counters_are_monotonic(backend_name: str) -> None:
    reader = create(backend_name).counter_reader()
    try:
        a = reader.read()
        time.sleep(0.05)
        b = reader.read()
    finally:
        reader.close()
    assert b.monotonic > a.monotonic
    assert set(a.cpu) == set(b.cpu) == set(range(os.cpu_count() or 1))
    for cpu in a.cpu:
        assert sum(b.cpu[cpu]) >= sum(a.cpu[cpu])
    for name in a.network.keys() & b.network.keys():
        assert all(y >= x for x, y in zip(a.network[name], b.network[name], strict=True))
    assert a.memory[0] == kernel_mem_total()


def test_sample_contract(backend_name: str) -> None:
    with Sampler(min_interval=0.05, backend=create(backend_name)) as sampler:
        samples = [sampler.sample() for _ in range(3)]
    for s in samples:
        assert isinstance(s, Sample)
        assert s.interval_s > 0
        assert len(s.cpu.per_core) == os.cpu_count()
        assert all(0 <= p <= 100 for p in s.cpu.per_core)
        assert 0 <= s.memory.used_bytes <= s.memory.total_bytes == kernel_mem_total()
        assert any(n.name == "lo" for n in s.network)
        assert s.to_dict()["memory"]["total_bytes"] == kernel_mem_total()
