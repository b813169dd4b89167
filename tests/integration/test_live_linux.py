"""The Linux backend on this live machine, cross-checked against the kernel's own files, psutil and iproute2,
and against workloads the tests generate themselves."""

from __future__ import annotations

import glob
import itertools
import json
import multiprocessing
import os
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

import hypermesh
from hypermesh.platform.base import RawCounters
from hypermesh.platform.linux import LinuxBackend
from hypermesh.sampling.counters import CpuRates
from tests.block_device import make_loop_device
from tests.conftest import require, require_binary, require_root
from tests.kernel_facts import online_cpus, root_on_block_device


@pytest.fixture(autouse=True)
def linux_only() -> None:
    require(sys.platform.startswith("linux"), "the Linux backend's live tests run on Linux")


def meminfo_kib(key: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


@pytest.fixture(scope="module")
def profile() -> hypermesh.SystemProfile:
    return LinuxBackend().profile()


def test_profile_totals_match_the_kernel_and_psutil(profile: hypermesh.SystemProfile) -> None:
    assert profile.memory.total_bytes == meminfo_kib("MemTotal") * 1024 == psutil.virtual_memory().total
    assert profile.memory.swap_total_bytes == meminfo_kib("SwapTotal") * 1024
    assert profile.cpu.logical_cores == len(os.sched_getaffinity(0)) == psutil.cpu_count()
    assert profile.cpu.physical_cores == psutil.cpu_count(logical=False)
    assert profile.os.release == os.uname().release
    assert profile.os.hostname == socket.gethostname()
    assert abs((profile.os.boot_time or 0) - psutil.boot_time()) < 2
    assert sorted(c for t in profile.cpu.core_types for c in t.cpus) == list(range(profile.cpu.logical_cores))
    assert profile.gpus == ()  # headless: empty, never an error


def test_profile_storage_matches_statvfs_and_lsblk(profile: hypermesh.SystemProfile) -> None:
    lsblk = json.loads(subprocess.check_output(["lsblk", "-J", "-b", "-d", "-o", "NAME,SIZE,ROTA,TYPE"]))
    sizes = {d["name"]: int(d["size"]) for d in lsblk["blockdevices"] if d["type"] == "disk"}
    listed = {d.name: d for d in profile.storage}
    for name, size in sizes.items():
        if name.startswith("zram") and size == 0:
            assert name not in listed  # an unconfigured zram device is noise, like an idle loop
            continue
        assert listed[name].size_bytes == size
    roots = [m for d in profile.storage for m in d.mounts if m.mountpoint == "/"]
    if not root_on_block_device():  # a container's overlay: no device holds /, so none may claim it
        assert roots == [], roots
    else:
        (root,) = roots
        usage = psutil.disk_usage("/")
        assert root.total_bytes == usage.total
        assert root.free_bytes is not None and abs(root.free_bytes - usage.free) < 64 * 1024**2
    # loop devices that back no mount are noise and must not be listed
    mounted = {p.device.removeprefix("/dev/") for p in psutil.disk_partitions(all=True)}
    for d in profile.storage:
        if d.name.startswith("loop"):
            assert d.name in mounted or any(p.startswith(d.name) for p in mounted)


def test_profile_network_matches_iproute2(profile: hypermesh.SystemProfile) -> None:
    ip = json.loads(subprocess.check_output(["ip", "-j", "addr", "show"]))
    expected = {
        link["ifname"]: sorted(f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])) for link in ip
    }
    ours = {n.name: n for n in profile.network}
    assert set(ours) == set(expected)
    for name, addresses in expected.items():
        assert sorted(ours[name].addresses) == addresses, name
    stats = psutil.net_if_stats()
    for name, iface in ours.items():
        assert iface.mtu == stats[name].mtu
        assert iface.up == stats[name].isup
    assert ours["lo"].kind == "loopback"


