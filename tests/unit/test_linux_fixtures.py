"""The Linux backend on recorded and hand-made trees (tests/fixtures/linux/*/README.md says what each is).

Each tree's expected.json was written from the files themselves (by hand or by record.py), not by this backend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hypermesh.platform.linux import LinuxBackend, procfs
from hypermesh.platform.linux.mounts import parse_mountinfo
from hypermesh.sampling import counters

TREES = Path(__file__).resolve().parent.parent / "fixtures" / "linux"
NAMES = sorted(p.name for p in TREES.iterdir() if (p / "expected.json").exists())


def expected(name: str) -> dict[str, Any]:
    return json.loads((TREES / name / "expected.json").read_text())


@pytest.fixture(params=NAMES)
def tree(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_all_trees_are_present() -> None:
    assert {"this-machine", "numa-2node", "hybrid-pe", "nvme-hdd", "cgroup-v1", "cgroup-v2", "no-psi"} <= set(NAMES)


def test_profile_matches_the_tree(tree: str) -> None:
    want = expected(tree)
    got = LinuxBackend(root=str(TREES / tree)).profile().to_dict()
    assert got["os"] == want["os"]
    assert got["memory"] == want["memory"]
    assert got["limits"] == want["limits"]
    cpu_want = want["cpu"]
    for key, value in cpu_want.items():
        if key == "fine_source":
            continue
        assert got["cpu"][key] == value, key
    assert got["gpus"] == []

    def comparable(devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # Mounts are listed by mountpoint; the trees have no statvfs, so sizes are left out.
        return [
            {
                **d,
                "mounts": sorted(
                    ({"mountpoint": m["mountpoint"], "fstype": m["fstype"]} for m in d["mounts"]), key=str
                ),
            }
            for d in devices
        ]

    assert comparable(got["storage"]) == comparable(want["storage"])
    for d in got["storage"]:
        assert [m["mountpoint"] for m in d["mounts"]] == sorted(m["mountpoint"] for m in d["mounts"])
    assert got["network"] == want["network"]
    assert set(got["timings_ms"]) >= {"os", "cpu", "memory", "storage", "network", "limits", "total"}


def test_fine_cpu_source_and_pressure_are_detected(tree: str) -> None:
    want = expected(tree)
    reader = LinuxBackend(root=str(TREES / tree)).counter_reader()
    try:
        raw = reader.read()
    finally:
        reader.close()
    assert raw.fine_kind == want["cpu"]["fine_source"]
    assert (raw.pressure is not None) == want["pressure"]
    assert sorted(raw.cpu) == sorted(c for t in want["cpu"]["core_types"] for c in t["cpus"])


@pytest.mark.parametrize("name", [n for n in NAMES if "later" in expected(n)])
def test_rates_between_two_snapshots_are_exact(name: str) -> None:
    """proc/ and later/proc/ differ by documented increments; over 1 s they give documented rates."""
    root = TREES / name
    want = expected(name)["later"]
    first = LinuxBackend(root=str(root)).counter_reader()
    second = LinuxBackend(root=str(root), proc=str(root / "later" / "proc")).counter_reader()
    a, b = first.read(), second.read()
    first.close()
    second.close()
    elapsed = float(want["interval_s"])
    b.monotonic = a.monotonic + elapsed
    rates = want.get("rates_at_interval") or {}

    cpu = counters.CpuRates().compute(a, b, elapsed)
    if "cpu_percent" in rates:
        per_cpu = {k: v for k, v in rates["cpu_percent"].items() if k != "all"}
        assert cpu.per_core == tuple(per_cpu[f"cpu{i}"] for i in sorted(a.cpu))
        assert cpu.percent == pytest.approx(rates["cpu_percent"]["all"], abs=0.01)
    else:  # this-machine: state the per-CPU busy share from the documented tick increments
        per_cpu_ticks = [v for k, v in want["cpu_ticks"].items() if k[3:].isdigit()]
        for i, ticks in enumerate(per_cpu_ticks):
            total = sum(ticks.values())
            busy = total - ticks.get("idle", 0) - ticks.get("iowait", 0)
            assert cpu.per_core[i] == pytest.approx(100.0 * busy / total, abs=0.01)

    disks = {d.name: d for d in counters.disk_rates(a, b, elapsed)}
    nets = {n.name: n for n in counters.network_rates(a, b, elapsed)}
    for device, figures in rates.items():
        if device in ("cpu_percent", "memory_pressure"):
            continue
        record = disks.get(device) or nets[device]
        for field, value in figures.items():
            assert getattr(record, field) == pytest.approx(value), (device, field)
    # partitions are folded into their disk: never sampled twice
    assert not any(name[-1].isdigit() and name[:-1] in disks for name in disks if not name.startswith(("nvme", "loop")))
    for name_, increments in want.get("net_dev", {}).items():
        assert nets[name_].rx_bytes_per_s == increments.get("rx_bytes", 0) / elapsed
    if "memory_pressure" in rates:
        p = counters.pressure(a, b, elapsed)
        assert p is not None
        assert p.some_stall_us_per_s == rates["memory_pressure"]["some_stall_us_per_s"]
        assert p.full_stall_us_per_s == rates["memory_pressure"]["full_stall_us_per_s"]
    if "meminfo_kib" in want:
        assert b.memory[1] - a.memory[1] == want["meminfo_kib"].get("MemAvailable", 0) * 1024


def test_no_psi_kernel_gives_null_pressure_not_an_error() -> None:
    from hypermesh.sampling.sampler import Sampler

    sampler = Sampler(min_interval=0.001, backend=LinuxBackend(root=str(TREES / "no-psi")))
    s = sampler.sample()
    sampler.close()
    assert s.memory.pressure is None
    assert s.cpu.source == "proc_stat"
    assert s.to_dict()["memory"]["pressure"] is None


def test_hybrid_cpu_reports_the_most_threads_any_core_runs() -> None:
    # hybrid-pe: P-cores 0-7 as 4 SMT pairs, E-cores 8-15 single-threaded (README of the tree).
    cpu = LinuxBackend(root=str(TREES / "hybrid-pe")).profile().cpu
    assert (cpu.logical_cores, cpu.physical_cores, cpu.threads_per_core) == (16, 12, 2)
    assert [(t.kind, t.cpus) for t in cpu.core_types] == [
        ("performance", tuple(range(8))),
        ("efficiency", tuple(range(8, 16))),
    ]


@pytest.mark.parametrize(
    ("relative", "needle"),
    [("proc/meminfo", "proc/meminfo"), ("proc/net/dev", "proc/net/dev"), ("proc/loadavg", "proc/loadavg")],
)
def test_a_corrupt_counter_file_is_named(tmp_path: Path, relative: str, needle: str) -> None:
    import shutil

    from hypermesh.errors import BackendError

    root = tmp_path / "root"
    shutil.copytree(TREES / "this-machine", root, symlinks=True)
    # Corrupt a line the reader does parse: MemTotal (the first), the last interface, the only loadavg line.
    text = (root / relative).read_text().splitlines()
    at = 0 if relative == "proc/meminfo" else -1
    text[at] = text[at].split()[0] + " abc def ghi jkl mno pqr stu vwx yza bcd efg hij klm nop qrs tuv wxy"
    (root / relative).write_text("\n".join(text) + "\n")
    reader = LinuxBackend(root=str(root)).counter_reader()
    try:
        with pytest.raises(BackendError, match=needle):
            reader.read()
    finally:
        reader.close()


def test_a_corrupt_profile_file_names_the_part(tmp_path: Path) -> None:
    import shutil

    from hypermesh.errors import BackendError

    root = tmp_path / "root"
    shutil.copytree(TREES / "this-machine", root, symlinks=True)
    meminfo = (root / "proc/meminfo").read_text().replace("MemTotal:", "MemTotal: abc", 1)
    (root / "proc/meminfo").write_text(meminfo)
    with pytest.raises(BackendError, match="memory part of the profile"):
        LinuxBackend(root=str(root)).profile()


def _meminfo_kib(text: str) -> dict[str, int]:
    return {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines() if line.strip()}


@pytest.mark.parametrize("tree", sorted(p.parent.parent.name for p in TREES.glob("*/proc/meminfo")))
@pytest.mark.parametrize("kernel", ["current", "before-3.14"])
def test_meminfo_sample_fields_by_name(tree: str, kernel: str) -> None:
    """The sample's memory figures against the file read line by line, also on kernels without MemAvailable."""
    text = (TREES / tree / "proc/meminfo").read_text()
    if kernel == "before-3.14":
        text = "".join(line for line in text.splitlines(keepends=True) if not line.startswith("MemAvailable:"))
    kib = _meminfo_kib(text)
    available = kib.get("MemAvailable", kib["MemFree"] + kib["Buffers"] + kib["Cached"])
    total, avail, cached, used, swap_used = procfs.parse_meminfo_sample(text.encode())
    assert total == kib["MemTotal"] * 1024
    assert avail == available * 1024
    assert cached == (kib["Cached"] + kib["SReclaimable"]) * 1024  # SwapCached must not be taken for Cached
    assert used == total - avail
    assert swap_used == (kib["SwapTotal"] - kib["SwapFree"]) * 1024


