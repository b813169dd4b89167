"""The portable (psutil) backend on this Linux machine, cross-checked against the kernel's own files.

Nothing here compares psutil with psutil: every expected value comes from /proc, /sys, statvfs or iproute2.
Counters that move while the test runs are bracketed: a kernel read before ours and one after.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import require

LINUX = sys.platform.startswith("linux")
USER_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@pytest.fixture(scope="module")
def backend():  # type: ignore[no-untyped-def]
    require(LINUX, "cross-checks read /proc and /sys: Linux only")
    from hypermesh.platform.portable import PortableBackend

    return PortableBackend()


@pytest.fixture(scope="module")
def profile(backend):  # type: ignore[no-untyped-def]
    return backend.profile()


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _meminfo_bytes(field: str) -> int:
    for line in _read("/proc/meminfo").splitlines():
        name, _, rest = line.partition(":")
        if name == field:
            return int(rest.split()[0]) * 1024
    raise AssertionError(f"{field} not in /proc/meminfo")


def _proc_stat_cpus() -> dict[int, list[int]]:
    cpus = {}
    for line in _read("/proc/stat").splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            name, *ticks = line.split()
            cpus[int(name[3:])] = [int(t) for t in ticks]
    return cpus


def _net_dev() -> dict[str, list[int]]:
    out = {}
    for line in _read("/proc/net/dev").splitlines()[2:]:
        name, _, rest = line.partition(":")
        out[name.strip()] = [int(v) for v in rest.split()]
    return out


def _diskstats() -> dict[str, list[int]]:
    return {f[2]: [int(v) for v in f[3:]] for f in (line.split() for line in _read("/proc/diskstats").splitlines())}


# ------------------------------------------------------------------------------------------- profile


def test_memory_totals_match_proc_meminfo(profile) -> None:  # type: ignore[no-untyped-def]
    assert profile.memory.total_bytes == _meminfo_bytes("MemTotal")
    assert profile.memory.swap_total_bytes == _meminfo_bytes("SwapTotal")


def test_logical_cores_match_proc_cpuinfo(profile) -> None:  # type: ignore[no-untyped-def]
    processors = [line for line in _read("/proc/cpuinfo").splitlines() if line.startswith("processor")]
    assert profile.cpu.logical_cores == len(processors)
    # One "standard" core type covering every CPU, as the brief for psutil-only systems says.
    assert [(t.kind, t.cpus) for t in profile.cpu.core_types] == [("standard", tuple(range(len(processors))))]


def test_physical_cores_match_sysfs_topology(profile) -> None:  # type: ignore[no-untyped-def]
    base = "/sys/devices/system/cpu"
    cores = set()
    for name in os.listdir(base):
        top = f"{base}/{name}/topology"
        if name[3:].isdigit() and os.path.isdir(top):
            cores.add((_read(f"{top}/physical_package_id").strip(), _read(f"{top}/core_id").strip()))
    require(cores, "no CPU topology in sysfs")
    assert profile.cpu.physical_cores == len(cores)
    assert profile.cpu.threads_per_core == profile.cpu.logical_cores // len(cores)


def test_os_facts_match_proc_sys_kernel(profile) -> None:  # type: ignore[no-untyped-def]
    assert profile.os.system == "Linux"
    assert profile.os.release == _read("/proc/sys/kernel/osrelease").strip()
    assert profile.os.kernel == _read("/proc/sys/kernel/version").strip()
    assert profile.os.hostname == _read("/proc/sys/kernel/hostname").strip()
    assert profile.os.architecture == os.uname().machine
    btime = next(int(line.split()[1]) for line in _read("/proc/stat").splitlines() if line.startswith("btime"))
    assert profile.os.boot_time is not None
    assert abs(profile.os.boot_time - btime) <= 1.0
    pretty = next(
        (
            line.split("=", 1)[1].strip('"')
            for line in _read("/etc/os-release").splitlines()
            if line.startswith("PRETTY_NAME=")
        ),
        None,
    )
    assert profile.os.distribution == pretty


def test_interfaces_match_sys_class_net(profile) -> None:  # type: ignore[no-untyped-def]
    by_name = {nic.name: nic for nic in profile.network}
    assert sorted(by_name) == sorted(os.listdir("/sys/class/net"))
    for name, nic in by_name.items():
        d = f"/sys/class/net/{name}"
        assert nic.mtu == int(_read(f"{d}/mtu"))
        assert nic.mac == _read(f"{d}/address").strip()
        assert nic.up == bool(int(_read(f"{d}/flags"), 16) & 0x1)  # IFF_UP
        if name == "lo":
            assert nic.kind == "loopback"
        elif os.path.exists(f"{d}/device"):
            # A bus device behind the interface makes it physical; the name heuristic must agree here.
            assert nic.kind == "physical", name
        else:
            assert nic.kind == "virtual", name


def test_addresses_match_iproute2(profile) -> None:  # type: ignore[no-untyped-def]
    ip = "/usr/sbin/ip" if os.path.exists("/usr/sbin/ip") else "/sbin/ip"
    require(os.path.exists(ip), "iproute2 (ip) not installed")
    out = subprocess.run([ip, "-j", "addr", "show"], capture_output=True, text=True, check=True).stdout
    expected = {
        link["ifname"]: sorted(f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []))
        for link in json.loads(out)
    }
    got = {nic.name: sorted(nic.addresses) for nic in profile.network}
    assert got == expected
    assert "127.0.0.1/8" in got["lo"]


def test_root_mount_is_on_the_disk_sysfs_names(profile) -> None:  # type: ignore[no-untyped-def]
    # Which device holds "/": major:minor from mountinfo, then the /sys/block entry with that dev number.
    root_dev = next(line.split()[2] for line in _read("/proc/self/mountinfo").splitlines() if line.split()[4] == "/")
    disk = None
    for name in os.listdir("/sys/block"):
        base = f"/sys/block/{name}"
        devs = {_read(f"{base}/dev").strip()} | {
            _read(f"{base}/{child}/dev").strip()
            for child in os.listdir(base)
            if child.startswith(name) and os.path.exists(f"{base}/{child}/dev")
        }
        if root_dev in devs:
            disk = name
    if disk is None:  # a container's overlay root (major 0): no device holds /, so none may claim it
        assert not any(m.mountpoint == "/" for d in profile.storage for m in d.mounts), profile.storage
    else:
        device = next(d for d in profile.storage if d.name == disk)
        root = next(m for m in device.mounts if m.mountpoint == "/")
        st = os.statvfs("/")
        assert root.total_bytes == st.f_blocks * st.f_frsize
        assert root.free_bytes is not None
        assert 0 <= root.free_bytes <= root.total_bytes
    # Same membership rule as the kernel's view: every whole disk except idle loop/RAM devices and zram devices
    # with no disksize set.
    listed = {d.name for d in profile.storage}
    for name in os.listdir("/sys/block"):
        with open(f"/sys/block/{name}/size") as f:
            configured = int(f.read()) > 0
        if not name.startswith(("loop", "ram", "zram")) or (name.startswith("zram") and configured):
            assert name in listed, name


def test_profile_is_json_and_has_timings(profile) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(json.dumps(profile.to_dict()))
    assert data["limits"] == {
        "cgroup_version": None,
        "cpu_quota_cores": None,
        "memory_limit_bytes": None,
        "pids_max": None,
    }
    assert data["gpus"] == []
    # The same parts as the Linux backend: tools read these keys whatever the OS.
    assert set(data["timings_ms"]) == {"os", "cpu", "memory", "storage", "network", "limits", "gpus", "total"}
    assert all(v >= 0 for v in data["timings_ms"].values())


# ------------------------------------------------------------------------------------------ counters


def test_cpu_seconds_are_bracketed_by_proc_stat(backend) -> None:  # type: ignore[no-untyped-def]
    from hypermesh.platform.base import CPU_MODES

    reader = backend.counter_reader()
    before = _proc_stat_cpus()
    raw = reader.read()
    after = _proc_stat_cpus()
    reader.close()
    assert sorted(raw.cpu) == sorted(before)
    assert raw.fine_kind is None and raw.fine is None and raw.pressure is None
    for cpu, seconds in raw.cpu.items():
        assert len(seconds) == len(CPU_MODES)
        for i, value in enumerate(seconds):
            low, high = before[cpu][i] / USER_HZ, after[cpu][i] / USER_HZ
            assert low - 1e-6 <= value <= high + 1e-6, (cpu, CPU_MODES[i], low, value, high)


def test_memory_counters_match_proc_meminfo(backend) -> None:  # type: ignore[no-untyped-def]
    raw = backend.counter_reader().read()
    total, available, cached, used, swap_used = raw.memory
    assert total == _meminfo_bytes("MemTotal")
    assert used == total - available
    assert 0 < available <= total
    assert 0 <= cached <= total
    swap_total = _meminfo_bytes("SwapTotal")
    assert 0 <= swap_used <= swap_total


def test_loopback_counters_follow_known_udp_volume(backend) -> None:  # type: ignore[no-untyped-def]
    from hypermesh.platform.base import NET_FIELDS

    count, size = 200, 1000
    reader = backend.counter_reader()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
    ):
        rx.bind(("127.0.0.1", 0))
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        kernel_before = _net_dev()["lo"]
        ours_before = reader.read().network["lo"]
        for _ in range(count):
            tx.sendto(b"x" * size, rx.getsockname())
        ours_after = reader.read().network["lo"]
        kernel_after = _net_dev()["lo"]
    rx_bytes, rx_packets = NET_FIELDS.index("rx_bytes"), NET_FIELDS.index("rx_packets")
    tx_bytes = NET_FIELDS.index("tx_bytes")
    # /proc/net/dev columns: rx bytes packets errs drop fifo frame compressed multicast, then tx bytes...
    kernel_columns = {
        "rx_bytes": 0,
        "rx_packets": 1,
        "rx_errors": 2,
        "rx_drops": 3,
        "tx_bytes": 8,
        "tx_packets": 9,
    }
    for field, column in kernel_columns.items():
        i = NET_FIELDS.index(field)
        assert kernel_before[column] <= ours_before[i] <= ours_after[i] <= kernel_after[column], field
    # Every datagram crosses lo once: at least its payload in bytes, exactly one packet each (other
    # loopback traffic can only add).
    assert ours_after[rx_bytes] - ours_before[rx_bytes] >= count * size
    assert ours_after[tx_bytes] - ours_before[tx_bytes] >= count * size
    assert ours_after[rx_packets] - ours_before[rx_packets] >= count


def test_disk_counters_are_bracketed_by_proc_diskstats(backend) -> None:  # type: ignore[no-untyped-def]
    from hypermesh.platform.base import DISK_FIELDS

    reader = backend.counter_reader()
    before = _diskstats()
    raw = reader.read()
    after = _diskstats()
    require(raw.disks, "no block devices with I/O statistics")
    # diskstats after the name: reads merged sectors ms, writes merged sectors ms, in-flight, io_ticks ...
    columns = {"read_ops": (0, 1), "read_bytes": (2, 512), "read_ms": (3, 1), "write_ops": (4, 1)}
    columns |= {"write_bytes": (6, 512), "write_ms": (7, 1), "busy_ms": (9, 1)}
    for name, values in raw.disks.items():
        assert name in os.listdir("/sys/block"), f"{name} is not a whole disk"
        assert len(values) == len(DISK_FIELDS)
        for field, (column, scale) in columns.items():
            value = values[DISK_FIELDS.index(field)]
            assert before[name][column] * scale <= value <= after[name][column] * scale, (name, field)


def test_load_average_is_bracketed_by_proc_loadavg(backend) -> None:  # type: ignore[no-untyped-def]
    before = [float(v) for v in _read("/proc/loadavg").split()[:3]]
    load = backend.counter_reader().read().load
    after = [float(v) for v in _read("/proc/loadavg").split()[:3]]
    for low_high, value in zip(zip(before, after, strict=True), load, strict=True):
        # /proc/loadavg prints two decimals; psutil reads the kernel's value through sysinfo(2).
        assert min(low_high) - 0.01 <= value <= max(low_high) + 0.01


def test_reader_times_are_monotonic_and_close_is_idempotent(backend) -> None:  # type: ignore[no-untyped-def]
    reader = backend.counter_reader()
    first, second = reader.read(), reader.read()
    assert second.monotonic >= first.monotonic
    assert abs(second.wall - first.wall) < 60
    reader.close()
    reader.close()


def test_backend_env_var_selects_portable(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from hypermesh.platform import create

    monkeypatch.setenv("HYPERMESH_BACKEND", "portable")
    chosen = create()
    assert type(chosen).__name__ == "PortableBackend"
    assert chosen.name == "portable"


def test_portable_and_linux_backends_describe_this_machine_alike(profile) -> None:  # type: ignore[no-untyped-def]
    # Two independent implementations (psutil vs our own procfs/sysfs/netlink readers) must agree on what
    # both can see; fields psutil cannot know (disk model, size, rotation, caches, limits) are not compared.
    from hypermesh.platform.linux import LinuxBackend

    native = LinuxBackend().profile()
    assert profile.memory.total_bytes == native.memory.total_bytes
    assert profile.memory.swap_total_bytes == native.memory.swap_total_bytes
    assert (profile.cpu.logical_cores, profile.cpu.physical_cores) == (
        native.cpu.logical_cores,
        native.cpu.physical_cores,
    )
    assert (profile.os.release, profile.os.kernel, profile.os.hostname, profile.os.distribution) == (
        native.os.release,
        native.os.kernel,
        native.os.hostname,
        native.os.distribution,
    )

    def disks(p):  # type: ignore[no-untyped-def]
        return {d.name: (d.kind, sorted((m.mountpoint, m.fstype, m.total_bytes) for m in d.mounts)) for d in p.storage}

    assert disks(profile) == disks(native)

    def nics(p):  # type: ignore[no-untyped-def]
        return {n.name: (n.mac, n.mtu, n.speed_mbps, n.up, n.kind, sorted(n.addresses)) for n in p.network}

    assert nics(profile) == nics(native)


def test_portable_and_linux_counters_name_the_same_devices(backend) -> None:  # type: ignore[no-untyped-def]
    from hypermesh.platform.linux import LinuxBackend

    ours, native = backend.counter_reader(), LinuxBackend().counter_reader()
    try:
        a, b = ours.read(), native.read()
    finally:
        ours.close()
        native.close()
    assert sorted(a.cpu) == sorted(b.cpu)
    assert sorted(a.disks) == sorted(b.disks)
    assert sorted(a.network) == sorted(b.network)
    assert a.memory[0] == b.memory[0]  # total


def _busy_share(before: list[int], after: list[int]) -> float:
    # /proc/stat columns: user nice system idle iowait irq softirq steal (guest time is inside user already).
    delta = [b - a for a, b in zip(before[:8], after[:8], strict=True)]
    total = sum(delta)
    return 100.0 * (total - delta[3] - delta[4]) / total if total else 0.0


def test_sampler_over_portable_backend_sees_a_pinned_busy_loop() -> None:
    require(LINUX and hasattr(os, "sched_setaffinity"), "needs Linux CPU affinity")
    from hypermesh.platform.portable import PortableBackend
    from hypermesh.sampling.sampler import Sampler

    cpu = max(os.sched_getaffinity(0))
    spin = "import os, time\nos.sched_setaffinity(0, {%d})\nend = time.monotonic() + 5\nwhile time.monotonic() < end: pass\n"
    child = subprocess.Popen([sys.executable, "-c", spin % cpu])
    try:
        with Sampler(min_interval=0.5, backend=PortableBackend()) as sampler:
            time.sleep(0.1)  # let the child reach its loop
            before = _proc_stat_cpus()
            sample = sampler.sample()  # baseline, 0.5 s, second read
            after = _proc_stat_cpus()
    finally:
        child.kill()
        child.wait()
    assert sample.cpu.source == "psutil"  # psutil offers no finer per-CPU source, and it is not /proc/stat elsewhere
    assert 0.45 <= sample.interval_s < 1.0
    assert len(sample.cpu.per_core) == len(before)
    # Independent figure: the kernel's own ticks over an interval that brackets the sampler's by < 1 ms. At
    # 100 ticks/s over 0.5 s, one tick at each end is 2 % per end; 6 points covers both ends and rounding.
    for index, (n, ticks_before) in enumerate(sorted(before.items())):
        assert abs(sample.cpu.per_core[index] - _busy_share(ticks_before, after[n])) <= 6.0, n
    # The pinned loop owns its CPU unless other work shares it; half is a floor no scheduler goes below for a
    # runnable spinner competing with at most one other task on a 2-CPU test machine.
    assert sample.cpu.per_core[sorted(before).index(cpu)] >= 50.0


def test_sampler_over_portable_backend_counts_loopback_traffic() -> None:
    require(LINUX, "loopback interface named lo")
    from hypermesh.platform.portable import PortableBackend
    from hypermesh.sampling.sampler import Sampler

    count, size = 200, 1000
    with Sampler(min_interval=0.05, backend=PortableBackend()) as sampler:
        sampler.sample()
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
        ):
            rx.bind(("127.0.0.1", 0))
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            for _ in range(count):
                tx.sendto(b"x" * size, rx.getsockname())
        sample = sampler.sample()
    lo = next(n for n in sample.network if n.name == "lo")
    # Bytes and packets over the interval: at least what we sent (each datagram crosses lo once).
    assert lo.rx_bytes_per_s * sample.interval_s >= count * size * 0.999
    assert lo.rx_packets_per_s * sample.interval_s >= count * 0.999


def test_node_stats_filesystems_match_statvfs(backend) -> None:  # type: ignore[no-untyped-def]
    stats = backend.node_stats()
    assert stats.kernel.boot_time_seconds is not None and stats.kernel.boot_time_seconds > 0
    for fs in stats.filesystems:
        st = os.statvfs(fs.mountpoint)
        assert fs.size_bytes == st.f_blocks * st.f_frsize and fs.files == st.f_files, fs.mountpoint
    # "/" is listed when a block device holds it (psutil lists filesystems the kernel does not mark nodev); in a
    # container / is an overlay, which has no device and is not listed: neither case may fail.
    block_types = {line.split()[-1] for line in _read("/proc/filesystems").splitlines() if not line.startswith("nodev")}
    root_type = next(line.split(" - ")[1].split()[0] for line in _read("/proc/self/mountinfo").splitlines()
                     if line.split()[4] == "/")  # fmt: skip
    assert (root_type in block_types) == any(fs.mountpoint == "/" for fs in stats.filesystems), root_type


# What an unknown used to look like in the table: "cpu ? — ... None socket(s)", "cgroup v-:", an empty numa line.
PLACEHOLDERS = ("None", "?", "v-", " - ", "(-", "-)")


def _system_rows(table: str) -> dict[str, str]:
    """The System table's rows, {key: value}, from its plain-text rendering (a pipe: no frame, no colour)."""
    lines = [line.rstrip() for line in table.splitlines()]
    assert lines[0] == "System", lines[:2]
    rows = {}
    for line in lines[1:]:
        if line.startswith(("CPU caches", "Storage", "Network")):
            break
        key, _, value = line.partition("  ")
        rows[key] = value.strip()
    return rows