def test_profile_caches_and_numa_match_sysfs(profile: hypermesh.SystemProfile) -> None:
    lscpu = {e["field"].rstrip(":"): e["data"] for e in json.loads(subprocess.check_output(["lscpu", "-J"]))["lscpu"]}
    assert profile.cpu.model == lscpu.get("Model name")
    assert profile.cpu.sockets == int(lscpu.get("Socket(s)", "1"))
    nodes = int(lscpu.get("NUMA node(s)", "1"))
    assert len(profile.cpu.numa_nodes) == nodes
    assert sum(len(n.cpus) for n in profile.cpu.numa_nodes) == profile.cpu.logical_cores
    levels = {c.level for c in profile.cpu.caches}
    assert 1 in levels
    # Every cache lscpu knows, with its size, and nothing it does not (lscpu reads sysfs too, but by its own code).
    caches = json.loads(subprocess.check_output(["lscpu", "-C", "-J", "-b"]))["caches"]
    theirs = {(int(c["level"]), c["type"].lower(), _lscpu_size(c["one-size"])) for c in caches}
    ours = {(c.level, c.type, c.size_bytes) for c in profile.cpu.caches}
    assert ours == theirs
    # Each CPU appears once per (level, type), as the kernel's shared_cpu_list partitions them.
    for level, kind, _size in theirs:
        shared = [cpu for c in profile.cpu.caches if (c.level, c.type) == (level, kind) for cpu in c.shared_cpu_list]
        assert sorted(shared) == list(range(profile.cpu.logical_cores)), (level, kind)


def _lscpu_size(text: str) -> int:
    """lscpu's cache sizes: "32K", "512K", "32M" (binary units; util-linux 2.38 ignores -b for caches)."""
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def test_limits_match_this_process_cgroup(profile: hypermesh.SystemProfile) -> None:
    with open("/proc/self/cgroup") as f:
        lines = f.read().splitlines()
    v1 = any(line.split(":")[1] for line in lines)
    assert profile.limits.cgroup_version == (1 if v1 else 2)


def _cgroup_v1_dirs(name: str) -> dict[str, pathlib.Path] | None:
    dirs = {c: pathlib.Path("/sys/fs/cgroup", c, name) for c in ("cpu", "memory", "pids")}
    return dirs if all(d.parent.is_dir() for d in dirs.values()) else None


def _remove_cgroups(paths: list[pathlib.Path]) -> None:
    for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):  # children first
        for _ in range(50):  # the joined processes have exited; the kernel frees the group shortly after
            try:
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)


@pytest.mark.root
def test_limits_bind_as_the_kernel_enforces_them_in_nested_cgroups() -> None:
    """A process in cgroups we make sees the tightest limit on its path: 0.5 cores and 256 MiB set on an outer
    group, pids 37 on the outer group although the inner group it sits in allows 80."""
    require_root()
    name = f"hm-limits-{os.getpid()}"
    made: list[pathlib.Path] = []
    v1 = _cgroup_v1_dirs(name)
    try:
        if v1 is not None:
            for d in v1.values():
                d.mkdir()
                made.append(d)
            (v1["cpu"] / "cpu.cfs_period_us").write_text("100000")
            (v1["cpu"] / "cpu.cfs_quota_us").write_text("50000")
            (v1["memory"] / "memory.limit_in_bytes").write_text(str(256 * 1024**2))
            (v1["pids"] / "pids.max").write_text("37")
            inner = v1["pids"] / "inner"
            inner.mkdir()
            made.append(inner)
            (inner / "pids.max").write_text("80")
            join = [v1["cpu"] / "cgroup.procs", v1["memory"] / "cgroup.procs", inner / "cgroup.procs"]
        else:
            root = pathlib.Path("/sys/fs/cgroup")
            controllers = (root / "cgroup.subtree_control").read_text().split()
            require(
                {"cpu", "memory", "pids"} <= set(controllers),
                "cgroup v2 root does not delegate cpu, memory and pids",
            )
            outer = root / name
            outer.mkdir()
            made.append(outer)
            (outer / "cgroup.subtree_control").write_text("+cpu +memory +pids")
            (outer / "cpu.max").write_text("50000 100000")
            (outer / "memory.max").write_text(str(256 * 1024**2))
            (outer / "pids.max").write_text("37")
            inner = outer / "inner"
            inner.mkdir()
            made.append(inner)
            (inner / "pids.max").write_text("80")
            join = [inner / "cgroup.procs"]
        # The shell joins the groups, then execs the CLI: the process whose limits are read is in them.
        script = "".join(f"echo $$ > {p} && " for p in join) + 'exec "$0" profile --json'
        hm = str(pathlib.Path(sys.executable).with_name("hypermesh"))
        r = subprocess.run(["sh", "-c", script, hm], capture_output=True, text=True, timeout=60)
    finally:
        _remove_cgroups(made)
    assert r.returncode == 0, r.stderr
    limits = json.loads(r.stdout)["limits"]
    assert limits["cpu_quota_cores"] == 0.5
    assert limits["memory_limit_bytes"] == 256 * 1024**2
    assert limits["pids_max"] == 37
    assert limits["cgroup_version"] == (1 if v1 is not None else 2)


def busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def pinned_busy_child(cpu: int, seconds: float) -> multiprocessing.Process:
    def run() -> None:
        os.sched_setaffinity(0, {cpu})
        busy(seconds)

    ctx = multiprocessing.get_context("fork")
    proc = ctx.Process(target=run, daemon=True)
    proc.start()
    return proc


def test_pinned_busy_loop_shows_near_100_percent_on_its_core() -> None:
    # On a loaded machine the spinner does not get its whole core, so the control is the spinner itself: the CPU time
    # the kernel charged it (psutil reads /proc/PID/stat) over the same window. Its core is at least that busy.
    cpu = max(os.sched_getaffinity(0))

    def share(a: tuple[float, float], b: tuple[float, float]) -> float:
        return 100.0 * (b[0] - a[0]) / (b[1] - a[1])

    def measure() -> tuple[Any, ...]:
        child = pinned_busy_child(cpu, 3.0)
        spinner = psutil.Process(child.pid)

        def charged() -> tuple[float, float]:
            times = spinner.cpu_times()
            return times.user + times.system, time.monotonic()

        try:
            time.sleep(0.3)
            sampler = hypermesh.Sampler()
            psutil.cpu_percent(percpu=True)
            before_first = charged()
            first = sampler.sample()  # the first sample already covers a real interval
            before = charged()
            time.sleep(0.5)
            s = sampler.sample()
            after = charged()
            ps = psutil.cpu_percent(percpu=True)
        finally:
            child.kill()
            child.join()
        return share(before_first, before), share(before, after), first, s, ps

    # The control must have run for the bounds below to prove anything; on a machine busy with other work the
    # spinner once got 18 % of its core: measure again (three times at most) rather than prove nothing.
    for _ in range(3):
        spun_first, spun, first, s, ps = measure()
        if spun > 20.0:
            break
    index = online_cpus().index(cpu)  # per_core follows the online CPUs, not this process's affinity
    assert spun > 20.0, spun  # the control ran at all: otherwise the test proves nothing
    # /proc/PID/stat moves in 10 ms ticks: 2 ticks over the 0.1 s first window, ~1 over 0.5 s, plus the bracket.
    assert first.cpu.per_core[index] >= spun_first - 25.0, (first.cpu, spun_first)
    assert s.cpu.per_core[index] >= spun - 10.0, (s.cpu, spun)
    assert abs(s.cpu.per_core[index] - ps[index]) <= 12.0, (s.cpu.per_core, ps)
    assert s.cpu.source in ("cpuidle", "schedstat", "proc_stat")
    assert s.cpu.percent * len(s.cpu.per_core) >= spun - 10.0, (s.cpu.percent, spun)


