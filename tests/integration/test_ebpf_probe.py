"""``hypermesh.ebpf.probe()`` against independent sources: uname, /proc/self/status, sysfs, bpftool."""

from __future__ import annotations

import json
import os

import pytest

import hypermesh.ebpf
from tests.integration.test_ebpf_support import bpftool_json, require_ebpf, run_cli

pytestmark = [pytest.mark.ebpf, pytest.mark.root]


def test_probe_matches_the_kernel() -> None:
    require_ebpf()
    report = hypermesh.ebpf.probe()
    assert report.kernel_release == os.uname().release
    assert report.btf_present == os.path.exists("/sys/kernel/btf/vmlinux")
    assert report.bpffs_mounted == os.path.ismount("/sys/fs/bpf")
    assert report.tracefs_mounted
    with open("/proc/self/status") as f:
        cap_eff = int(next(line for line in f if line.startswith("CapEff:")).split()[1], 16)
    assert report.capabilities["CAP_BPF"] == bool(cap_eff >> 39 & 1)
    assert report.capabilities["CAP_NET_ADMIN"] == bool(cap_eff >> 12 & 1)
    with open("/proc/sys/kernel/unprivileged_bpf_disabled") as f:
        assert report.unprivileged_bpf_disabled == int(f.read())
    assert hypermesh.ebpf.probe() is report  # cached per process
    names = [f.name for f in report.features]
    assert names == ["xdp_generic", "xdp_native", "tracepoint", "raw_tp", "fentry", "kprobe", "ringbuf"]


def test_probe_program_types_agree_with_bpftool() -> None:
    require_ebpf()
    features = bpftool_json("feature", "probe", "kernel")
    prog_types = features["program_types"]  # type: ignore[call-overload]
    report = hypermesh.ebpf.probe()
    assert report.feature("xdp_generic").supported == prog_types["have_xdp_prog_type"]
    assert report.feature("tracepoint").supported == prog_types["have_tracepoint_prog_type"]
    assert report.feature("raw_tp").supported == prog_types["have_raw_tracepoint_prog_type"]
    assert report.feature("ringbuf").supported == features["map_types"]["have_ringbuf_map_type"]  # type: ignore[call-overload]


def test_kprobe_support_follows_the_kprobe_pmu() -> None:
    require_ebpf()
    kprobe = hypermesh.ebpf.probe().feature("kprobe")
    has_pmu = os.path.exists("/sys/bus/event_source/devices/kprobe")
    assert kprobe.supported == has_pmu
    if not has_pmu:  # this machine's kernel: CONFIG_KPROBES is off
        assert "CONFIG_KPROBES" in kprobe.reason


def test_cli_probe_json() -> None:
    require_ebpf()
    result = run_cli("ebpf", "probe", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data == json.loads(json.dumps(hypermesh.ebpf.probe().to_dict()))
    human = run_cli("ebpf", "probe")
    assert human.returncode == 0
    kprobe_line = next(line for line in human.stdout.splitlines() if line.startswith("kprobe"))
    assert ("unsupported because" in kprobe_line) != os.path.exists("/sys/bus/event_source/devices/kprobe")
