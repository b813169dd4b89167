"""The portable backend's name rules: disk names per OS, disk and interface kinds, netmask prefixes.

Expected values are the naming schemes of each OS as their tools show them (lsblk, diskutil, geom,
ipconfig), written out by hand.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

from hypermesh.platform.portable import disk_kind, nic_kind, parent_disk, prefix_length


@pytest.mark.parametrize(
    ("device", "disk"),
    [
        # Linux
        ("sda", "sda"),
        ("sda1", "sda"),
        ("/dev/sdb12", "sdb"),
        ("sdaa3", "sdaa"),
        ("vda", "vda"),
        ("vdb1", "vdb"),
        ("xvda1", "xvda"),
        ("hdc2", "hdc"),
        ("nvme0n1", "nvme0n1"),
        ("nvme0n1p1", "nvme0n1"),
        ("/dev/nvme1n2p15", "nvme1n2"),
        ("mmcblk0", "mmcblk0"),
        ("mmcblk0p2", "mmcblk0"),
        ("loop0", "loop0"),
        ("dm-0", "dm-0"),
        ("zram0", "zram0"),
        # macOS
        ("disk0", "disk0"),
        ("disk0s1", "disk0"),
        ("/dev/disk3s1s1", "disk3"),
        # FreeBSD
        ("ada0", "ada0"),
        ("ada0p2", "ada0"),
        ("da1s1a", "da1"),
        ("nvd0p3", "nvd0"),
        ("vtbd0p1", "vtbd0"),
        # NetBSD / OpenBSD
        ("wd0a", "wd0"),
        ("sd1e", "sd1"),
        # Windows (no partitions in psutil's per-disk names)
        ("PhysicalDrive0", "PhysicalDrive0"),
    ],
)
def test_parent_disk(device: str, disk: str) -> None:
    assert parent_disk(device) == disk


@pytest.mark.parametrize(
    ("name", "kind", "rotational"),
    [
        ("nvme0n1", "nvme", False),
        ("nvd0", "nvme", False),
        ("vda", "virtual", None),
        ("xvda", "virtual", None),
        ("loop3", "virtual", None),
        ("dm-1", "virtual", None),
        ("zram0", "virtual", None),
        ("sda", "ssd", None),
        ("disk0", "ssd", None),
        ("PhysicalDrive0", "ssd", None),
    ],
)
def test_disk_kind(name: str, kind: str, rotational: bool | None) -> None:
    assert disk_kind(name) == (kind, rotational)


@pytest.mark.parametrize(
    ("name", "flags", "kind"),
    [
        ("lo", "", "loopback"),
        ("lo0", "", "loopback"),
        ("Loopback Pseudo-Interface 1", "", "loopback"),
        ("weird0", "up,loopback,running", "loopback"),
        ("eth0", "up,broadcast,running,multicast", "physical"),
        ("enp3s0", "", "physical"),
        ("wlan0", "", "physical"),
        ("en0", "", "physical"),
        ("Ethernet 2", "", "physical"),
        ("Wi-Fi", "", "physical"),
        ("veth1a2b3c", "", "virtual"),
        ("docker0", "", "virtual"),
        ("br-5f2e", "", "virtual"),
        ("virbr0", "", "virtual"),
        ("tun0", "", "virtual"),
        ("wg0", "", "virtual"),
        ("ifb0", "", "virtual"),
        ("eth0.100", "", "virtual"),
        ("utun3", "", "virtual"),
        ("awdl0", "", "virtual"),
        ("bridge0", "", "virtual"),
        ("vEthernet (Default Switch)", "", "virtual"),
    ],
)
def test_nic_kind(name: str, flags: str, kind: str) -> None:
    assert nic_kind(name, flags) == kind


@pytest.mark.parametrize(
    ("netmask", "family", "bits"),
    [
        ("255.0.0.0", socket.AF_INET, 8),
        ("255.255.255.0", socket.AF_INET, 24),
        ("255.255.255.255", socket.AF_INET, 32),
        ("255.255.240.0", socket.AF_INET, 20),
        ("0.0.0.0", socket.AF_INET, 0),
        ("ffff:ffff:ffff:ffff::", socket.AF_INET6, 64),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", socket.AF_INET6, 128),
        ("ffff:ff00::", socket.AF_INET6, 24),
    ],
)
def test_prefix_length(netmask: str, family: int, bits: int) -> None:
    assert prefix_length(netmask, family) == bits
    if family == socket.AF_INET:  # the standard library agrees where it accepts dotted netmasks
        assert ipaddress.ip_network(f"0.0.0.0/{netmask}").prefixlen == bits


def test_prefix_length_of_nothing_is_none() -> None:
    assert prefix_length(None, socket.AF_INET) is None
    assert prefix_length("", socket.AF_INET6) is None
    assert prefix_length("not-a-mask", socket.AF_INET) is None
