"""--cgroup and --pid filters of syscalls and execsnoop, applied in the kernel: the same workload
inside the filter is counted exactly, outside it not at all.

The cgroup is made by the test in the cgroup v2 hierarchy (bpf_current_task_under_cgroup looks at
that one only). On a host with only v1 controllers mounted, cgroup2 is mounted for the test in a
private temporary directory (one v2 hierarchy per kernel: the same one systemd's hybrid layout shows
at /sys/fs/cgroup/unified) and unmounted after.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import hypermesh.ebpf
from hypermesh.ebpf.cgroup_target import cgroup2_mounts, resolve_cgroup
from hypermesh.errors import InvalidInput
from tests.integration.ebpf_support import HYPERMESH, REPO, require_ebpf, run_cli
from tests.integration.test_ebpf_tracing import SYSCALL_MARGIN, _child, _finish, _go

pytestmark = [pytest.mark.ebpf, pytest.mark.root]


@pytest.fixture
def cgroup() -> Iterator[Path]:
    """A fresh cgroup v2 directory, unique to this test run; removed (and its mount, if ours) after."""
    require_ebpf()
    mounts = cgroup2_mounts()
    mounted_here = None
    if not mounts:
        mounted_here = tempfile.mkdtemp(prefix="hm-cgroup2-")
        subprocess.run(["mount", "-t", "cgroup2", "none", mounted_here], check=True, timeout=10)
        mounts = [mounted_here]
    path = Path(mounts[0]) / f"hm-ebpf-filter-{os.getpid()}"
    path.mkdir()
    try:
        yield path
    finally:
        for pid in (path / "cgroup.procs").read_text().split():  # leftovers go back to the root
            (path.parent / "cgroup.procs").write_text(pid)
        path.rmdir()
        if mounted_here is not None:
            subprocess.run(["umount", mounted_here], check=True, timeout=10)
            os.rmdir(mounted_here)


def _join(cgroup: Path, pid: int) -> None:
    (cgroup / "cgroup.procs").write_text(str(pid))


def test_syscalls_cgroup_counts_inside_and_not_outside(cgroup: Path) -> None:
    n = 3000
    inside, outside = _child(), _child()
    try:
        _join(cgroup, inside.pid)
        with hypermesh.ebpf.load("syscalls", cgroup=str(cgroup)) as prog:
            prog.attach()
            _go(inside, n)
            _go(outside, n)
            counts = prog.read()
    finally:
        _finish(inside)
        _finish(outside)
    assert counts.cgroup_filter == str(cgroup)
    assert [p.pid for p in counts.processes] == [inside.pid]  # only the process in the cgroup
    assert n <= counts.syscalls["getppid"] <= n + SYSCALL_MARGIN  # its n, not the 2n of both
    assert counts.processes[0].count == counts.total


def test_cli_syscalls_cgroup_and_bad_cgroups(cgroup: Path, tmp_path: Path) -> None:
    n = 1000
    inside = _child()
    proc = subprocess.Popen(
        [*HYPERMESH, "ebpf", "run", "syscalls", "--cgroup", str(cgroup), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        _join(cgroup, inside.pid)
        assert proc.stderr is not None and "syscalls attached" in proc.stderr.readline()
        _go(inside, n)
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    finally:
        _finish(inside)
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert data["cgroup_filter"] == str(cgroup) and n <= data["syscalls"]["getppid"] <= n + SYSCALL_MARGIN
    assert [p["pid"] for p in data["processes"]] == [inside.pid]
    # A directory that is not a cgroup, a v1 cgroup, a file, a missing path: one line naming the fix, the same
    # line from every program that filters on a cgroup v2 directory (execguard refuses it before it loads).
    v1 = next((p for p in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/memory") if os.path.isdir(p)), None)
    a_file = tmp_path / "file"
    a_file.write_text("")
    for bad, code, message in [
        (str(tmp_path), 2, "is not in a cgroup file system"),
        *(
            [(v1, 2, "is a cgroup v1 directory, and BPF sees cgroup v2 only")]
            if v1 and v1 not in cgroup2_mounts()
            else []
        ),
        (str(a_file), 2, "is not a directory"),
        (str(tmp_path / "nosuch"), 2, "no such cgroup directory"),
    ]:
        said = set()
        for program in ("syscalls", "execsnoop", "execguard --deny /tmp/hm-none"):
            result = run_cli("ebpf", "run", *program.split(), "--cgroup", bad, "--duration", "0.1")
            assert result.returncode == code, result.stderr
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and message in lines[0], result.stderr
            if message != "no such cgroup directory":
                assert "cgroup v2 hierarchy is mounted at" in lines[0]
            said.add(lines[0])
        assert len(said) == 1, said
    with pytest.raises(InvalidInput, match="not in a cgroup file system"):
        hypermesh.ebpf.load("execsnoop", cgroup=str(tmp_path))


SHELL = 'read go; [ -n "$1" ] && echo $$ > "$1"; for i in 1 2 3; do /bin/true; done'


def _shells(*cgroup_procs: str) -> list[subprocess.Popen[str]]:
    """Shells that, once told, join a cgroup (when given its cgroup.procs) and exec /bin/true 3 times."""
    return [
        subprocess.Popen(["sh", "-c", SHELL, "sh", procs], stdin=subprocess.PIPE, text=True) for procs in cgroup_procs
    ]


def _release(shells: list[subprocess.Popen[str]]) -> None:
    for shell in shells:
        shell.communicate("go\n", timeout=30)
        assert shell.returncode == 0


def test_execsnoop_cgroup_and_pid_filters(cgroup: Path) -> None:
    inside, outside = _shells(str(cgroup / "cgroup.procs"), "")
    with hypermesh.ebpf.load("execsnoop", cgroup=str(cgroup)) as prog:
        prog.attach()
        _release([inside, outside])
        events = prog.poll(0.2) + prog.poll(0.05)
    by_parent = {shell.pid: [e for e in events if e.ppid == shell.pid] for shell in (inside, outside)}
    assert [e.filename for e in by_parent[inside.pid]] == ["/bin/true"] * 3
    assert by_parent[outside.pid] == []
    assert {e.ppid for e in events} == {inside.pid}  # nothing from anywhere else on the machine

    chosen, other = _shells("", "")
    with hypermesh.ebpf.load("execsnoop", pid=chosen.pid) as prog:
        prog.attach()
        _release([chosen, other])
        events = prog.poll(0.2) + prog.poll(0.05)
    assert [(e.ppid, e.filename) for e in events] == [(chosen.pid, "/bin/true")] * 3


def test_a_cgroup_under_a_mount_point_with_a_space_and_non_ascii_letters(tmp_path: Path) -> None:
    """mountinfo writes a space as \\040 and a UTF-8 letter as its bytes: the mount point is read as the path
    os.realpath gives, so a cgroup under it resolves to its own directory (inode and depth)."""
    point = tmp_path / "cgroup2 ünïcode"
    point.mkdir()
    subprocess.run(["mount", "-t", "cgroup2", "none", str(point)], check=True, timeout=10)
    child = point / f"hm-filter-é-{os.getpid()}" / "inner"
    try:
        child.mkdir(parents=True)
        assert str(point) in cgroup2_mounts()
        target = resolve_cgroup(str(child), v2_only=True)
        assert (target.version, target.level, target.cgroup_id) == (2, 2, os.stat(child).st_ino)
    finally:
        if child.exists():
            child.rmdir()
            child.parent.rmdir()
        subprocess.run(["umount", str(point)], check=True, timeout=10)
