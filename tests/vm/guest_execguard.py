"""The exec guard's proofs. Runs INSIDE the second kernel (Debian 6.1: BPF LSM active, LSM programs load),
started by tests/vm/test_second_kernel.py as ``python -m pytest tests/vm/guest_execguard.py`` with CI=1
(nothing may skip). Not collected on the host (the name does not start with test_): the host kernel of
the CI machines refuses BPF LSM programs (EPERM, as fentry), which tests/integration/test_ebpf_execguard.py
proves there.

Each test makes its own cgroup v2 directory (unique name) and copies of /bin/true; a process joins the
cgroup and then executes a copy, and what the kernel answers (errno, exit status) is the evidence, with
the decisions the guard streams checked against the pid and comm the process reported itself.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import hypermesh.ebpf
from hypermesh.ebpf.programs.execguard import ExecguardProgram, GuardEvent
from tests.conftest import require
from tests.integration.ebpf_support import HYPERMESH, REPO, open_fds, require_ebpf
from tests.integration.execguard_support import (
    copy_of_true,
    exec_in_cgroup,
    exec_outside,
    fresh_cgroup,
    guard_gone,
    guard_links,
    guard_programs,
    json_lines,
)

pytestmark = [pytest.mark.ebpf, pytest.mark.root]


@pytest.fixture
def cgroup() -> Iterator[str]:
    require_ebpf()
    lsm = hypermesh.ebpf.probe().feature("lsm")
    require(lsm.supported, f"a kernel that runs BPF LSM programs: {lsm.reason}")
    with fresh_cgroup() as path:
        yield path


def _load(cgroup: str, deny: list[str], mode: str) -> ExecguardProgram:
    prog = hypermesh.ebpf.load("execguard", cgroup=cgroup, deny=deny, mode=mode)
    assert isinstance(prog, ExecguardProgram)
    return prog


def _events_of(prog: ExecguardProgram, pid: int, wait: float = 1.0) -> list[GuardEvent]:
    return [e for e in prog.poll(wait) if e.pid == pid]


def test_enforce_refuses_inside_the_cgroup_only(cgroup: str, tmp_path: Path) -> None:
    denied = copy_of_true(tmp_path / "den")
    sibling = copy_of_true(tmp_path / "denied")  # shares the prefix's letters, not its path component
    with _load(cgroup, [str(tmp_path / "den")], "enforce") as prog:
        prog.attach()
        pid, comm, err, status = exec_in_cgroup(cgroup, denied)
        assert err == errno.EPERM and status == 97, (err, status)
        (event,) = _events_of(prog, pid)
        assert (event.action, event.filename, event.comm) == ("deny", str(denied), comm)
        assert event.prefix == str(tmp_path / "den") and not event.unresolved
        assert event.cgroup_id == os.stat(cgroup).st_ino

        outside_pid, outside_status = exec_outside(denied)
        assert outside_status == 0
        pid2, _, err2, status2 = exec_in_cgroup(cgroup, sibling)
        assert err2 is None and status2 == 0  # /tmp/.../denied is not under /tmp/.../den
        assert not [e for e in prog.poll(0.5) if e.pid in (outside_pid, pid2)]
        stats = prog.stats()
        # Three execs inside the cgroup: the denied one, the sibling, and each child's own python start is
        # outside (it joins after). Only the denied one matched.
        assert stats.matched == 1 and stats.checked == 2 and stats.lost == 0, stats


def test_audit_allows_and_reports(cgroup: str, tmp_path: Path) -> None:
    denied = copy_of_true(tmp_path / "den")
    with _load(cgroup, [f"{tmp_path}/den/"], "audit") as prog:  # a trailing '/' changes nothing
        prog.attach()
        pid, comm, err, status = exec_in_cgroup(cgroup, denied)
        assert err is None and status == 0, (err, status)
        (event,) = _events_of(prog, pid)
        assert (event.action, event.filename, event.comm, event.uid) == ("audit", str(denied), comm, os.getuid())
        outside_pid, outside_status = exec_outside(denied)
        assert outside_status == 0
        assert not _events_of(prog, outside_pid, 0.5)


def test_the_resolved_path_is_judged_not_the_name_given(cgroup: str, tmp_path: Path) -> None:
    """A symlink outside the prefix and a relative name both land on the denied file (bpf_d_path)."""
    denied = copy_of_true(tmp_path / "den")
    link = tmp_path / "elsewhere" / "innocent"
    link.parent.mkdir()
    link.symlink_to(denied)
    with _load(cgroup, [str(tmp_path / "den")], "enforce") as prog:
        prog.attach()
        for target in (link, Path(os.path.relpath(denied))):
            pid, _, err, _ = exec_in_cgroup(cgroup, target)
            assert err == errno.EPERM, target
            (event,) = _events_of(prog, pid)
            assert event.filename == str(denied), event


def test_cli_streams_json_and_a_kill_leaves_nothing_attached(cgroup: str, tmp_path: Path) -> None:
    denied = copy_of_true(tmp_path / "den")
    assert guard_gone(0)
    proc = subprocess.Popen(
        [*HYPERMESH, "ebpf", "run", "execguard", "--cgroup", cgroup, "--deny", str(tmp_path / "den"), "--mode", "enforce"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert proc.stderr is not None and proc.stdout is not None
        attached = proc.stderr.readline()
        assert "execguard attached to lsm bprm_check_security in enforce mode" in attached, attached
        assert guard_programs() and guard_links()
        pid, comm, err, _ = exec_in_cgroup(cgroup, denied)
        assert err == errno.EPERM
        line = proc.stdout.readline()  # the decision, streamed as it happened
        (event,) = json_lines(line)
        assert {k: event[k] for k in ("pid", "comm", "filename", "action")} == {
            "pid": pid, "comm": comm, "filename": str(denied), "action": "deny",
        }  # fmt: skip
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    assert guard_gone(), (guard_programs(), guard_links())
    _, _, err, status = exec_in_cgroup(cgroup, denied)
    assert err is None and status == 0  # the guard went with the process


def test_cli_sigterm_prints_the_counts_and_detaches(cgroup: str, tmp_path: Path) -> None:
    denied = copy_of_true(tmp_path / "den")
    proc = subprocess.Popen(
        [*HYPERMESH, "ebpf", "run", "execguard", "--cgroup", cgroup, "--deny", str(tmp_path / "den")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.stderr is not None
    assert "in audit mode" in proc.stderr.readline()
    pid, _, err, _ = exec_in_cgroup(cgroup, denied)
    assert err is None
    time.sleep(0.3)  # the CLI polls every 0.1 s; the decision is in the ring either way
    proc.send_signal(signal.SIGTERM)
    out, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert [e["pid"] for e in json_lines(out)] == [pid]
    assert "1 execs checked in the cgroup, 1 reported" in rest, rest
    assert guard_gone()


@pytest.mark.slow
@pytest.mark.timeout(900)  # software emulation: more than the suite's 300 s on a busy machine
def test_hundred_cycles_leave_no_fds_programs_or_links(cgroup: str, tmp_path: Path) -> None:
    denied = copy_of_true(tmp_path / "den")
    with _load(cgroup, [str(tmp_path / "den")], "audit") as warm:  # libbpf and the probe, opened once
        warm.attach()
    assert guard_gone()
    fds = open_fds()
    for i in range(100):
        prog = _load(cgroup, [str(tmp_path / "den")], "audit")
        prog.attach()
        if i % 25 == 0:  # it really guards, in some of the cycles (each exec costs a python start)
            pid, _, err, _ = exec_in_cgroup(cgroup, denied)
            assert err is None and [e.action for e in _events_of(prog, pid)] == ["audit"]
        assert prog.read().stats.lost == 0
        prog.close()
        assert not prog.attached
    assert guard_gone()
    assert open_fds() == fds
