"""The built-in tracing programs on a machine without tracefs: raw tracepoints (BPF_RAW_TRACEPOINT_OPEN)
need none. Each CLI run happens in a private mount namespace (``unshare --mount``) where tracefs is
unmounted, so the host's mounts (scripts/kernel-mounts.sh mounts tracefs) are untouched and invisible.
The same namespace refuses ``--attach tracepoint`` with "tracefs is not mounted": the cross-check that
tracefs really is gone there, as libbpf sees it.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.integration.ebpf_support import HYPERMESH, REPO, completed_requests, require_ebpf
from tests.integration.test_ebpf_tracing import SYSCALL_MARGIN, _child, _finish, _go

pytestmark = [pytest.mark.ebpf, pytest.mark.root]

# Lazy unmounts, repeated while something is stacked there; debugfs too, since its tracing/ directory
# mounts tracefs again on first access. Then prove it is gone before running the CLI.
HIDE_TRACEFS = (
    "for m in /sys/kernel/debug/tracing /sys/kernel/tracing /sys/kernel/debug; do "
    "while umount -l $m 2>/dev/null; do :; done; done; "
    "if [ -e /sys/kernel/tracing/events ] || [ -e /sys/kernel/debug/tracing/events ]; then "
    "echo 'tracefs still visible' >&2; exit 97; fi; "
)


def _without_tracefs(*args: str) -> list[str]:
    unshare = require_binary("unshare")
    script = HIDE_TRACEFS + "exec " + " ".join(shlex.quote(a) for a in [*HYPERMESH, *args])
    return [unshare, "--mount", "--propagation", "private", "sh", "-c", script]


def _run_without_tracefs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_without_tracefs(*args), capture_output=True, text=True, timeout=60, cwd=REPO, check=False)


def test_syscalls_exact_count_without_tracefs() -> None:
    require_ebpf()
    host_had = os.path.ismount("/sys/kernel/tracing")
    refused = _run_without_tracefs("ebpf", "run", "syscalls", "--attach", "tracepoint", "--duration", "0.1")
    assert refused.returncode == 4 and "tracefs is not mounted" in refused.stderr, refused.stderr
    n = 5000
    child = _child()
    proc = subprocess.Popen(
        _without_tracefs("ebpf", "run", "syscalls", "--pid", str(child.pid), "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "syscalls attached to raw_tracepoint sys_enter" in line or "kprobe x64_sys_call" in line, line
        _go(child, n)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        _finish(child)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert n <= data["syscalls"]["getppid"] <= n + SYSCALL_MARGIN
    assert [p["pid"] for p in data["processes"]] == [child.pid]
    assert os.path.ismount("/sys/kernel/tracing") == host_had  # the host's mounts as they were


def test_execsnoop_and_biolatency_without_tracefs(block_device_dir: Path) -> None:
    require_ebpf()
    proc = subprocess.Popen(
        _without_tracefs("ebpf", "run", "execsnoop", "--json", "--duration", "3"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.stderr is not None
    assert "execsnoop attached to raw_tracepoint sched_process_exec" in proc.stderr.readline()
    pids = []
    for _ in range(5):
        with subprocess.Popen(["/bin/true"]) as p:
            pids.append(p.pid)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    *events, summary = map(json.loads, out.splitlines())
    assert sorted(e["pid"] for e in events if e["ppid"] == os.getpid() and e["filename"] == "/bin/true") == pids
    assert summary == {"lost": 0}

    st = os.stat(block_device_dir)
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    before = completed_requests(major, minor)
    proc = subprocess.Popen(
        _without_tracefs("ebpf", "run", "biolatency", "--json", "--duration", "3"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "raw_tracepoint block_rq_complete, raw_tracepoint block_rq_issue" in line, line
    path = block_device_dir / "data"
    with open(path, "wb") as f:
        for _ in range(4):
            f.write(os.urandom(128 * 1024))
            f.flush()
            os.fsync(f.fileno())
    out, err = proc.communicate(timeout=20)
    after = completed_requests(major, minor)
    assert proc.returncode == 0, err
    device = next(d for d in json.loads(out)["devices"] if d["device"] == f"{major}:{minor}")
    assert 4 <= device["total"] <= after - before  # at least one per fsync, never more than the kernel counted
