"""``hypermesh ebpf run execguard`` where it must refuse to start, and the probe's BPF LSM answer, against
independent sources (/sys/kernel/security/lsm read here, bpftool loading an LSM program).

The guard's own proofs (EPERM in enforce mode, audit events, nothing outside the cgroup, nothing left after
a kill, 100 cycles) need a kernel that loads BPF LSM programs: tests/vm/guest_execguard.py, run inside
the second kernel by tests/vm/test_second_kernel.py. This file runs on the host, where a test follows what the
kernel supports.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import hypermesh.ebpf
from hypermesh.ebpf.probe import LSM_LIST
from tests.conftest import require, require_binary
from tests.integration.ebpf_support import HYPERMESH, REPO, require_ebpf, run_cli
from tests.integration.execguard_support import fresh_cgroup

pytestmark = [pytest.mark.ebpf, pytest.mark.root]

PROGRAMS = Path(hypermesh.ebpf.__file__).parent / "programs"


def _lsm_file() -> tuple[str, ...]:
    require(os.path.exists(LSM_LIST), "securityfs mounted (scripts/kernel-mounts.sh)")
    with open(LSM_LIST) as f:
        return tuple(f.read().strip().split(","))


@pytest.fixture
def cgroup() -> Iterator[str]:
    require_ebpf()
    with fresh_cgroup() as path:
        yield path


@pytest.fixture
def v1_cgroup() -> Iterator[str]:
    """A directory of a real cgroup v1 hierarchy: a named one (no controller) mounted for the test."""
    require_ebpf()
    where = tempfile.mkdtemp(prefix="hm-cgroup1-")
    name = f"hm{uuid.uuid4().hex[:10]}"
    subprocess.run(["mount", "-t", "cgroup", "-o", f"none,name={name}", "cgroup", where], check=True, timeout=30)
    try:
        yield where
    finally:
        subprocess.run(["umount", where], check=False, timeout=30)
        os.rmdir(where)


def _one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hypermesh: error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_bad_input_exits_2_with_one_line_naming_it(cgroup: str, v1_cgroup: str, tmp_path: Path) -> None:
    run = ("ebpf", "run", "execguard")
    cases = {
        "no such cgroup directory: /nonexistent-hm": ["--cgroup", "/nonexistent-hm", "--deny", "/tmp/x"],
        "is a cgroup v1 directory": ["--cgroup", v1_cgroup, "--deny", "/tmp/x"],
        "is not in a cgroup file system": ["--cgroup", str(tmp_path), "--deny", "/tmp/x"],
        "--deny tmp/x: not an absolute path": ["--cgroup", cgroup, "--deny", "tmp/x"],
        "17 --deny prefixes: at most 16": ["--cgroup", cgroup] + [f"--deny=/t{i}" for i in range(17)],
        "more than the 255 a prefix may have": ["--cgroup", cgroup, "--deny", "/" + "x" * 300],
        "argument --mode: invalid choice": ["--cgroup", cgroup, "--deny", "/tmp/x", "--mode", "block"],
        "the following arguments are required: --deny": ["--cgroup", cgroup],
    }
    for needle, args in cases.items():
        line = _one_error_line(run_cli(*run, *args), 2)
        assert needle in line, (needle, line)
    # the v1 answer says how to get a v2 directory: where cgroup2 is mounted (as /proc/self/mounts has it), or
    # how to mount it
    v1 = _one_error_line(run_cli(*run, "--cgroup", v1_cgroup, "--deny", "/tmp/x"), 2)
    with open("/proc/self/mounts") as f:
        v2_mounts = [line.split()[1] for line in f if line.split()[2] == "cgroup2"]
    assert all(m in v1 for m in v2_mounts) if v2_mounts else "mount -t cgroup2" in v1, v1


def test_probe_lsm_answer_matches_securityfs_and_bpftool() -> None:
    require_ebpf()
    listed = _lsm_file()
    report = hypermesh.ebpf.probe()
    assert report.lsm_modules == listed
    lsm = report.feature("lsm")
    # Independently: does the kernel take an LSM program? bpftool loads and pins one; the pin is removed.
    bpftool = require_binary("bpftool")
    pin = f"/sys/fs/bpf/hm-probe-lsm-{uuid.uuid4().hex[:8]}"
    loaded = subprocess.run(
        [bpftool, "prog", "load", str(PROGRAMS / "probe_lsm.bpf.o"), pin], capture_output=True, timeout=60, check=False
    )
    if os.path.exists(pin):
        os.unlink(pin)
    assert lsm.supported == ("bpf" in listed and loaded.returncode == 0), (lsm, loaded.stderr)
    if "bpf" in listed and loaded.returncode != 0:
        assert "refuses to load an LSM program" in lsm.reason, lsm.reason
    human = run_cli("ebpf", "probe")
    assert f"active LSMs       {','.join(listed)}" in human.stdout.splitlines(), human.stdout
    assert json.loads(run_cli("ebpf", "probe", "--json").stdout)["lsm_modules"] == list(listed)


def test_run_follows_what_the_kernel_supports(cgroup: str) -> None:
    """Where the kernel takes LSM programs it attaches (and says so); elsewhere exit 4, with the probe's reason."""
    lsm = hypermesh.ebpf.probe().feature("lsm")
    result = run_cli("ebpf", "run", "execguard", "--cgroup", cgroup, "--deny", "/tmp/hm-none", "--duration", "0.3")
    if lsm.supported:
        assert result.returncode == 0, result.stderr
        first = result.stderr.splitlines()[0]
        assert first.startswith("hypermesh: execguard attached to lsm bprm_check_security in audit mode"), first
        assert f"for cgroup {os.path.realpath(cgroup)} (id {os.stat(cgroup).st_ino})" in first, first
        return
    line = _one_error_line(result, 4)
    assert line == f"hypermesh: error: the BPF LSM exec guard is not supported here: {lsm.reason}", line