@pytest.mark.parametrize(
    ("field", "mountpoint"),
    [
        ("/mnt/caf\u00e9\\040disk", "/mnt/caf\u00e9 disk"),  # UTF-8 stays as it is; only \ooo is an escape
        ("/mnt/\u00fcber", "/mnt/\u00fcber"),
        ("/mnt/a\\134b\\011c\\012d", "/mnt/a\\b\tc\nd"),
        ("/mnt/x\\134134", "/mnt/x\\134"),  # an escaped backslash followed by digits
    ],
)
def test_mountinfo_paths_are_unescaped_as_the_kernel_escapes_them(field: str, mountpoint: str) -> None:
    line = f"36 35 98:0 / {field} rw,noatime master:1 - ext4 /dev/vdb rw\n"
    [m] = parse_mountinfo(line)
    assert (m.major, m.minor, m.mountpoint, m.fstype, m.source) == (98, 0, mountpoint, "ext4", "/dev/vdb")


def test_btrfs_mounts_with_anonymous_device_numbers_belong_to_their_disk() -> None:
    """btrfs gives every mount an anonymous 0:N in mountinfo; the source names the partition (nvme-hdd tree)."""
    from hypermesh.platform.linux import block

    sys_root = str(TREES / "nvme-hdd" / "sys")
    mountinfo = (
        "29 1 0:27 /@ / rw,relatime shared:1 - btrfs /dev/sda1 rw,space_cache=v2,subvol=/@\n"
        "30 29 0:27 /@home /home rw,relatime shared:2 - btrfs /dev/sda1 rw,space_cache=v2,subvol=/@home\n"
        "31 29 0:28 / /tmp rw - tmpfs tmpfs rw\n"
        "32 29 0:29 / /mnt/gone rw - btrfs /dev/sdz9 rw\n"  # a device this tree does not have: left out
    )
    mounts = {
        d.name: [(m.mountpoint, m.fstype) for m in d.mounts] for d in block.storage_devices(sys_root, mountinfo, None)
    }
    assert mounts["sda"] == [("/", "btrfs"), ("/home", "btrfs")]
    assert b"sda" in block.sample_disk_names(sys_root, mountinfo)


@pytest.mark.parametrize("ticks", [0, 1, 7, 91256, 3_000_000_017, 2**63 - 1])
def test_cpu_seconds_are_the_ticks_in_decimal(ticks: int) -> None:
    """/metrics prints these floats: 91256 ticks must read 912.56, as node_exporter prints, not 912.5600000000001."""
    from decimal import Decimal

    _, seconds = procfs.parse_stat_cpu_line(f"cpu3 {ticks} 0 0 0 0 0 0 0".encode()) or (None, ())
    assert seconds[0] == float(Decimal(ticks) / procfs.USER_HZ)
    assert repr(seconds[0]) == repr(float(str(Decimal(ticks) / procfs.USER_HZ)))
