"""Block I/O the test makes on a loop device it owns, seen by `hypermesh ebpf run biolatency` as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.ebpf_support import HYPERMESH, completed_requests, require_ebpf

pytestmark = [pytest.mark.ebpf, pytest.mark.root]

WRITES = 8


def test_cli_biolatency_shows_the_requests_of_a_write_and_fsync_burst(block_device_dir: Path) -> None:
    require_ebpf()
    st = os.stat(block_device_dir)
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    name = os.path.basename(os.path.realpath(f"/sys/dev/block/{major}:{minor}"))
    cli = subprocess.Popen(
        [*HYPERMESH, "ebpf", "run", "biolatency", "--duration", "3", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert cli.stderr is not None
        attached = cli.stderr.readline()  # "hypermesh: biolatency attached to ...; running 3 s": it is counting now
        assert "attached" in attached, attached
        before = completed_requests(major, minor)
        with open(block_device_dir / "blob", "wb") as f:
            for _ in range(WRITES):
                os.write(f.fileno(), os.urandom(256 * 1024))
                os.fsync(f.fileno())
        out, err = cli.communicate(timeout=30)
        after = completed_requests(major, minor)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
    assert cli.returncode == 0, err
    devices = {d["device"]: d for d in json.loads(out)["devices"]}
    ours = devices[f"{major}:{minor}"]
    assert ours["name"] == name and name.startswith("loop")
    assert ours["total"] == sum(b["count"] for b in ours["buckets"])
    # At least one request per fsync completed while the CLI counted; the kernel's own count of the device over
    # the burst (the CLI ran longer, but nothing else writes to a loop device this test made) bounds it above.
    assert ours["total"] >= WRITES, ours
    assert ours["total"] <= after - before + 4, (ours["total"], before, after)  # + the mount's own journal commit
    for bucket in ours["buckets"]:
        assert bucket["high_us"] == 2 * max(bucket["low_us"], 1) - 1 or bucket["low_us"] == 0
