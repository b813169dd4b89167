"""Shared helpers for the eBPF tests (no tests here): kernel-state snapshots and CLI runners.

Leak checks compare what the kernel holds (``bpftool prog/link list``, an independent view), this
process's open fds and the pins under /sys/fs/bpf/hypermesh before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import require, require_binary, require_root

REPO = Path(__file__).resolve().parents[2]
HYPERMESH = [sys.executable, "-m", "hypermesh.cli.main"]
# Names of the programs our objects define (bpftool shows the first 15 characters).
OUR_PROGRAMS = {
    "count_packets", "on_sys_enter", "raw_sys_enter", "on_x64_sys_call", "on_issue", "on_complete", "raw_issue",
    "raw_complete", "on_exec", "raw_exec", "hm_tc_ingress", "hm_tc_egress", "on_sample",
}  # fmt: skip


def require_ebpf() -> None:
    """Root, kernel BTF and bpffs. Not tracefs: the built-ins attach to raw tracepoints without it
    (tests of the tracefs hooks ask ``require_tracefs()``)."""
    require_root()
    require(os.path.exists("/sys/kernel/btf/vmlinux"), "kernel BTF (/sys/kernel/btf/vmlinux)")
    require(os.path.ismount("/sys/fs/bpf"), "bpffs mounted: run scripts/kernel-mounts.sh")


def require_tracefs() -> None:
    require_ebpf()
    require(os.path.exists("/sys/kernel/tracing/events"), "tracefs mounted: run scripts/kernel-mounts.sh")


def bpftool_json(*args: str) -> list[dict[str, object]]:
    tool = require_binary("bpftool")
    out = subprocess.run([tool, "-j", *args], check=True, capture_output=True, text=True, timeout=30).stdout
    return json.loads(out or "[]")  # type: ignore[no-any-return]


def our_kernel_programs() -> set[int]:
    """Ids of loaded programs whose names are ours, as the kernel lists them (bpftool)."""
    return {int(p["id"]) for p in bpftool_json("prog", "list") if str(p.get("name", "")) in OUR_PROGRAMS}  # type: ignore[call-overload]


def our_kernel_links() -> set[int]:
    progs = our_kernel_programs()
    return {int(link["id"]) for link in bpftool_json("link", "list") if link.get("prog_id") in progs}  # type: ignore[call-overload]


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def run_cli(*args: str, timeout: float = 60, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HYPERMESH, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
        **kwargs,  # type: ignore[arg-type]
    )


def completed_requests(major: int, minor: int) -> int:
    """Requests completed on a device (reads + writes + discards + flushes), from /proc/diskstats."""
    with open("/proc/diskstats") as f:
        for line in f:
            fields = line.split()
            if int(fields[0]) == major and int(fields[1]) == minor:
                counted = [3, 7] + ([14] if len(fields) > 14 else []) + ([18] if len(fields) > 18 else [])
                return sum(int(fields[i]) for i in counted)
    raise AssertionError(f"{major}:{minor} not in /proc/diskstats")
