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
from tests.kernel_facts import online_cpus, root_on_block_device


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
    assert profile.cpu.logical_cores == len(online_cpus())
    assert profile.cpu.core_types and profile.cpu.frequency_mhz is not None
    assert profile.gpus == ()
    assert set(profile.timings_ms) == {"os", "cpu", "memory", "storage", "network", "limits", "gpus", "total"}
    assert all(v >= 0 for v in profile.timings_ms.values())
    assert any(n.name == "lo" for n in profile.network)
    assert all(d.kind in ("nvme", "ssd", "hdd", "virtual") for d in profile.storage)
    root_mounts = [m for d in profile.storage for m in d.mounts if m.mountpoint == "/"]
    if root_on_block_device():
        assert root_mounts, "the device holding / must be listed with its mount"
        st = os.statvfs("/")
        assert root_mounts[0].total_bytes == st.f_blocks * st.f_frsize
    else:  # a container's overlay root: no device holds it, so none may claim it
        assert root_mounts == []
    assert profile.to_dict()["cpu"]["logical_cores"] == len(online_cpus())


# The JSON field names the issue fixes ("keep them; other tools will read them"), written out here rather than
# derived from the records, so a renamed or dropped field fails.
PROFILE_KEYS = {
    "os": {"system", "release", "kernel", "distribution", "architecture", "hostname", "boot_time"},
    "cpu": {
        "vendor",
        "model",
        "architecture",
        "logical_cores",
        "physical_cores",
        "sockets",
        "threads_per_core",
        "frequency_mhz",
        "caches",
        "numa_nodes",
        "core_types",
        "flags",
    },
    "memory": {"total_bytes", "swap_total_bytes", "hugepage_size_bytes"},
    "limits": {"cgroup_version", "cpu_quota_cores", "memory_limit_bytes", "pids_max"},
}
STORAGE_KEYS = {"name", "model", "size_bytes", "rotational", "removable", "kind", "mounts"}
MOUNT_KEYS = {"mountpoint", "fstype", "total_bytes", "free_bytes"}
NETWORK_KEYS = {"name", "mac", "mtu", "speed_mbps", "up", "kind", "addresses"}
SAMPLE_KEYS = {
    "cpu": {
        "percent",
        "per_core",
        "user_percent",
        "system_percent",
        "iowait_percent",
        "steal_percent",
        "source",
    },
    "memory": {"total_bytes", "used_bytes", "available_bytes", "cached_bytes", "swap_used_bytes", "pressure"},
    "load": {"avg1", "avg5", "avg15"},
}
PRESSURE_KEYS = {"some_avg10", "full_avg10", "some_stall_us_per_s", "full_stall_us_per_s"}
DISK_KEYS = {"name", "read_bytes_per_s", "write_bytes_per_s", "read_ops_per_s", "write_ops_per_s", "busy_percent"}
NET_RATE_KEYS = {
    "name",
    "rx_bytes_per_s",
    "tx_bytes_per_s",
    "rx_packets_per_s",
    "tx_packets_per_s",
    "errors_per_s",
    "drops_per_s",
}


def test_profile_json_field_names(backend_name: str) -> None:
    data = create(backend_name).profile().to_dict()
    assert set(data) == {"os", "cpu", "memory", "storage", "network", "gpus", "limits", "timings_ms"}
    for part, keys in PROFILE_KEYS.items():
        assert set(data[part]) == keys, part
    assert set(data["cpu"]["frequency_mhz"]) == {"min", "max", "current"}
    for cache in data["cpu"]["caches"]:
        assert set(cache) == {"level", "type", "size_bytes", "shared_cpu_list"}
    for node in data["cpu"]["numa_nodes"]:
        assert set(node) == {"id", "cpus", "memory_total_bytes"}
    assert data["storage"] and data["network"]
    for device in data["storage"]:
        assert set(device) == STORAGE_KEYS
        for mount in device["mounts"]:
            assert set(mount) == MOUNT_KEYS
    for interface in data["network"]:
        assert set(interface) == NETWORK_KEYS
    assert data["gpus"] == []


def test_sample_json_field_names(backend_name: str) -> None:
    with Sampler(min_interval=0.05, backend=create(backend_name)) as sampler:
        data = sampler.sample().to_dict()
    assert set(data) == {"timestamp", "interval_s", "cpu", "memory", "disks", "network", "load"}
    for part, keys in SAMPLE_KEYS.items():
        assert set(data[part]) == keys, part
    pressure = data["memory"]["pressure"]
    assert pressure is None or set(pressure) == PRESSURE_KEYS
    assert data["network"], "lo at least"
    for disk in data["disks"]:
        assert set(disk) == DISK_KEYS
    for interface in data["network"]:
        assert set(interface) == NET_RATE_KEYS


def test_counters_are_monotonic(backend_name: str) -> None:
    reader = create(backend_name).counter_reader()
    try:
        a = reader.read()
        time.sleep(0.05)
        b = reader.read()
    finally:
        reader.close()
    assert b.monotonic > a.monotonic
    assert set(a.cpu) == set(b.cpu) == set(online_cpus())
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
        assert len(s.cpu.per_core) == len(online_cpus())
        assert all(0 <= p <= 100 for p in s.cpu.per_core)
        assert 0 <= s.memory.used_bytes <= s.memory.total_bytes == kernel_mem_total()
        assert any(n.name == "lo" for n in s.network)
        assert s.to_dict()["memory"]["total_bytes"] == kernel_mem_total()