def _assert_no_placeholders(table: str) -> dict[str, str]:
    rows = _system_rows(table)
    assert set(rows) == {"host", "os", "kernel", "cpu", "frequency", "core types", "numa", "memory", "limits", "gpus"}
    for key, value in rows.items():
        assert value, f"{key}: empty"
        for mark in PLACEHOLDERS:
            assert mark not in value, (key, value)
    return rows


def test_portable_profile_table_has_no_placeholders() -> None:
    require(LINUX, "the portable backend's gaps on Linux are what this checks")
    env = {**os.environ, "HYPERMESH_BACKEND": "portable"}
    hypermesh = [sys.executable, "-m", "hypermesh.cli.main", "profile"]
    table = subprocess.run(hypermesh, capture_output=True, text=True, env=env, check=True).stdout
    data = json.loads(
        subprocess.run([*hypermesh, "--json"], capture_output=True, text=True, env=env, check=True).stdout
    )
    rows = _assert_no_placeholders(table)
    # What psutil cannot tell on Linux: null in JSON, said once in words in the table.
    assert data["cpu"]["sockets"] is None and "socket count unknown on this OS" in rows["cpu"]
    assert data["cpu"]["numa_nodes"] == [] and rows["numa"] == "unknown on this OS"
    assert data["limits"]["cgroup_version"] is None and rows["limits"] == "cgroup limits unknown on this OS"
    assert rows["cpu"].count("on this OS") == 1
    assert "CPU caches unknown on this OS" in table