def lo_counters() -> tuple[int, int]:
    """(rx bytes, rx packets) of lo from /proc/net/dev: the kernel's own count, read beside ours."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, values = line.partition(":")
            if name.strip() == "lo":
                fields = values.split()
                return int(fields[0]), int(fields[1])
    raise AssertionError("no lo in /proc/net/dev")


def test_loopback_rates_under_a_known_udp_volume() -> None:
    # Other processes (other tests, other users of this machine) talk over lo too: the kernel's counters read just
    # outside our two readings bound what we may report from above; our own datagrams bound it from below.
    count, size = 2000, 1000
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sampler = hypermesh.Sampler()
    outer_before = lo_counters()
    sampler.sample()
    payload = b"x" * size
    for _ in range(count):
        sender.sendto(payload, receiver.getsockname())
    s = sampler.sample()
    outer_after = lo_counters()
    sender.close()
    receiver.close()
    lo = next(n for n in s.network if n.name == "lo")
    rx_bytes = round(lo.rx_bytes_per_s * s.interval_s)
    rx_packets = round(lo.rx_packets_per_s * s.interval_s)
    # loopback_xmit counts skb->len after eth_type_trans pulled the Ethernet header: payload + 20 IPv4 + 8 UDP.
    expected = count * (size + 28)
    assert expected <= rx_bytes <= outer_after[0] - outer_before[0], (rx_bytes, outer_before, outer_after)
    assert count <= rx_packets <= outer_after[1] - outer_before[1], (rx_packets, outer_before, outer_after)


def test_disk_rates_under_a_write_and_fsync(tmp_path: pytest.TempPathFactory) -> None:
    sampler = hypermesh.Sampler()
    sampler.sample()
    path = os.path.join(str(tmp_path), "blob")
    with open(path, "wb") as f:
        f.write(os.urandom(8 * 1024 * 1024))
        f.flush()
        os.fsync(f.fileno())
    s = sampler.sample()
    written = sum(d.write_bytes_per_s * s.interval_s for d in s.disks)
    assert written >= 8 * 1024 * 1024 * 0.95, s.disks


def test_memory_sample_matches_meminfo() -> None:
    s = hypermesh.Sampler().sample()
    assert s.memory.total_bytes == meminfo_kib("MemTotal") * 1024
    available = meminfo_kib("MemAvailable") * 1024
    assert abs(s.memory.available_bytes - available) < 256 * 1024**2
    assert s.memory.used_bytes == s.memory.total_bytes - s.memory.available_bytes
    cached = (meminfo_kib("Cached") + meminfo_kib("SReclaimable")) * 1024
    assert abs(s.memory.cached_bytes - cached) < 64 * 1024**2
    assert abs(s.memory.cached_bytes - psutil.virtual_memory().cached) < 64 * 1024**2  # same meaning as psutil's
    has_psi = os.path.exists("/proc/pressure/memory")
    assert (s.memory.pressure is not None) == has_psi
    with open("/proc/loadavg") as f:
        load1 = float(f.read().split()[0])
    assert abs(s.load.avg1 - load1) < 0.5


def test_counters_are_monotonic_and_match_proc() -> None:
    sampler = hypermesh.Sampler()
    a = sampler.counters()
    busy(0.05)
    b = sampler.counters()
    assert b.monotonic > a.monotonic
    for x, y in zip(a.cpu, b.cpu, strict=True):
        assert y.user_seconds + y.system_seconds + y.idle_seconds >= x.user_seconds + x.system_seconds + x.idle_seconds
    with open("/proc/stat") as f:
        cpu0 = next(line for line in f if line.startswith("cpu0 ")).split()
    assert abs(b.cpu[0].user_seconds - int(cpu0[1]) / os.sysconf("SC_CLK_TCK")) < 1.0
    assert {d.name for d in b.disks} == {d.name for d in hypermesh.profile().storage}


def duty_cycle_child(cpu: int, seconds: float) -> multiprocessing.Process:
    """Busy 2 ms, sleep 2 ms, pinned to ``cpu``: a 50 % load whose phases are shorter than a /proc/stat tick."""

    def run() -> None:
        os.sched_setaffinity(0, {cpu})
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            busy(0.002)
            time.sleep(0.002)

    proc = multiprocessing.get_context("fork").Process(target=run, daemon=True)
    proc.start()
    return proc


def without_fine_source(raw: RawCounters) -> RawCounters:
    return RawCounters(
        raw.monotonic, raw.wall, raw.cpu, None, None, raw.memory, raw.pressure, raw.disks, raw.network, raw.load
    )


@pytest.mark.slow
def test_per_core_cpu_at_100_hz_is_finer_than_ticks() -> None:
    """At 100 Hz /proc/stat can only say 0 % or 100 % per core; the finer source must see a 50 % load as such.

    Both views are computed from the same readings, so machine noise affects them alike.
    """
    cpu = max(os.sched_getaffinity(0))
    index = online_cpus().index(cpu)  # per_core follows the online CPUs, not this process's affinity
    has_cpuidle = os.path.exists(f"/sys/devices/system/cpu/cpu{cpu}/cpuidle/state0/time")
    reader = LinuxBackend().counter_reader()
    assert has_cpuidle <= (reader.fine_kind is not None)
    if reader.fine_kind is None:
        # A kernel without CONFIG_SCHEDSTATS and without a cpuidle driver (some VMs: current_driver "none"). What
        # must hold here is honesty: neither file exists, the readings carry no finer source, and the rates are
        # the ticks' own. The finer path runs in the second kernel (tests/vm: Debian 6.1 has schedstat).
        reader.close()
        assert not os.path.exists("/proc/schedstat")
        assert not glob.glob("/sys/devices/system/cpu/cpu*/cpuidle/state*/time")
        check_tick_fallback(cpu, index)
        return
    child = duty_cycle_child(cpu, 4.0)
    readings = []
    # The reader keeps off the child's CPU where there is another: under emulation (the 6.1 guest) its 100 reads
    # a second cost enough to take the child's run time (24 % of the 50 % asked was seen at host load 5).
    affinity = os.sched_getaffinity(0)
    if len(affinity) > 1:
        os.sched_setaffinity(0, affinity - {cpu})
    try:
        time.sleep(0.3)
        child_ran = [task_run_seconds(child.pid)]
        start = time.monotonic()
        for k in range(1, 202):
            readings.append(reader.read())
            time.sleep(max(0.0, start + k * 0.01 - time.monotonic()))
        child_ran.append(task_run_seconds(child.pid))
    finally:
        os.sched_setaffinity(0, affinity)
        child.kill()
        child.join()
        reader.close()
    fine, coarse = CpuRates(), CpuRates()
    fine_values, tick_values = [], []
    for a, b in itertools.pairwise(readings):
        dt = b.monotonic - a.monotonic
        fine_values.append(fine.compute(a, b, dt).per_core[index])
        tick_values.append(coarse.compute(without_fine_source(a), without_fine_source(b), dt).per_core[index])
    mean = sum(fine_values) / len(fine_values)
    # The independent measure is the child's own run time, in ns, from /proc/PID/schedstat. Ticks are not: the
    # 4 ms duty period beats against a 250 Hz tick, and over 2 s ticks once said 36 % of a load that ran 48 %.
    window = readings[-1].monotonic - readings[0].monotonic
    child_share = 100.0 * (child_ran[1] - child_ran[0]) / window
    assert child_share >= 20.0  # the 50 % duty load ran (an emulated guest on a loaded host gives it less)
    # The core's busy time holds the child's and whatever else ran there: about the child's, never far off. Loose,
    # because the 6.1 guest runs under TCG emulation on a shared host, where the per-CPU run time (rq clock) and a
    # task's own (its sum_exec_runtime) drift apart: 37 % against 51 % was seen at host load 15. What this test is
    # for is the next check, that the finer source shows the 50 % as such, not as 0 % and 100 % ticks.
    assert 0.6 * child_share <= mean <= child_share + 20.0, (mean, child_share)
    fine_extremes = sum(v in (0.0, 100.0) for v in fine_values)
    tick_extremes = sum(v in (0.0, 100.0) for v in tick_values)
    assert tick_extremes >= 0.6 * len(tick_values), tick_values  # what tick counting gives at 100 Hz
    assert fine_extremes <= 0.5 * tick_extremes, (fine_extremes, tick_extremes, fine_values)


def task_run_seconds(pid: int) -> float:
    """Seconds task ``pid`` has run on a CPU, exact to the ns (/proc/PID/schedstat's first field)."""
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def check_tick_fallback(cpu: int, index: int) -> None:
    """Without a finer source the per-core rates are /proc/stat's ticks, computed as such, never invented."""
    reader = LinuxBackend().counter_reader()
    child = duty_cycle_child(cpu, 1.5)
    readings = []
    try:
        time.sleep(0.3)
        for _ in range(40):
            readings.append(reader.read())
            time.sleep(0.025)
    finally:
        child.kill()
        child.join()
        reader.close()
    ours, ticks = CpuRates(), CpuRates()
    for a, b in itertools.pairwise(readings):
        assert (a.fine_kind, a.fine) == (None, None)
        dt = b.monotonic - a.monotonic
        expected = ticks.compute(without_fine_source(a), without_fine_source(b), dt).per_core[index]
        assert ours.compute(a, b, dt).per_core[index] == expected
    overall = CpuRates().compute(readings[0], readings[-1], readings[-1].monotonic - readings[0].monotonic)
    assert overall.per_core[index] >= 30.0  # the 50 % duty load is seen over the whole window


# ------------------------------------------------------------------------ big hosts and mounts that come and go


def run_python(prefix: list[str], script: str) -> dict[str, object]:
    """Run ``script`` under ``prefix`` (a namespace) with this interpreter; it prints one JSON object."""
    out = subprocess.run(
        [*prefix, sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=os.getcwd()
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.mark.netns
@pytest.mark.root
def test_sampler_sees_every_interface_when_net_dev_is_longer_than_a_page() -> None:
    """A read of /proc/net/dev stops after about one page of records (~30 interfaces): read on to EOF."""
    require_root()
    require_binary("ip")
    netns = f"hm-big-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        batch = "".join(f"link add hmva{i} type veth peer name hmvb{i}\n" for i in range(40))
        subprocess.run(["ip", "-n", netns, "-batch", "-"], input=batch, text=True, check=True)
        got = run_python(
            ["ip", "netns", "exec", netns],
            "import json, os, hypermesh\n"
            "s = hypermesh.Sampler(min_interval=0.01)\n"
            "print(json.dumps({'net_dev': len(open('/proc/net/dev', 'rb').read()),\n"
            "  'sysfs': sorted(os.listdir('/sys/class/net')),\n"
            "  'sample': sorted(n.name for n in s.sample().network),\n"
            "  'counters': sorted(n.name for n in s.counters().network),\n"
            "  'node_stats': sorted(s.node_stats().net_dev)}))\n",
        )
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    assert isinstance(got["net_dev"], int) and got["net_dev"] > 8192  # more than two pages of records
    assert len(got["sysfs"]) == 81  # type: ignore[arg-type]
    assert got["sample"] == got["counters"] == got["node_stats"] == got["sysfs"]


@pytest.fixture
def loop_device(tmp_path: pathlib.Path) -> Iterator[str]:
    """A 32 MiB ext4 loop device, detached afterwards."""
    yield from make_loop_device(tmp_path, ["mkfs.ext4", "-q", "-F"], 32 * 1024**2)


@pytest.fixture
def loop_device_btrfs(tmp_path: pathlib.Path) -> Iterator[str]:
    """A 128 MiB btrfs loop device (btrfs-progs), detached afterwards."""
    yield from make_loop_device(tmp_path, ["mkfs.btrfs", "-q", "-f"], 128 * 1024**2)


# Mounts made in a private mount namespace vanish with it: nothing leaks into the machine's mount table.
PRIVATE_MOUNTS = ["unshare", "--mount", "--propagation", "private"]


@pytest.mark.root
def test_a_loop_mount_past_the_first_page_of_mountinfo_is_listed(loop_device: str, tmp_path: pathlib.Path) -> None:
    """mountinfo longer than a page: the mount in its later records belongs to the profile and the sampler too."""
    require_binary("unshare")
    base = os.path.join(str(tmp_path), "m" * 100)
    got = run_python(
        PRIVATE_MOUNTS,
        "import json, os, subprocess, hypermesh\n"
        f"base, dev = {base!r}, {loop_device!r}\n"
        "for i in range(40):\n"
        "    os.makedirs(f'{base}/t{i}')\n"
        "    subprocess.run(['mount', '-t', 'tmpfs', 'none', f'{base}/t{i}'], check=True)\n"
        "os.makedirs(f'{base}/disk')\n"
        "subprocess.run(['mount', dev, f'{base}/disk'], check=True)\n"
        "s = hypermesh.Sampler(min_interval=0.01)\n"
        "print(json.dumps({'mountinfo': len(open('/proc/self/mountinfo', 'rb').read()),\n"
        "  'profile': {d.name: [m.mountpoint for m in d.mounts] for d in hypermesh.profile().storage},\n"
        "  'sample': [d.name for d in s.sample().disks]}))\n",
    )
    name = os.path.basename(loop_device)
    assert isinstance(got["mountinfo"], int) and got["mountinfo"] > 8192
    assert got["profile"][name] == [f"{base}/disk"]  # type: ignore[index]
    assert name in got["sample"]  # type: ignore[operator]


@pytest.mark.root
def test_sampler_follows_a_loop_device_mounted_and_unmounted_while_it_runs(
    loop_device: str, tmp_path: pathlib.Path
) -> None:
    """loop0..7 stay in /proc/diskstats attached or not: mounting one must still bring it into the samples."""
    require_binary("unshare")
    target = os.path.join(str(tmp_path), "disk")
    os.makedirs(target)
    got = run_python(
        PRIVATE_MOUNTS,
        "import json, subprocess, time, hypermesh\n"
        f"dev, target = {loop_device!r}, {target!r}\n"
        "s = hypermesh.Sampler(min_interval=0.01)\n"
        "names = lambda: [d.name for d in s.sample().disks]\n"
        "before = names()\n"
        "subprocess.run(['mount', dev, target], check=True)\n"
        "mounted = [names() for _ in range(3)]\n"
        "subprocess.run(['umount', target], check=True)\n"
        "after = [names() for _ in range(2)]\n"
        "print(json.dumps({'before': before, 'mounted': mounted, 'after': after}))\n",
    )
    name = os.path.basename(loop_device)
    assert name not in got["before"]  # type: ignore[operator]
    assert name in got["mounted"][-1]  # type: ignore[index]  # one sample to take its baseline, then listed
    assert all(name not in names for names in got["after"])  # type: ignore[attr-defined]


@pytest.mark.root
@pytest.mark.parametrize("name", ["caf\u00e9 disk".encode(), b"caf\xe9 latin-1"], ids=["utf8", "not-utf8"])
def test_a_mountpoint_with_utf8_and_a_space_is_reported_as_it_is(
    loop_device: str, tmp_path: pathlib.Path, name: bytes
) -> None:
    """mountinfo escapes the space as \\040 and leaves other bytes alone: the profile must give back the real path
    (decoded as os.listdir decodes it), and statvfs must find it."""
    require_binary("unshare")
    target = os.path.join(str(tmp_path), os.fsdecode(name))
    os.makedirs(target)
    got = run_python(
        PRIVATE_MOUNTS,
        "import json, os, subprocess, hypermesh\n"
        f"dev, target = {loop_device!r}, {target!r}\n"
        "subprocess.run(['mount', dev, target], check=True)\n"
        "st = os.statvfs(target)\n"
        "mounts = {d.name: d.mounts for d in hypermesh.profile().storage}[os.path.basename(dev)]\n"
        "print(json.dumps({'statvfs': st.f_blocks * st.f_frsize, 'mounts': [m.to_dict() for m in mounts]}))\n",
    )
    [mount] = got["mounts"]  # type: ignore[misc]
    assert mount["mountpoint"] == target
    assert mount["total_bytes"] == got["statvfs"]


@pytest.mark.root
def test_a_btrfs_mount_is_listed_with_its_device(loop_device_btrfs: str, tmp_path: pathlib.Path) -> None:
    """btrfs shows an anonymous 0:N device number in mountinfo: the device must still get its mount, as in lsblk."""
    require_binary("unshare")
    target = os.path.join(str(tmp_path), "btrfs")
    os.makedirs(target)
    got = run_python(
        PRIVATE_MOUNTS,
        "import json, os, subprocess, hypermesh\n"
        f"dev, target = {loop_device_btrfs!r}, {target!r}\n"
        "subprocess.run(['mount', dev, target], check=True)\n"
        "s = hypermesh.Sampler(min_interval=0.01)\n"
        "storage = {d.name: [m.mountpoint for m in d.mounts] for d in hypermesh.profile().storage}\n"
        "print(json.dumps({'profile': storage, 'sample': [d.name for d in s.sample().disks]}))\n",
    )
    name = os.path.basename(loop_device_btrfs)
    assert got["profile"].get(name) == [target]  # type: ignore[attr-defined]
    assert name in got["sample"]  # type: ignore[operator]


@pytest.mark.netns
@pytest.mark.root
def test_an_interface_name_that_is_not_utf8_does_not_stop_sampling() -> None:
    """Interface names are bytes ("caf\\xe9" in Latin-1): every sample failed with "unexpected content"."""
    require_root()
    require_binary("ip")
    netns = f"hm-name-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(
            [b"ip", b"-n", netns.encode(), b"link", b"add", b"caf\xe9", b"type", b"veth", b"peer", b"name", b"x\xff"],
            check=True,
        )
        got = run_python(
            ["ip", "netns", "exec", netns],
            "import json, os, hypermesh\n"
            "s = hypermesh.Sampler(min_interval=0.01)\n"
            "print(json.dumps({'sysfs': sorted(os.listdir('/sys/class/net')),\n"
            "  'profile': sorted(n.name for n in hypermesh.profile().network),\n"
            "  'sample': sorted(n.name for n in s.sample().network),\n"
            "  'counters': sorted(n.name for n in s.counters().network),\n"
            "  'node_stats': sorted(s.node_stats().net_dev)}))\n",
        )
        hypermesh_cli = str(pathlib.Path(sys.executable).with_name("hypermesh"))
        cli = subprocess.run(
            ["ip", "netns", "exec", netns, hypermesh_cli, "sample", "--count", "1", "--interval", "0.05", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        # The table under a strict UTF-8 locale (en_US.UTF-8 makes stdout strict): the name's own bytes, as ip(8).
        table = subprocess.run(
            ["ip", "netns", "exec", netns, hypermesh_cli, "profile"],
            capture_output=True,
            timeout=60,
            env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"},
        )
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    assert cli.returncode == 0, cli.stderr
    assert table.returncode == 0, table.stderr
    assert b"caf\xe9 " in table.stdout
    assert got["sample"] == got["counters"] == got["profile"] == got["sysfs"]
    assert "caf\udce9" in got["sample"]  # type: ignore[operator]  # os.listdir's decoding, as psutil's
