"""``hypermesh.ebpf.probe()`` against independent sources: uname, /proc/self/status, sysfs, bpftool."""

from __future__ import annotations

import json
import os

import pytest

import hypermesh.ebpf
from tests.conftest import require
from tests.integration.ebpf_support import bpftool_json, require_ebpf, run_cli

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
    assert names == ["xdp_generic", "xdp_native", "tracepoint", "raw_tp", "fentry", "kprobe", "ringbuf", "lsm"]


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


KPROBE_PMU_DIR = "/sys/bus/event_source/devices/kprobe"


def _config_by_zcat(option: str) -> tuple[str, str] | None:
    """CONFIG_<option> read with the system's own tools (zcat, grep), the first readable config wins."""
    import platform
    import subprocess

    for path, cat in (("/proc/config.gz", "zcat"), (f"/boot/config-{platform.release()}", "cat")):
        if not os.path.exists(path):
            continue
        text = subprocess.run([cat, path], capture_output=True, text=True, check=True, timeout=30).stdout
        for line in text.splitlines():
            if line.startswith(f"CONFIG_{option}="):
                return line.split("=", 1)[1], path
        return "n", path
    return None


def test_kernel_config_is_read_from_proc_config_gz_or_boot() -> None:
    """It read /boot/config-$(uname -r) only; this machine has /proc/config.gz and no such file, and
    the kprobe reason claimed "CONFIG_KPROBES is off" without having read any configuration."""
    require_ebpf()
    from hypermesh.ebpf.probe import kernel_config

    expected = _config_by_zcat("KPROBES")
    require(expected, "a readable kernel configuration (/proc/config.gz or /boot/config-RELEASE)")
    assert kernel_config("KPROBES") == expected
    assert kernel_config("BPF_SYSCALL") == ("y", expected[1])  # type: ignore[index]
    kprobe = hypermesh.ebpf.probe().feature("kprobe")
    if not os.path.exists(KPROBE_PMU_DIR):
        assert expected[0] == "n"  # type: ignore[index]
        assert kprobe.reason.startswith(f"CONFIG_KPROBES is off ({expected[1]}): ")  # type: ignore[index]


def test_without_a_readable_kernel_config_the_kprobe_reason_says_what_was_observed() -> None:
    """In a private mount namespace whose /boot is empty and whose /proc/config.gz reads as empty."""
    require_ebpf()
    import subprocess

    from tests.conftest import require_binary
    from tests.integration.ebpf_support import HYPERMESH, REPO

    unshare = require_binary("unshare")
    hide = "mount -t tmpfs none /boot && { [ ! -e /proc/config.gz ] || mount --bind /dev/null /proc/config.gz; }"
    result = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", f"{hide} && exec {' '.join(HYPERMESH)} ebpf probe --json"],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    kprobe = next(f for f in json.loads(result.stdout)["features"] if f["name"] == "kprobe")
    if os.path.exists(KPROBE_PMU_DIR):
        assert kprobe["supported"], kprobe  # the PMU is the fact; the configuration is not needed
        return
    assert not kprobe["supported"]
    assert "CONFIG_KPROBES is off" not in kprobe["reason"]
    assert kprobe["reason"].startswith(f"the kernel has no kprobe perf PMU ({KPROBE_PMU_DIR} is absent)")
    assert "not readable here" in kprobe["reason"]


def test_kprobe_reason_needs_no_privileges() -> None:
    """The kprobe PMU's absence is visible to anyone: without capabilities, --attach kprobe said
    "cannot probe without CAP_BPF" (it is the kernel that lacks kprobes, which no capability changes)."""
    require_ebpf()
    import subprocess

    from tests.conftest import require_binary
    from tests.integration.ebpf_support import REPO
    from tests.world_readable import hypermesh_for_others

    setpriv = require_binary("setpriv")
    for drop in (["--reuid=65534", "--regid=65534", "--clear-groups"], ["--bounding-set=-all"]):
        result = subprocess.run(
            [setpriv, *drop, "--inh-caps=-all", "--", *hypermesh_for_others(), "ebpf", "run", "syscalls", "--attach", "kprobe"],
            capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
        )  # fmt: skip
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        if os.path.exists(KPROBE_PMU_DIR):
            assert result.returncode == 3 and "CAP_BPF" in lines[0], result.stderr
        else:
            assert result.returncode == 4, result.stderr
            assert "kprobe perf PMU" in lines[0] and "CONFIG_KPROBES" in lines[0] and "CAP_" not in lines[0]


def test_auto_hook_explains_the_real_reason() -> None:
    """choose_hook, given the facts observed: auto said "no kprobes in this kernel" whenever it took
    the tracepoint, also on a kernel with kprobes but without x64_sys_call."""
    from hypermesh.ebpf import Feature
    from hypermesh.ebpf.programs.syscalls import choose_hook
    from hypermesh.errors import Unsupported

    ok = Feature("kprobe", True, "")
    no_pmu = Feature("kprobe", False, "CONFIG_KPROBES is off (/proc/config.gz): the kernel has no kprobe perf PMU")

    def choose(
        attach: str, kprobe: Feature, has_kprobes: bool = True, machine: str = "x86_64", symbol: bool = True
    ) -> tuple[str, str]:
        return choose_hook(attach, kprobe, kernel_has_kprobes=has_kprobes, machine=machine, has_symbol=symbol)

    assert choose("auto", ok) == ("kprobe", "the kernel has kprobes")
    hook, why = choose("auto", ok, symbol=False)
    assert hook == "raw_tracepoint" and "no x64_sys_call" in why and "no kprobes" not in why
    hook, why = choose("auto", ok, machine="aarch64")
    assert hook == "raw_tracepoint" and "x86-64 only" in why and "aarch64" in why
    assert choose("auto", no_pmu, has_kprobes=False) == ("raw_tracepoint", "no kprobes in this kernel")
    # tracefs only as the fallback: a kernel without raw tracepoints (< 4.17)
    no_raw = Feature("raw_tp", False, "the kernel rejects raw tracepoint programs (Linux < 4.17)")
    hook, why = choose_hook(
        "auto", no_pmu, kernel_has_kprobes=False, machine="x86_64", has_symbol=False, raw_tracepoint=no_raw
    )
    assert hook == "tracepoint" and "no kprobes" in why and "Linux < 4.17" in why
    with pytest.raises(Unsupported, match="no x64_sys_call"):
        choose("kprobe", ok, symbol=False)
    with pytest.raises(Unsupported, match="CONFIG_KPROBES is off"):
        choose("kprobe", no_pmu, has_kprobes=False)
