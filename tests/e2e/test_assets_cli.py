"""``hypermesh assets`` as a user runs it, cross-checked against the ledger file and the kernel's own counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hypermesh.assets import Ledger

HYPERMESH = str(Path(sys.executable).with_name("hypermesh"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HYPERMESH, *args], capture_output=True, text=True, timeout=60)


def test_snapshot_json_cpu_capacity_is_the_cpus_we_may_run_on(tmp_path: Path) -> None:
    done = run("assets", "--json", "--state-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    cpu = next(a for a in json.loads(done.stdout)["assets"] if a["kind"] == "cpu")
    # The kernel's count, read independently; a CPU quota can only make the capacity smaller.
    assert 0 < cpu["capacity"] <= len(os.sched_getaffinity(0))
    memory = next(a for a in json.loads(done.stdout)["assets"] if a["kind"] == "memory")
    mem_total = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]) * 1024
    assert 0 < memory["capacity"] <= mem_total


def test_allocate_list_release_round_trip_matches_the_ledger(tmp_path: Path) -> None:
    state = str(tmp_path)
    done = run("assets", "allocate", "memory", "64MiB", "--owner", "job-7", "--id", "m1", "--state-dir", state)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "m1"
    with Ledger(state) as ledger:
        stored = ledger.get("m1")
    assert (stored.owner, stored.kind, stored.amount) == ("job-7", "memory", 64 * 1024**2)
    # The same request again is a no-op (idempotent by id), not a second grant.
    again = run("assets", "allocate", "memory", "64MiB", "--owner", "job-7", "--id", "m1", "--state-dir", state)
    assert again.returncode == 0 and again.stdout.strip() == "m1"
    listed = run("assets", "allocations", "--json", "--state-dir", state)
    assert [a["id"] for a in json.loads(listed.stdout)] == ["m1"]
    snap = json.loads(run("assets", "--json", "--state-dir", state).stdout)
    memory = next(a for a in snap["assets"] if a["kind"] == "memory")
    assert memory["allocated"] == 64 * 1024**2
    assert run("assets", "release", "m1", "--state-dir", state).returncode == 0
    with Ledger(state) as ledger:
        assert ledger.allocations() == []


def test_refusal_and_bad_input_are_one_line_exit_2(tmp_path: Path) -> None:
    state = str(tmp_path)
    cores = len(os.sched_getaffinity(0))
    refused = run("assets", "allocate", "cpu", str(cores * 10), "--owner", "x", "--state-dir", state)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "left of" in refused.stderr
    for args in (
        ("allocate", "cpu", "lots", "--owner", "x"),
        ("allocate", "teapot", "1", "--owner", "x"),
        ("release", "no-such-id"),
    ):
        done = run("assets", *args, "--state-dir", state)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    with Ledger(state) as ledger:
        assert ledger.allocations() == []


def test_help_names_examples_and_exit_codes() -> None:
    done = run("assets", "--help")
    assert done.returncode == 0
    assert "examples:" in done.stdout and "exit codes:" in done.stdout


def test_profile_and_sample_read_the_machine_under_root(tmp_path: Path) -> None:
    here = json.loads(run("profile", "--json").stdout)
    rooted = json.loads(run("profile", "--json", "--root", "/").stdout)
    assert rooted["cpu"]["logical_cores"] == here["cpu"]["logical_cores"] == os.cpu_count()
    sample = run("sample", "--count", "1", "--interval", "0.2", "--json", "--root", "/")
    assert sample.returncode == 0, sample.stderr
    assert len(json.loads(sample.stdout)["cpu"]["per_core"]) == os.cpu_count()
    # An empty directory is no machine: one line naming what is missing, not a profile of nothing.
    empty = run("profile", "--json", "--root", str(tmp_path))
    assert empty.returncode != 0 and str(tmp_path) in empty.stderr and empty.stderr.count("\n") == 1
