"""What the marker check (tests/suite_rules.py) reads in a command line: pure, on hand-written argv."""

from __future__ import annotations

import pytest

from tests.suite_rules import classify


@pytest.mark.parametrize(
    ("argv", "markers"),
    [
        (["ip", "netns", "add", "hm-x"], {"netns"}),
        (["/usr/sbin/ip", "netns", "add", "hm-x"], {"netns"}),
        ([b"ip", b"-n", b"hm-x", b"link", b"add", b"a", b"type", b"veth", b"peer", b"name", b"b"], {"netns"}),
        (["unshare", "--net", "--mount", "true"], {"netns"}),
        (["sh", "-c", "ip netns add hm-y && ip netns del hm-y"], {"netns"}),
        (["/venv/bin/python", "-m", "hypermesh", "ebpf", "run", "syscalls"], {"ebpf"}),
        (["hypermesh", "ebpf", "probe", "--json"], {"ebpf"}),
        (["bpftool", "prog", "load", "x.o", "/sys/fs/bpf/x"], {"ebpf"}),
        (["bpftool", "-j", "feature", "probe", "kernel"], {"ebpf"}),
        (["bpftrace", "-e", "BEGIN { exit(); }"], {"ebpf"}),
        (["vng", "--disable-kvm", "--", "true"], {"vm"}),
        ("ip netns add hm-z", {"netns"}),
        # Reading or deleting is not creating; status and detach load nothing.
        (["ip", "netns", "list"], set()),
        (["ip", "netns", "del", "hm-x"], set()),
        (["hypermesh", "ebpf", "status"], set()),
        (["bpftool", "prog", "list"], set()),
        (["unshare", "--mount", "--propagation", "private", "true"], set()),
        (["hypermesh", "profile", "--json"], set()),
    ],
)
def test_classify(argv: object, markers: set[str]) -> None:
    assert set(classify(argv)) == markers