def test_bpf_not_among_the_active_lsms_exits_4_naming_the_boot_parameter(cgroup: str) -> None:
    """In a private mount namespace whose /sys/kernel/security/lsm lists no bpf (a file bound over it):
    the probe and the guard say BPF LSM is not active and give the lsm= list to boot with."""
    listed = [m for m in _lsm_file() if m != "bpf"]
    unshare = require_binary("unshare")
    with tempfile.NamedTemporaryFile("w", prefix="hm-lsm-", suffix=".txt", delete=False) as fake:
        fake.write(",".join(listed))
    try:
        cli = " ".join(shlex.quote(p) for p in HYPERMESH)
        guard = f"{cli} ebpf run execguard --cgroup {shlex.quote(cgroup)} --deny /tmp/hm-none --duration 0.3"
        script = f"mount --bind {shlex.quote(fake.name)} {LSM_LIST} && {cli} ebpf probe --json && {guard}"
        result = subprocess.run(
            [unshare, "--mount", "--propagation", "private", "sh", "-c", script],
            capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
        )  # fmt: skip
    finally:
        os.unlink(fake.name)
    report = json.loads(result.stdout)
    assert report["lsm_modules"] == listed
    lsm = next(f for f in report["features"] if f["name"] == "lsm")
    wanted = f"lsm={','.join(listed)},bpf"
    assert not lsm["supported"] and "BPF LSM is not active" in lsm["reason"] and wanted in lsm["reason"], lsm
    line = _one_error_line(result, 4)
    assert "BPF LSM is not active" in line and wanted in line, line


def test_a_decision_record_read_in_place_from_ring_memory(cgroup: str, tmp_path: Path) -> None:
    """The guard's records as the ring reader hands them over, where they lie (no copy): a char array of the
    record's size, or (past ringbuf.SIZES_TYPED sizes) a memoryview cut to it from a longer array; the filename is
    sent up to its NUL (execguard.bpf.c's struct guard_event). Runs where the kernel refuses LSM programs too: the
    events themselves are proven in the 6.1 guest (tests/vm/guest_execguard.py)."""
    import ctypes
    import struct

    from hypermesh.ebpf.programs.execguard import ExecguardProgram

    denied = str(tmp_path / "denied")
    prog = ExecguardProgram(cgroup=cgroup, deny=["/tmp/hm-other", denied], mode="enforce")
    head = struct.pack("<IIIIIIQ16s", 4242, 4243, 1000, 2, 1, 0, prog.cgroup_id, b"sh")  # ACTION_DENY, prefix 1
    record = head + f"{denied}/true".encode() + b"\0"
    # The ring's memory past the record holds whatever came before: the reader must stop at the record's size.
    memory = ctypes.create_string_buffer(record + b"/stale/bytes/of/an/older/record", 512)
    address = ctypes.addressof(memory)
    for view in (
        (ctypes.c_char * len(record)).from_address(address),
        memoryview((ctypes.c_char * len(memory)).from_address(address))[: len(record)],
    ):
        event = prog._parse(view)
        assert event is not None
        assert (event.pid, event.tid, event.uid, event.comm) == (4242, 4243, 1000, "sh")
        assert (event.filename, event.action, event.prefix, event.unresolved) == (
            f"{denied}/true",
            "deny",
            denied,
            False,
        )
        assert event.cgroup_id == os.stat(cgroup).st_ino
    assert prog._parse((ctypes.c_char * (len(head) - 1)).from_address(address)) is None  # shorter than a header
