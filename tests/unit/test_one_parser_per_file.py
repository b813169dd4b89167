"""The Sampler, the profile and the agent's node stats read each kernel file through one parser.

They used to keep near-copies that disagreed: the node stats unescaped only \\040, \\011 and \\134 in mount points
(a newline stayed "\\012", and no mount point with one had a size), the profile left sources escaped ("my\\040share"),
and the Sampler decoded /proc/diskstats names strictly (a name that is not UTF-8 stopped every sample) where the
node stats used surrogateescape. Each case is
built here on a hand-made tree, and the expected values come from proc(5)'s escaping written out below and from
os.listdir, not from the parsers under test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hypermesh.platform.linux import LinuxBackend, block, procfs, procnet

TREES = Path(__file__).resolve().parent.parent / "fixtures" / "linux"
MEMINFO = (TREES / "this-machine" / "proc" / "meminfo").read_bytes()

# Paths with every character mountinfo escapes, one that is only escaped-looking text, and plain UTF-8.
MOUNTPOINTS = ["/", "/srv/my data", "/srv/a\nb", "/srv/tab\there", "/srv/back\\040slash", "/srv/caf\u00e9"]


def mangle(field: str) -> str:
    """proc(5), /proc/pid/mountinfo: space, tab, newline and backslash are written as octal escapes."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in field)


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def test_mount_points_are_the_same_for_the_profile_and_the_node_stats(tmp_path: Path) -> None:
    lines = [
        f"{30 + i} 1 254:16 / {mangle(mountpoint)} rw,relatime shared:{i} - ext4 {mangle(source)} rw\n"
        for i, (mountpoint, source) in enumerate(
            (m, "/dev/vdb" if m != "/srv/my data" else "my share") for m in MOUNTPOINTS
        )
    ]
    mountinfo = "".join(lines)
    assert "\\012" in mountinfo and "\\134040" in mountinfo and "my\\040share" in mountinfo
    for pid in ("1", "self"):
        _write(tmp_path / "proc" / pid / "mountinfo", mountinfo)
    _write(tmp_path / "sys" / "block" / "vdb" / "dev", "254:16\n")
    _write(tmp_path / "sys" / "block" / "vdb" / "size", "2048\n")
    # A recorded tree's statvfs stands in for the real call, keyed by the true mount point: a mount point the
    # reader spelled otherwise finds no entry and is left out.
    _write(tmp_path / "statvfs.json", json.dumps({m: [4096, 100, 50, 40, 10, 5] for m in MOUNTPOINTS}))

    filesystems = LinuxBackend(root=str(tmp_path)).node_stats().filesystems
    assert sorted(fs.mountpoint for fs in filesystems) == sorted(MOUNTPOINTS)
    assert {fs.mountpoint: fs.device for fs in filesystems}["/srv/my data"] == "my share"  # sources unescaped too
    (vdb,) = block.storage_devices(str(tmp_path / "sys"), mountinfo, None)
    assert [m.mountpoint for m in vdb.mounts] == sorted(MOUNTPOINTS)


def test_a_disk_name_that_is_not_utf8_is_the_same_name_everywhere(tmp_path: Path) -> None:
    """Disk names are bytes to the kernel; every reader decodes them as os.listdir decodes /sys/block."""
    name = b"sd\xe9"
    sys_block = tmp_path / "sys" / "block"
    sys_block.mkdir(parents=True)
    os.mkdir(bytes(sys_block) + b"/" + name)
    _write(Path(os.fsdecode(bytes(sys_block) + b"/" + name + b"/dev")), "8:0\n")
    _write(tmp_path / "proc" / "diskstats", b"   8       0 " + name + b" 10 1 80 7 20 2 160 9 0 30 40 0 0 0 0 0 0\n")
    _write(tmp_path / "proc" / "stat", "cpu  1 0 1 8 0 0 0 0 0 0\ncpu0 1 0 1 8 0 0 0 0 0 0\nintr 0\nbtime 1\n")
    _write(tmp_path / "proc" / "meminfo", MEMINFO)
    _write(tmp_path / "proc" / "loadavg", "0.00 0.01 0.05 1/100 123\n")
    _write(tmp_path / "proc" / "self" / "mountinfo", "")
    listed = os.listdir(sys_block)
    assert listed == ["sd\udce9"]

    backend = LinuxBackend(root=str(tmp_path))
    reader = backend.counter_reader()
    try:
        disks = reader.read().disks
    finally:
        reader.close()
    assert list(disks) == listed
    assert disks[listed[0]] == (10, 80 * 512, 7, 20, 160 * 512, 9, 30)
    stats = backend.node_stats()
    assert list(stats.diskstats) == listed
    assert stats.diskstats[listed[0]].written_bytes == 160 * 512


def test_the_sampler_columns_are_the_node_stats_columns_on_every_recorded_tree() -> None:
    """One parse, two projections: the Sampler's tuple holds the same numbers as the agent's named columns."""
    trees = sorted(p for p in TREES.iterdir() if (p / "proc" / "diskstats").exists())
    assert trees
    for tree in trees:
        data = (tree / "proc" / "diskstats").read_bytes()
        counters = procfs.parse_diskstats(data, procfs.diskstats_counters)
        full = procfs.parse_diskstats(data, procfs.diskstats_all)
        assert counters.keys() == full.keys() and counters, tree.name
        for device, row in full.items():
            expected = (
                row["reads_completed"],
                row["read_bytes"],
                round(row["read_time_seconds"] * 1000),
                row["writes_completed"],
                row["written_bytes"],
                round(row["write_time_seconds"] * 1000),
                round(row["io_time_seconds"] * 1000),
            )
            assert counters[device] == expected, (tree.name, device)
        net_dev = tree / "proc" / "net" / "dev"
        if not net_dev.exists():
            continue
        data = net_dev.read_bytes()
        sample = procnet.parse_net_dev(data, procnet.net_dev_counters)
        named = procnet.parse_net_dev(data, procnet.net_dev_all)
        assert sample.keys() == named.keys() and sample, tree.name
        picked = ("bytes", "packets", "errors", "drops")
        for interface, row in named.items():
            want = tuple(row[f"{way}_{c}"] for way in ("receive", "transmit") for c in picked)
            assert sample[interface] == want, (tree.name, interface)
