"""The profile, the sampler and the CLI in a container-like root: / an overlay with no block device behind it.

The test builds one: in private mount and PID namespaces it mounts an overlay of / (a tmpfs upper layer), gives it
/proc (of the new PID namespace, so /proc/1 is the container's init, as the agent reads it), /sys and /dev, and
chroots into it. What runs there must not crash, and must describe that root as it is: no block device may claim /,
and any filesystem listed is one the container's own mount table shows, with its type.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_binary, require_root

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]

INSIDE = """
import json, os, hypermesh
from hypermesh.sampling.sampler import Sampler

def mountinfo(pid):
    out = []
    for line in open(f"/proc/{pid}/mountinfo"):
        fields, _, tail = line.partition(" - ")
        out.append((fields.split()[4], tail.split()[0]))
    return out

profile = hypermesh.profile()
with Sampler(min_interval=0.05) as sampler:
    sample = sampler.sample()
    stats = sampler.node_stats()
print(json.dumps({
    "pid": os.getpid(),
    "mounts": mountinfo(1),
    "storage": {d.name: [[m.mountpoint, m.fstype] for m in d.mounts] for d in profile.storage},
    "filesystems": [[f.mountpoint, f.fstype, f.device] for f in stats.filesystems],
    "disks": [d.name for d in sample.disks],
    "per_core": len(sample.cpu.per_core),
    "block": sorted(os.listdir("/sys/block")),
}))
"""


def in_overlay_root(tmp_path: Path, *command: str) -> subprocess.CompletedProcess[str]:
    layers = tmp_path / "layers"
    merged = layers / "merged"
    script = f"""
        set -e
        mkdir -p {layers}
        mount -t tmpfs tmpfs {layers}
        mkdir {layers}/upper {layers}/work {merged}
        mount -t overlay overlay -o lowerdir=/,upperdir={layers}/upper,workdir={layers}/work {merged}
        mount -t proc proc {merged}/proc
        mount --rbind /sys {merged}/sys
        mount --rbind /dev {merged}/dev
        mount --bind {REPO} {merged}{REPO}
        exec chroot {merged} "$@"
    """
    unshare = require_binary("unshare")
    return subprocess.run(
        [unshare, "--mount", "--pid", "--fork", "--propagation", "private", "sh", "-c", script, "sh", *command],
        capture_output=True, text=True, timeout=120, check=False, cwd="/",
    )  # fmt: skip


def test_profile_and_sampler_describe_an_overlay_root_honestly(tmp_path: Path) -> None:
    require_root()
    result = in_overlay_root(tmp_path, sys.executable, "-c", INSIDE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    got = json.loads(result.stdout)
    assert got["pid"] == 1  # the container's init: what the agent reads as /proc/1 there
    mounts = {mountpoint: fstype for mountpoint, fstype in got["mounts"]}
    assert mounts["/"] == "overlay"
    # No block device holds an overlay: none may claim / (the host's disk is still a disk, with no mount here).
    assert not any(mountpoint == "/" for mounts_ in got["storage"].values() for mountpoint, _ in mounts_)
    for mounts_ in got["storage"].values():
        for mountpoint, fstype in mounts_:
            assert mounts.get(mountpoint) == fstype, (mountpoint, fstype)
    # Filesystems listed are the container's own, with their own types (an overlay / is an overlay, if listed).
    for mountpoint, fstype, _device in got["filesystems"]:
        assert mounts.get(mountpoint) == fstype, (mountpoint, fstype, got["mounts"])
    assert set(got["disks"]) <= set(got["block"])
    assert got["per_core"] >= 1


def test_the_cli_profile_table_runs_in_an_overlay_root(tmp_path: Path) -> None:
    require_root()
    result = in_overlay_root(tmp_path, sys.executable, "-m", "hypermesh.cli.main", "profile")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr == ""
    assert "profiled in" in result.stdout and "Storage" in result.stdout, result.stdout[-2000:]
