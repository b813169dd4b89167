"""The Linux fixture trees themselves: kernel formats, internal consistency, and their expected.json.

This is an independent check of the trees, written without hypermesh's parsers: if a tree drifted from the
kernel's formats (a column lost in diskstats, a cpulist that does not cover the online CPUs, a README fact the
files do not back), the backend's fixture tests would prove nothing.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "linux"
TREES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir() and (p / "expected.json").exists())
# Counter snapshots: every tree's proc/ plus later/proc/ where a tree has one.
SNAPSHOTS = [(t, s) for t in TREES for s in ("", "later/") if (FIXTURES / t / s / "proc").is_dir()]


def test_every_tree_is_checked() -> None:
    expected = {
        "this-machine",
        "numa-2node",
        "hybrid-pe",
        "nvme-hdd",
        "cgroup-v1",
        "cgroup-v1-mountroot",
        "cgroup-v2",
        "no-psi",
    }
    assert expected <= set(TREES)
    assert {t for t, s in SNAPSHOTS if s} == {"this-machine", "nvme-hdd"}


def read(tree: str, rel: str) -> str:
    return (FIXTURES / tree / rel).read_text()


def exists(tree: str, rel: str) -> bool:
    return (FIXTURES / tree / rel).exists()


def expected(tree: str) -> dict:  # type: ignore[type-arg]
    return json.loads(read(tree, "expected.json"))


def cpulist(text: str) -> list[int]:
    out: list[int] = []
    for part in text.strip().split(","):
        if part:
            low, _, high = part.partition("-")
            out.extend(range(int(low), int(high or low) + 1))
    return out


def online(tree: str) -> list[int]:
    return cpulist(read(tree, "sys/devices/system/cpu/online"))


def stat_cpu_lines(tree: str, snap: str = "") -> tuple[list[int], dict[int, list[int]]]:
    lines = read(tree, f"{snap}proc/stat").splitlines()
    assert re.fullmatch(r"cpu  \d+( \d+){7,9}", lines[0]), lines[0]
    total = [int(v) for v in lines[0].split()[1:]]
    per_cpu: dict[int, list[int]] = {}
    for line in lines[1:]:
        if not line.startswith("cpu"):
            break
        assert re.fullmatch(r"cpu\d+ \d+( \d+){7,9}", line), line
        name, *values = line.split()
        per_cpu[int(name[3:])] = [int(v) for v in values]
    assert all(len(v) == len(total) for v in per_cpu.values())
    rest = [line.split()[0] for line in lines[1 + len(per_cpu) :]]
    assert not any(r.startswith("cpu") for r in rest), "cpuN lines must come together right after 'cpu'"
    assert {"intr", "ctxt", "btime", "processes", "procs_running", "procs_blocked"} <= set(rest)
    return total, per_cpu


def diskstats(tree: str, snap: str = "") -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {}
    widths = set()
    for line in read(tree, f"{snap}proc/diskstats").splitlines():
        fields = line.split()
        # 14 fields before 4.18, 18 with discards (4.18), 20 with flushes (5.5): block/genhd.c
        assert len(fields) in (14, 18, 20), line
        assert re.fullmatch(r" *\d+ +\d+ \S+( \d+)+", line), line
        assert fields[2] not in rows, f"{fields[2]} listed twice"
        widths.add(len(fields))
        rows[fields[2]] = [int(fields[0]), int(fields[1]), *map(int, fields[3:])]
    assert len(widths) == 1, "one kernel prints one width"
    return rows


def net_dev(tree: str, snap: str = "") -> dict[str, list[int]]:
    lines = read(tree, f"{snap}proc/net/dev").splitlines()
    assert lines[0].startswith("Inter-|   Receive")
    assert lines[1].startswith(" face |bytes    packets errs drop fifo frame compressed multicast|bytes")
    rows = {}
    for line in lines[2:]:
        name, sep, rest = line.partition(":")
        assert sep and name.strip() and " " not in name.strip(), line
        values = rest.split()
        assert len(values) == 16 and all(v.isdigit() for v in values), line
        rows[name.strip()] = [int(v) for v in values]
    return rows


def meminfo_kib(tree: str, snap: str = "") -> dict[str, int]:
    out = {}
    for line in read(tree, f"{snap}proc/meminfo").splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_()]+): +(\d+)( kB)?", line)
        assert match, line
        out[match.group(1)] = int(match.group(2))
    assert {"MemTotal", "MemFree", "MemAvailable", "Cached", "SwapTotal", "SwapFree"} <= set(out)
    assert out["MemAvailable"] <= out["MemTotal"] and out["MemFree"] <= out["MemTotal"]
    return out


# -------------------------------------------------------------------------------- counter files


@pytest.mark.parametrize(("tree", "snap"), SNAPSHOTS)
def test_proc_stat(tree: str, snap: str) -> None:
    total, per_cpu = stat_cpu_lines(tree, snap)
    assert sorted(per_cpu) == online(tree)
    # The "cpu" line is the kernel's sum of the cpuN lines; a live recording reads them a moment apart.
    slack = 0 if tree != "this-machine" else 2 * len(per_cpu)
    for column, value in enumerate(total):
        assert abs(value - sum(v[column] for v in per_cpu.values())) <= slack, column
    btime = next(
        int(line.split()[1]) for line in read(tree, f"{snap}proc/stat").splitlines() if line.startswith("btime")
    )
    assert btime == expected(tree)["os"]["boot_time"]


@pytest.mark.parametrize(("tree", "snap"), SNAPSHOTS)
def test_diskstats_match_sys_block(tree: str, snap: str) -> None:
    rows = diskstats(tree, snap)
    for disk in os.listdir(FIXTURES / tree / "sys/block"):
        base = f"sys/block/{disk}"
        devices = [(disk, base)] + [
            (child, f"{base}/{child}")
            for child in os.listdir(FIXTURES / tree / base)
            if child.startswith(disk) and exists(tree, f"{base}/{child}/partition")
        ]
        for name, path in devices:
            assert name in rows, f"{name} has no diskstats line"
            major, minor = read(tree, f"{path}/dev").strip().split(":")
            assert rows[name][:2] == [int(major), int(minor)], name


@pytest.mark.parametrize(("tree", "snap"), SNAPSHOTS)
def test_net_dev_matches_sys_class_net(tree: str, snap: str) -> None:
    assert sorted(net_dev(tree, snap)) == sorted(os.listdir(FIXTURES / tree / "sys/class/net"))


@pytest.mark.parametrize(("tree", "snap"), SNAPSHOTS)
def test_meminfo_loadavg_pressure(tree: str, snap: str) -> None:
    kib = meminfo_kib(tree, snap)
    assert kib["MemTotal"] * 1024 == expected(tree)["memory"]["total_bytes"]
    assert kib["SwapTotal"] * 1024 == expected(tree)["memory"]["swap_total_bytes"]
    assert kib["Hugepagesize"] * 1024 == expected(tree)["memory"]["hugepage_size_bytes"]
    assert re.fullmatch(r"\d+\.\d\d \d+\.\d\d \d+\.\d\d \d+/\d+ \d+\n", read(tree, f"{snap}proc/loadavg"))
    has_psi = exists(tree, f"{snap}proc/pressure/memory")
    assert has_psi == expected(tree)["pressure"]
    if has_psi:
        number = r"avg10=\d+\.\d\d avg60=\d+\.\d\d avg300=\d+\.\d\d total=\d+"
        assert re.fullmatch(f"some {number}\nfull {number}\n", read(tree, f"{snap}proc/pressure/memory"))


@pytest.mark.parametrize("tree", [t for t, s in SNAPSHOTS if s])
def test_later_snapshot_moves_forward_by_the_documented_increments(tree: str) -> None:
    later = expected(tree)["later"]
    (_, cpu0), (_, cpu1) = stat_cpu_lines(tree), stat_cpu_lines(tree, "later/")
    modes = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    for cpu, before in cpu0.items():
        moved = {m: cpu1[cpu][i] - before[i] for i, m in enumerate(modes)}
        assert all(v >= 0 for v in moved.values()), cpu
        stated = later["cpu_ticks"].get(f"cpu{cpu}", {})
        assert {m: v for m, v in moved.items() if v} == {m: v for m, v in stated.items() if v}, cpu
    disk0, disk1 = diskstats(tree), diskstats(tree, "later/")
    columns = {"reads": 2, "read_sectors": 4, "read_ms": 5, "writes": 6, "write_sectors": 8, "write_ms": 9}
    columns["io_ticks_ms"] = 11  # rows hold major, minor, then the numbers after the name
    for name, before in disk0.items():
        assert all(b >= a for a, b in zip(before, disk1[name], strict=True)), name
        for field, value in later["diskstats"].get(name, {}).items():
            assert disk1[name][columns[field]] - before[columns[field]] == value, (name, field)
    net0, net1 = net_dev(tree), net_dev(tree, "later/")
    for name, before in net0.items():
        moved = {"rx_bytes": 0, "rx_packets": 1, "tx_bytes": 8, "tx_packets": 9}
        got = {field: net1[name][i] - before[i] for field, i in moved.items()}
        assert got == later["net_dev"].get(name, dict.fromkeys(moved, 0)), name


# ---------------------------------------------------------------------------------------- profile


@pytest.mark.parametrize("tree", TREES)
def test_readme_says_what_and_where_from(tree: str) -> None:
    text = read(tree, "README.md")
    assert text.startswith(f"# {tree}:")
    assert "record.py" in text or "make_handmade.py" in text
    assert "Expected key facts" in text


@pytest.mark.parametrize("tree", TREES)
def test_os_files(tree: str) -> None:
    os_facts = expected(tree)["os"]
    assert read(tree, "proc/sys/kernel/osrelease").strip() == os_facts["release"]
    assert read(tree, "proc/sys/kernel/version").strip() == os_facts["kernel"]
    assert read(tree, "proc/sys/kernel/hostname").strip() == os_facts["hostname"]
    assert read(tree, "arch").strip() == os_facts["architecture"]
    pretty = re.search(r'^PRETTY_NAME="(.*)"$', read(tree, "etc/os-release"), re.MULTILINE)
    assert pretty and pretty.group(1) == os_facts["distribution"]


@pytest.mark.parametrize("tree", TREES)
def test_cpu_topology_caches_and_cpuinfo(tree: str) -> None:
    cpu = expected(tree)["cpu"]
    cpus = online(tree)
    assert cpulist(read(tree, "sys/devices/system/cpu/possible")) == cpus
    assert len(cpus) == cpu["logical_cores"]
    blocks = [b for b in read(tree, "proc/cpuinfo").split("\n\n") if b.strip()]
    assert len(blocks) == len(cpus)
    for block in blocks:
        fields = dict(re.split(r"\s*:\s?", line, maxsplit=1) for line in block.splitlines() if ":" in line)
        assert fields["vendor_id"] == cpu["vendor"] and fields["model name"] == cpu["model"]
    cores, packages = set(), set()
    caches: dict[tuple[int, str, tuple[int, ...]], int] = {}
    for n in cpus:
        top = f"sys/devices/system/cpu/cpu{n}/topology"
        package = int(read(tree, f"{top}/physical_package_id"))
        cores.add((package, int(read(tree, f"{top}/die_id")), int(read(tree, f"{top}/core_id"))))
        packages.add(package)
        cache_dir = FIXTURES / tree / f"sys/devices/system/cpu/cpu{n}/cache"
        for index in sorted(os.listdir(cache_dir)):
            d = f"sys/devices/system/cpu/cpu{n}/cache/{index}"
            shared = tuple(cpulist(read(tree, f"{d}/shared_cpu_list")))
            assert n in shared
            size = read(tree, f"{d}/size").strip()
            assert re.fullmatch(r"\d+[KM]", size)
            key = (int(read(tree, f"{d}/level")), read(tree, f"{d}/type").strip().lower(), shared)
            caches[key] = int(size[:-1]) * {"K": 1024, "M": 1024**2}[size[-1]]
    assert len(cores) == cpu["physical_cores"]
    assert len(packages) == cpu["sockets"]
    if "threads_per_core" in cpu:
        assert cpu["threads_per_core"] == len(cpus) // len(cores)
    assert [
        {"level": level, "type": kind, "size_bytes": size, "shared_cpu_list": list(shared)}
        for (level, kind, shared), size in sorted(caches.items())
    ] == cpu["caches"]


@pytest.mark.parametrize("tree", TREES)
def test_frequency_numa_core_types_and_fine_source(tree: str) -> None:
    cpu = expected(tree)["cpu"]
    cpus = online(tree)
    freq = f"sys/devices/system/cpu/cpu{cpus[0]}/cpufreq"
    if exists(tree, freq):
        khz = [int(read(tree, f"{freq}/{f}")) for f in ("cpuinfo_min_freq", "cpuinfo_max_freq", "scaling_cur_freq")]
        assert [k / 1000 for k in khz] == [cpu["frequency_mhz"][k] for k in ("min", "max", "current")]
    else:
        mhz = float(re.search(r"^cpu MHz\s*: (\S+)", read(tree, "proc/cpuinfo"), re.MULTILINE).group(1))  # type: ignore[union-attr]
        assert cpu["frequency_mhz"] == {"min": None, "max": None, "current": mhz}

    nodes = cpulist(read(tree, "sys/devices/system/node/online"))
    seen: list[int] = []
    for node in cpu["numa_nodes"]:
        assert node["id"] in nodes
        base = f"sys/devices/system/node/node{node['id']}"
        assert cpulist(read(tree, f"{base}/cpulist")) == node["cpus"]
        seen += node["cpus"]
        total = re.search(rf"^Node {node['id']} MemTotal: +(\d+) kB$", read(tree, f"{base}/meminfo"), re.MULTILINE)
        assert total and int(total.group(1)) * 1024 == node["memory_total_bytes"]
    assert sorted(seen) == cpus and len(seen) == len(set(seen)), "NUMA nodes partition the online CPUs"

    pmus = {"performance": "sys/devices/cpu_core/cpus", "efficiency": "sys/devices/cpu_atom/cpus"}
    hybrid = [{"kind": k, "cpus": cpulist(read(tree, p))} for k, p in pmus.items() if exists(tree, p)]
    assert (hybrid or [{"kind": "standard", "cpus": cpus}]) == cpu["core_types"]
    assert sorted(c for t in cpu["core_types"] for c in t["cpus"]) == cpus

    idle = all(
        (FIXTURES / tree / f"sys/devices/system/cpu/cpu{n}/cpuidle/state0/time").exists()
        and (FIXTURES / tree / f"sys/devices/system/cpu/cpu{n}/cpuidle/state0/name").exists()
        for n in cpus
    )
    schedstat = exists(tree, "proc/schedstat")
    if schedstat:
        lines = read(tree, "proc/schedstat").splitlines()
        assert re.fullmatch(r"version (1[5-9]|[2-9]\d)", lines[0])
        cpu_lines = [line.split() for line in lines if line.startswith("cpu")]
        assert sorted(int(f[0][3:]) for f in cpu_lines) == cpus
        assert all(len(f) == 10 and all(v.isdigit() for v in f[1:]) for f in cpu_lines)
    assert cpu["fine_source"] == ("schedstat" if schedstat else "cpuidle" if idle else None)


def _dev_to_disk(tree: str) -> dict[str, str]:
    owner = {}
    for disk in os.listdir(FIXTURES / tree / "sys/block"):
        base = f"sys/block/{disk}"
        assert re.fullmatch(r"\d+:\d+\n", read(tree, f"{base}/dev"))
        assert read(tree, f"{base}/removable").strip() in ("0", "1")
        assert read(tree, f"{base}/queue/rotational").strip() in ("0", "1")
        owner[read(tree, f"{base}/dev").strip()] = disk
        for child in os.listdir(FIXTURES / tree / base):
            if child.startswith(disk) and exists(tree, f"{base}/{child}/partition"):
                assert read(tree, f"{base}/{child}/partition").strip().isdigit()
                owner[read(tree, f"{base}/{child}/dev").strip()] = disk
    return owner


@pytest.mark.parametrize("tree", TREES)
def test_storage_from_sys_block_and_mountinfo(tree: str) -> None:
    owner = _dev_to_disk(tree)
    mounts: dict[str, list[dict[str, str]]] = {}
    for line in read(tree, "proc/self/mountinfo").splitlines():
        head, sep, tail = line.partition(" - ")
        fields = head.split()
        assert sep and len(fields) >= 6 and len(tail.split()) >= 2, line
        assert re.fullmatch(r"\d+:\d+", fields[2]), line
        if not fields[2].startswith("0:"):
            assert fields[2] in owner, f"mount of unknown block device {fields[2]}"
            mounts.setdefault(owner[fields[2]], []).append({"mountpoint": fields[4], "fstype": tail.split()[0]})
    stated = expected(tree)["storage"]

    # Whole disks, except loop/ram devices that back no mount and zram devices neither mounted nor configured.
    def in_use(d: str) -> bool:
        if d in mounts:
            return True
        if d.startswith("zram"):
            return int(read(tree, f"sys/block/{d}/size")) > 0
        return not d.startswith(("loop", "ram"))

    listed = sorted(d for d in set(owner.values()) if in_use(d))
    assert [d["name"] for d in stated] == listed
    for device in stated:
        base = f"sys/block/{device['name']}"
        assert int(read(tree, f"{base}/size")) * 512 == device["size_bytes"]
        assert bool(int(read(tree, f"{base}/queue/rotational"))) == device["rotational"]
        assert bool(int(read(tree, f"{base}/removable"))) == device["removable"]
        model = read(tree, f"{base}/device/model").strip() if exists(tree, f"{base}/device/model") else None
        assert model == device["model"]
        key = lambda m: m["mountpoint"]  # noqa: E731
        assert sorted(device["mounts"], key=key) == sorted(mounts.get(device["name"], []), key=key)
        kind = (
            "nvme"
            if device["name"].startswith("nvme")
            else "virtual"
            if device["name"].startswith(("vd", "xvd", "loop", "ram", "zram", "dm-", "md"))
            else "hdd"
            if device["rotational"]
            else "ssd"
        )
        assert device["kind"] == kind


@pytest.mark.parametrize("tree", TREES)
def test_network_from_sys_class_net_and_addresses(tree: str) -> None:
    addresses = json.loads(read(tree, "addresses.json"))
    stated = expected(tree)["network"]
    assert [n["name"] for n in stated] == sorted(os.listdir(FIXTURES / tree / "sys/class/net"))
    for nic in stated:
        base = f"sys/class/net/{nic['name']}"
        assert re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}\n", read(tree, f"{base}/address"))
        assert read(tree, f"{base}/address").strip() == nic["mac"]
        assert int(read(tree, f"{base}/mtu")) == nic["mtu"]
        flags = read(tree, f"{base}/flags").strip()
        assert re.fullmatch(r"0x[0-9a-f]+", flags)
        operstate = read(tree, f"{base}/operstate").strip()
        assert operstate in ("up", "down", "unknown", "dormant", "lowerlayerdown")
        # docs/metrics.md's rule: IFF_UP, and operstate up, or unknown (loopback, drivers that do not report it)
        # with a carrier that is not 0 (the file is absent or unreadable on an interface that is down).
        carrier = read(tree, f"{base}/carrier").strip() if exists(tree, f"{base}/carrier") else None
        running = operstate == "up" or (operstate == "unknown" and carrier != "0")
        assert (bool(int(flags, 16) & 0x1) and running) == nic["up"]
        speed = int(read(tree, f"{base}/speed")) if exists(tree, f"{base}/speed") else None
        assert nic["speed_mbps"] == (speed if speed is not None and speed > 0 else None)
        arp_type = int(read(tree, f"{base}/type"))
        kind = "loopback" if arp_type == 772 else "physical" if exists(tree, f"{base}/device") else "virtual"
        assert nic["kind"] == kind
        assert nic["addresses"] == addresses.get(nic["name"], [])
        for address in nic["addresses"]:
            assert re.fullmatch(r"[0-9a-f.:]+/\d{1,3}", address)


def _tightest(values: list[float]) -> float | None:
    return min(values) if values else None


@pytest.mark.parametrize("tree", TREES)
def test_cgroup_files_and_limits(tree: str) -> None:
    lines = read(tree, "proc/self/cgroup").splitlines()
    for line in lines:
        assert re.fullmatch(r"\d+:[a-z_,=]*:/\S*", line), line
    v1 = any(not line.startswith("0::") for line in lines)
    root = FIXTURES / tree / "sys/fs/cgroup"
    if not v1:
        path = lines[0][3:].strip("/")
        assert (root / "cgroup.controllers").exists() and (root / path).is_dir()
    # The trees hold limit files only along our cgroup path (record.py copies no others), so the binding
    # limit is the tightest file of each kind anywhere under sys/fs/cgroup.
    cpu: list[float] = []
    memory: list[float] = []
    pids: list[float] = []
    for directory, _, files in os.walk(root):
        d = Path(directory)
        if "cpu.max" in files:
            quota, period = (d / "cpu.max").read_text().split()
            if quota != "max":
                cpu.append(int(quota) / int(period))
        if "cpu.cfs_quota_us" in files and int((d / "cpu.cfs_quota_us").read_text()) > 0:
            cpu.append(int((d / "cpu.cfs_quota_us").read_text()) / int((d / "cpu.cfs_period_us").read_text()))
        for name, sink in (("memory.max", memory), ("pids.max", pids), ("memory.limit_in_bytes", memory)):
            if name in files:
                text = (d / name).read_text().strip()
                if text != "max" and int(text) < 1 << 62:  # v1 "unlimited" is PAGE_COUNTER_MAX pages
                    sink.append(int(text))
    limits = expected(tree)["limits"]
    assert limits["cgroup_version"] == (1 if v1 else 2)
    assert limits["cpu_quota_cores"] == _tightest(cpu)
    assert limits["memory_limit_bytes"] == _tightest(memory)
    assert limits["pids_max"] == _tightest(pids)