class KnowsNothingBackend:
    """A fixture backend that knows only what every record requires: every optional fact None, every list empty."""

    name = "knows-nothing"

    def profile(self):  # type: ignore[no-untyped-def]
        from hypermesh.model import CpuFrequency, CpuInfo, Limits, MemoryInfo, OsInfo, SystemProfile

        return SystemProfile(
            os=OsInfo(
                system="Plan9",
                release="4",
                kernel="",
                distribution=None,
                architecture="mips",
                hostname="h",
                boot_time=None,
            ),
            cpu=CpuInfo(
                vendor=None,
                model=None,
                architecture="mips",
                logical_cores=1,
                physical_cores=None,
                sockets=None,
                threads_per_core=None,
                frequency_mhz=CpuFrequency(min=None, max=None, current=None),
                caches=(),
                numa_nodes=(),
                core_types=(),
                flags=(),
            ),
            memory=MemoryInfo(total_bytes=1 << 30, swap_total_bytes=None, hugepage_size_bytes=None),
            storage=(),
            network=(),
            gpus=(),
            limits=Limits(cgroup_version=None, cpu_quota_cores=None, memory_limit_bytes=None, pids_max=None),
            timings_ms={},
        )


def test_a_backend_that_knows_nothing_renders_words_not_placeholders() -> None:
    import io

    from rich.console import Console

    from hypermesh.cli.render import render_profile

    profile = KnowsNothingBackend().profile()
    out = io.StringIO()
    render_profile(profile, Console(file=out, width=400, color_system=None))
    rows = _assert_no_placeholders(out.getvalue())
    assert rows["cpu"] == "model unknown — 1 logical, physical core count unknown, socket count unknown on this OS"
    assert rows["frequency"] == rows["core types"] == rows["numa"] == "unknown on this OS"
    assert rows["memory"] == "1.0 GiB (swap unknown, hugepage size unknown)"
    assert "Storage: no block devices found" in out.getvalue() and "Network: no interfaces found" in out.getvalue()
    data = profile.to_dict()  # what --json prints: the unknowns are null, not words
    assert data["cpu"]["sockets"] is None and data["memory"]["swap_total_bytes"] is None
