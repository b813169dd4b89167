"""Node stats parsers on the recorded agent root and on hand-written lines of older kernels' formats."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hypermesh.model_node import CpuFrequencyHz
from hypermesh.platform.linux import LinuxBackend, procfs, procnet
from hypermesh.platform.linux.filesystems import real_filesystems
from hypermesh.platform.linux.mounts import parse_mountinfo

ROOT = Path(__file__).parent.parent / "fixtures" / "agent" / "root"
PROC = ROOT / "proc"


def test_snmp_pairs_on_the_recorded_files():
    text = (PROC / "net" / "snmp").read_text().splitlines()
    parsed = procnet.parse_snmp((PROC / "net" / "snmp").read_bytes())
    for header, values in zip(text[0::2], text[1::2], strict=True):
        protocol = header.split(":")[0]
        expected = dict(zip(header.split()[1:], map(int, values.split()[1:]), strict=True))
        assert parsed[protocol] == expected
    assert parsed["Tcp"]["MaxConn"] == -1  # signed
    netstat = procnet.parse_snmp((PROC / "net" / "netstat").read_bytes())
    assert "ListenOverflows" in netstat["TcpExt"] and "InOctets" in netstat["IpExt"]


def test_snmp6_splits_protocol_and_field():
    data = b"Ip6InReceives  \t55\nIcmp6OutMsgs 73\nUdp6InDatagrams 4\nUdpLite6InErrors 1\nIcmp6InType1 2\n"
    assert procnet.parse_snmp6(data) == {
        "Ip6": {"InReceives": 55},
        "Icmp6": {"OutMsgs": 73, "InType1": 2},
        "Udp6": {"InDatagrams": 4},
        "UdpLite6": {"InErrors": 1},
    }
    recorded = procnet.parse_snmp6((PROC / "net" / "snmp6").read_bytes())
    lines = (PROC / "net" / "snmp6").read_text().split("\n")
    assert sum(len(v) for v in recorded.values()) == len([line for line in lines if line.strip()])


def test_diskstats_columns_by_kernel_generation():
    old = b" 253 0 vda 10 1 80 7 20 2 160 9 0 30 40\n"  # 4.15: 11 fields after the name
    discard = old.rstrip() + b" 3 1 64 5\n"  # 4.18
    flush = discard.rstrip() + b" 6 12\n"  # 5.5
    row = procfs.parse_diskstats(old, procfs.diskstats_all)["vda"]
    assert row["read_bytes"] == 80 * 512 and row["write_time_seconds"] == 0.009
    assert row["io_time_weighted_seconds"] == 0.04 and "discards_completed" not in row
    row = procfs.parse_diskstats(discard, procfs.diskstats_all)["vda"]
    assert row["discarded_bytes"] == 64 * 512 and row["discard_time_seconds"] == 0.005 and "flush_requests" not in row
    row = procfs.parse_diskstats(flush, procfs.diskstats_all)["vda"]
    assert row["flush_requests"] == 6 and row["flush_time_seconds"] == 0.012
    assert procfs.parse_diskstats(flush, procfs.diskstats_all, frozenset({b"sda"})) == {}


def test_softnet_cpu_column_and_row_order():
    new = b"00000010 00000001 00000002 0 0 0 0 0 0 0 0 0 00000003 0 0\n"  # 5.10+: CPU id in column 13
    assert procnet.parse_softnet(new) == {3: [16, 1, 2]}
    old = b"00000010 00000001 00000002 0 0 0 0 0 0 0 0\n0000000a 0 0 0 0 0 0 0 0 0 0\n"
    assert procnet.parse_softnet(old) == {0: [16, 1, 2], 1: [10, 0, 0]}


def test_sockstat_memory_in_bytes():
    data = b"sockets: used 20\nTCP: inuse 6 orphan 1 tw 2 alloc 7 mem 3\nUDP: inuse 1 mem 2\nFRAG: inuse 0 memory 0\n"
    parsed = procnet.parse_sockstat(data)
    assert parsed["sockets"] == {"used": 20}
    assert parsed["TCP"] == {"inuse": 6, "orphan": 1, "tw": 2, "alloc": 7, "mem_bytes": 3 * os.sysconf("SC_PAGE_SIZE")}
    assert parsed["FRAG"] == {"inuse": 0, "memory": 0}


def test_stat_kernel_lines_and_guest_time():
    data = (
        b"cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1 2 3 4 5 6 7 8 300 100\nintr 12345 1 2 3\nctxt 99\nbtime 1700000000\n"
        b"processes 4242\nprocs_running 3\nprocs_blocked 1\nsoftirq 5 1 1\n"
    )
    kernel, guest = procfs.parse_stat_kernel(data)
    assert kernel == {
        "interrupts": 12345.0,
        "context_switches": 99.0,
        "boot_time_seconds": 1700000000.0,
        "forks": 4242.0,
        "procs_running": 3.0,
        "procs_blocked": 1.0,
    }
    hz = os.sysconf("SC_CLK_TCK")
    assert guest == {0: [300 / hz, 100 / hz]}


def _real_filesystems(text: str) -> list[tuple[str, str, str, bool]]:
    return [(m.source, m.mountpoint, m.fstype, m.readonly) for m in real_filesystems(parse_mountinfo(text))]


def test_mounts_keep_real_filesystems_once():
    text = (
        "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        "30 27 0:30 / /run rw - tmpfs tmpfs rw\n"
        "31 27 254:1 / /srv/my\\040data ro,relatime shared:5 - xfs /dev/vdb1 ro\n"
        "32 27 0:32 / /sys/fs/bpf rw - bpf bpf rw\n"
        "33 27 254:2 / /home rw - ext4 /dev/vdc rw\n"
        "34 27 254:3 / /home rw - ext4 /dev/vdd rw\n"  # mounted over: the visible one wins
        "35 27 0:40 / /var/lib/docker/overlay2/x/merged rw - ext4 /dev/vda rw\n"
    )
    assert _real_filesystems(text) == [
        ("/dev/vda", "/", "ext4", False),
        ("/dev/vdb1", "/srv/my data", "xfs", True),
        ("/dev/vdd", "/home", "ext4", False),
    ]


def test_reader_on_the_recorded_root():
    stats = LinuxBackend(root=str(ROOT)).node_stats()
    meminfo = dict(line.split(":", 1) for line in (PROC / "meminfo").read_text().splitlines())
    assert stats.meminfo["MemTotal"] == int(meminfo["MemTotal"].split()[0]) * 1024
    assert stats.meminfo["HugePages_Total"] == int(meminfo["HugePages_Total"])
    vmstat = dict(line.split() for line in (PROC / "vmstat").read_text().splitlines())
    assert stats.vmstat == {k: int(v) for k, v in vmstat.items()}
    frsize, blocks, bfree, bavail, files, ffree = json.loads((ROOT / "statvfs.json").read_text())["/"]
    (fs,) = stats.filesystems
    assert (fs.mountpoint, fs.fstype, fs.size_bytes, fs.free_bytes, fs.available_bytes) == (
        "/",
        "ext4",
        blocks * frsize,
        bfree * frsize,
        bavail * frsize,
    )
    assert (fs.files, fs.files_free) == (files, ffree)
    # The Sampler's devices: idle loops and the unconfigured zram0 (size 0) left out.
    assert set(stats.diskstats) == {"vda"}
    assert stats.pressure.io is not None and stats.pressure.io.full_total_seconds > 0
    assert stats.cpu_frequency_hz == ()  # no cpufreq driver on the recorded VM
    eth0 = next(i for i in stats.interfaces if i.name == "eth0")
    assert (eth0.mtu, eth0.operstate, eth0.carrier) == (1400, "up", 1)
    ifb0 = next(i for i in stats.interfaces if i.name == "ifb0")
    assert ifb0.carrier is None  # the kernel refuses carrier while down


def test_reader_reads_cpufreq_in_hertz(tmp_path):
    cpu = tmp_path / "sys" / "devices" / "system" / "cpu"
    (cpu / "cpufreq" / "policy0").mkdir(parents=True)
    for n, khz in ((0, 2_400_000), (1, 800_000)):
        d = cpu / f"cpu{n}" / "cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_cur_freq").write_text(f"{khz}\n")
        (d / "cpuinfo_min_freq").write_text("400000\n")
        (d / "cpuinfo_max_freq").write_text("4200000\n")
    (tmp_path / "proc").mkdir()
    stats = LinuxBackend(root=str(tmp_path)).node_stats()
    assert stats.cpu_frequency_hz == (CpuFrequencyHz(0, 2.4e9, 4e8, 4.2e9), CpuFrequencyHz(1, 8e8, 4e8, 4.2e9))
    assert stats.meminfo == {} and stats.filesystems == ()  # absent files: empty parts, no error


def test_reader_works_on_every_recorded_linux_tree():
    """Trees from other kernels (4.15 without PSI, 5.15, 6.1, containers) lack many files: parts stay empty."""
    trees = sorted(p for p in (Path(__file__).parent.parent / "fixtures" / "linux").iterdir() if (p / "proc").is_dir())
    assert len(trees) >= 5
    for tree in trees:
        stats = LinuxBackend(root=str(tree)).node_stats()
        total = next(
            line for line in (tree / "proc" / "meminfo").read_text().splitlines() if line.startswith("MemTotal")
        )
        assert stats.meminfo["MemTotal"] == int(total.split()[1]) * 1024, tree.name
        assert (stats.pressure.cpu is not None) == (tree / "proc" / "pressure" / "cpu").exists(), tree.name


def test_interface_error_breakdown_reads_only_parts_of_nonzero_totals(tmp_path):
    net = tmp_path / "proc" / "net"
    net.mkdir(parents=True)
    # eth0: frame errors 7 (all CRC), no drops, no carrier errors; columns as in /proc/net/dev.
    (net / "dev").write_text(
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls "
        "carrier compressed\n"
        "  eth0: 1000 10 7 0 0 7 0 0 2000 20 0 0 0 0 0 0\n"
    )
    stats_dir = tmp_path / "sys" / "class" / "net" / "eth0" / "statistics"
    stats_dir.mkdir(parents=True)
    for name, value in (("rx_crc_errors", 7), ("rx_length_errors", 0), ("rx_over_errors", 0), ("rx_nohandler", 3)):
        (stats_dir / name).write_text(f"{value}\n")
    (eth0,) = LinuxBackend(root=str(tmp_path)).node_stats().interfaces
    assert eth0.error_counters == {
        "rx_crc_errors": 7,
        "rx_length_errors": 0,
        "rx_over_errors": 0,
        "rx_missed_errors": 0,  # drop column 0: no read needed (and no file here)
        "rx_nohandler": 3,
        "tx_aborted_errors": 0,  # carrier column 0
        "tx_heartbeat_errors": 0,
        "tx_window_errors": 0,
    }


def test_mounts_read_only_by_their_own_flag_or_their_superblocks():
    text = (
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        "31 27 254:1 / /srv/a ro,relatime - xfs /dev/vdb1 rw\n"  # the mount is read-only
        "33 27 254:2 / /srv/b rw,relatime - ext4 /dev/vdc ro,errors=remount-ro\n"  # the kernel made it read-only
    )
    assert [m[3] for m in _real_filesystems(text)] == [False, True, True]
