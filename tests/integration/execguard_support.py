"""Shared helpers for the exec guard's tests (no tests here): a cgroup v2 directory of the test's own, a
process that joins it and then executes a file, and what of ours the kernel still holds (bpftool)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.ebpf_support import bpftool_json

GUARD_PROGRAM = "check_exec"  # execguard.bpf.c's program, as bpftool lists it

# The child joins the cgroup, says who it is (its comm is the name the guard reports), then executes the
# file: on success the file's own exit status is the child's; on failure it prints the errno and exits 97.
CHILD = """
import os, sys
with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))
with open("/proc/self/comm") as f:
    comm = f.read().strip()
print(f"{os.getpid()} {comm}", flush=True)
try:
    os.execv(sys.argv[2], [sys.argv[2]])
except OSError as exc:
    print(f"errno {exc.errno}", flush=True)
    sys.exit(97)
"""


def _cgroup2_mounts() -> list[str]:
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[2] == "cgroup2"]


@contextmanager
def cgroup2_root() -> Iterator[str]:
    """A cgroup2 mount point: the system's, or (a host with v1 controllers only) one mounted for the test in a
    private directory and unmounted after. Every cgroup2 mount shows the same unified hierarchy."""
    mounts = _cgroup2_mounts()
    if mounts:
        yield mounts[0]
        return
    where = tempfile.mkdtemp(prefix="hm-cgroup2-")
    subprocess.run(["mount", "-t", "cgroup2", "none", where], check=True, timeout=30)
    try:
        yield where
    finally:
        subprocess.run(["umount", where], check=False, timeout=30)
        os.rmdir(where)


@contextmanager
def fresh_cgroup() -> Iterator[str]:
    """A fresh cgroup v2 directory with a unique name, removed after (its processes must have exited)."""
    with cgroup2_root() as root:
        path = os.path.join(root, f"hm-execguard-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.mkdir(path)
        try:
            yield path
        finally:
            deadline = time.monotonic() + 10
            while True:  # a child reaped a moment ago may still be listed for a short while
                try:
                    os.rmdir(path)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


def copy_of_true(directory: Path) -> Path:
    """A copy of /bin/true in ``directory`` (created): the guard must judge it by where it is."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "true"
    target.write_bytes(Path("/bin/true").read_bytes())
    target.chmod(0o755)
    return target


def exec_in_cgroup(cgroup: str, target: str | Path) -> tuple[int, str, int | None, int]:
    """Run ``target`` from a process inside ``cgroup``: (pid, comm before the exec, errno of a failed
    exec or None, exit status)."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, os.path.join(cgroup, "cgroup.procs"), str(target)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    assert lines, result.stderr
    pid_text, comm = lines[0].split(" ", 1)
    err = int(lines[1].split()[1]) if len(lines) > 1 and lines[1].startswith("errno ") else None
    return int(pid_text), comm, err, result.returncode


def exec_outside(target: str | Path) -> tuple[int, int]:
    """Run ``target`` from a process outside any test cgroup: (pid, exit status)."""
    with subprocess.Popen([str(target)]) as proc:
        return proc.pid, proc.wait(timeout=60)


def guard_programs() -> set[int]:
    return {int(p["id"]) for p in bpftool_json("prog", "list") if p.get("name") == GUARD_PROGRAM}  # type: ignore[call-overload]


def guard_links() -> set[int]:
    progs = guard_programs()
    return {int(link["id"]) for link in bpftool_json("link", "list") if link.get("prog_id") in progs}  # type: ignore[call-overload]


def guard_gone(timeout: float = 10) -> bool:
    """Whether no program or link of the guard is left in the kernel (releases are deferred: RCU)."""
    deadline = time.monotonic() + timeout
    while guard_programs() or guard_links():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
