"""Asset adapters on the live machine, cross-checked against the kernel's own files, and inside cgroups the tests
make; error isolation and recovery over a 500-operation mixed run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hypermesh.assets import Inventory, Ledger
from hypermesh.assets.cpu import CpuAdapter
from hypermesh.assets.gpu import GpuAdapter
from hypermesh.assets.memory import MemoryAdapter
from hypermesh.assets.network import NetworkAdapter
from hypermesh.assets.storage import StorageAdapter
from hypermesh.errors import InvalidInput, NotFound
from tests.conftest import require, require_root

GPU_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "gpu"
CGROUP = Path("/sys/fs/cgroup")

IN_CGROUP = """
import json, os, sys
for d in sys.argv[1:]:
    with open(d + "/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))
from hypermesh import assets
snap = assets.snapshot()
print(json.dumps({a.kind: a.to_dict() for a in snap.assets if a.kind in ("cpu", "memory")}))
"""


def meminfo_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


def online_cpus() -> int:
    count = 0
    for part in Path("/sys/devices/system/cpu/online").read_text().strip().split(","):
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


@pytest.mark.root
def test_live_capacities_match_the_kernel(block_device_dir: Path) -> None:
    with Inventory() as inventory:
        snap = inventory.snapshot()
        assert snap.errors == {} and snap.problems == {}
        cpu = snap.find("cpu")[0]
        memory = snap.find("memory")[0]
        bound = len(os.sched_getaffinity(0))
        assert bound <= online_cpus() and list(cpu.details["cpus"]) == sorted(os.sched_getaffinity(0))
        quota = cpu.details["quota_cores"]  # a CI container may run under one; cgroup tests below make their own
        assert cpu.capacity == (bound if quota is None else min(bound, quota))
        assert cpu.allocatable == cpu.capacity and cpu.health.status == "ok"
        assert 0.0 <= (cpu.usage or 0.0) <= cpu.capacity
        limit = memory.details["cgroup_limit_bytes"]
        assert memory.capacity == (meminfo_total() if limit is None else min(limit, meminfo_total()))
        # A mount on a block device the test made: / may be an overlay (a container), which is no storage asset.
        mounted = next(a for a in snap.find("storage") if a.id == str(block_device_dir))
        st = os.statvfs(block_device_dir)
        assert mounted.capacity == st.f_blocks * st.f_frsize
        root_on_block_device = os.major(os.stat("/").st_dev) != 0  # overlay, tmpfs: anonymous device, major 0
        assert ("/" in {a.id for a in snap.find("storage")}) == root_on_block_device
        net_dev = {line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]}
        assert {a.id for a in snap.find("network")} == net_dev - {"lo"}
        for asset in snap.find("network"):
            speed = Path(f"/sys/class/net/{asset.id}/speed")
            try:
                mbps = int(speed.read_text())
            except OSError:
                mbps = -1
            assert asset.capacity == (mbps * 125_000 if mbps > 0 else None)
        assert snap.find("gpu") == []  # headless: no GPU asset, and no error either
        json.dumps(snap.to_dict())  # JSON-ready


def run_in(*dirs: Path) -> dict[str, dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-c", IN_CGROUP, *map(str, dirs)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, dict[str, object]] = json.loads(out.stdout)
    return result


@pytest.fixture
def cgroups():  # type: ignore[no-untyped-def]
    """Fresh v1 cgroups with a unique name under cpu, cpuset and memory; removed afterwards."""
    require_root()
    require((CGROUP / "cpu/cpu.cfs_quota_us").exists(), "needs the cgroup v1 cpu controller (this machine has it)")
    name = f"hm-test-assets-{uuid.uuid4().hex[:8]}"
    made = {c: CGROUP / c / name for c in ("cpu", "cpuset", "memory")}
    for d in made.values():
        d.mkdir()
    (made["cpuset"] / "cpuset.mems").write_text((CGROUP / "cpuset/cpuset.mems").read_text())
    (made["cpuset"] / "cpuset.cpus").write_text((CGROUP / "cpuset/cpuset.cpus").read_text())
    yield made
    for d in made.values():
        for _ in range(50):  # the child has exited; the kernel frees the cgroup a moment later
            try:
                d.rmdir()
                break
            except OSError:
                import time

                time.sleep(0.1)


@pytest.mark.root
def test_cpu_capacity_honours_quota_and_cpuset(cgroups) -> None:  # type: ignore[no-untyped-def]
    (cgroups["cpu"] / "cpu.cfs_period_us").write_text("100000")
    (cgroups["cpu"] / "cpu.cfs_quota_us").write_text("50000")
    got = run_in(cgroups["cpu"])["cpu"]
    assert got["capacity"] == 0.5 and got["details"]["quota_cores"] == 0.5  # type: ignore[index]

    require(online_cpus() >= 2, "needs two CPUs to bind to one")
    (cgroups["cpu"] / "cpu.cfs_quota_us").write_text("-1")
    (cgroups["cpuset"] / "cpuset.cpus").write_text("1")
    got = run_in(cgroups["cpu"], cgroups["cpuset"])["cpu"]
    assert got["capacity"] == 1.0 and got["details"]["cpus"] == [1]  # type: ignore[index]

    (cgroups["cpu"] / "cpu.cfs_quota_us").write_text("250000")  # 2.5 cores of quota, but only one CPU to run on
    got = run_in(cgroups["cpu"], cgroups["cpuset"])["cpu"]
    assert got["capacity"] == 1.0


@pytest.mark.root
def test_memory_capacity_is_the_cgroup_limit(cgroups) -> None:  # type: ignore[no-untyped-def]
    limit = 256 << 20
    (cgroups["memory"] / "memory.limit_in_bytes").write_text(str(limit))
    got = run_in(cgroups["memory"])["memory"]
    assert got["capacity"] == limit and got["details"]["total_bytes"] == meminfo_total()  # type: ignore[index]
    # usage is what the cgroup is charged (a fresh Python: tens of MiB), not the host's used memory
    assert 1 << 20 < got["usage"] < limit  # type: ignore[operator]
    assert got["usage"] < got["details"]["host_used_bytes"]  # type: ignore[index, operator]
    (cgroups["memory"] / "memory.limit_in_bytes").write_text(str(meminfo_total() * 4))  # a limit above RAM
    got = run_in(cgroups["memory"])["memory"]
    assert got["capacity"] == meminfo_total()


def test_memory_pressure_thresholds() -> None:
    require(Path("/proc/pressure/memory").exists(), "needs PSI (CONFIG_PSI, not psi=0)")
    with Inventory(adapters=[MemoryAdapter(degraded_at=0.0, failed_at=100.0)]) as inventory:
        memory = inventory.snapshot().assets[0]
        assert memory.health.status == "degraded" and (memory.health.reason or "").startswith(
            "memory pressure: some avg10 "
        )
        assert memory.details["pressure"]["some_avg10"] >= 0.0
    with Inventory(adapters=[MemoryAdapter(degraded_at=0.0, failed_at=0.0)]) as inventory:
        memory = inventory.snapshot().assets[0]
        assert memory.health.status == "failed" and memory.allocatable == 0.0
    with Inventory(adapters=[MemoryAdapter()]) as inventory:  # 10 % / 20 %: an idle test machine is ok
        some = float(Path("/proc/pressure/memory").read_text().split()[1].split("=")[1])
        memory = inventory.snapshot().assets[0]
        assert memory.health.status == ("ok" if some < 10.0 else "degraded")
    with pytest.raises(InvalidInput, match="threshold"):
        MemoryAdapter(degraded_at=120.0)


def test_gpu_assets_from_fixtures_and_clean_hand_over(tmp_path: Path) -> None:
    root = GPU_FIXTURES / "amd"
    adapter = GpuAdapter(sys_root=str(root / "sys"), proc_root=str(root / "proc"))
    with Inventory(adapters=[CpuAdapter(), adapter]) as inventory, Ledger(str(tmp_path)) as ledger:
        snap = inventory.snapshot(ledger)
        (gpu,) = snap.find("gpu")
        assert gpu.id == "4e2a8c1f0b9d7e63" and gpu.capacity == 1.0 and gpu.usage == 0.23
        assert gpu.details["pci_bus_id"] == "0000:03:00.0" and gpu.health.status == "ok"
        # pids 4242 (client 42, shared with its child 4250) and 5100 (client 57) use it, outside any allocation
        with pytest.raises(InvalidInput, match="pids 4242, 5100"):
            inventory.allocate(ledger, "gpu", 1, owner="job")
        grant = inventory.allocate(ledger, "gpu", 1, owner="job", force=True)
        after = inventory.snapshot(ledger).find("gpu")[0]
        assert after.allocated == 1.0 and after.allocatable == 0.0
        with pytest.raises(InvalidInput, match="0 left of 1"):
            inventory.allocate(ledger, "gpu", 0.5, owner="late", force=True)
        with pytest.raises(NotFound, match="available: 4e2a8c1f0b9d7e63"):
            inventory.allocate(ledger, "gpu", 1, owner="x", asset_id="GPU-nope")
        ledger.release(grant.id)
        assert inventory.snapshot(ledger).find("gpu")[0].allocatable == 1.0


@pytest.mark.slow
@pytest.mark.root
def test_500_operations_with_one_adapter_failing_halfway_and_recovering(tmp_path: Path, block_device_dir: Path) -> None:
    """Snapshots, allocations and releases across every adapter; storage loses its mount table from operation 200
    to 300 (the file vanishes, as under a broken --root), the rest keep reporting, it recovers by itself."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    mountinfo = proc / "self/mountinfo"
    recorded = Path("/proc/self/mountinfo").read_bytes()
    mountinfo.write_bytes(recorded)
    gpu_root = GPU_FIXTURES / "intel"
    adapters = [
        CpuAdapter(),
        MemoryAdapter(),
        StorageAdapter(proc_root=str(proc)),
        NetworkAdapter(),
        GpuAdapter(sys_root=str(gpu_root / "sys"), proc_root=str(gpu_root / "proc-t0")),
    ]
    mount = str(block_device_dir)  # on a block device whatever / is (an overlay in a container is no storage asset)
    held: list[str] = []
    failed_seen = recovered = 0
    failure_since = None
    with Inventory(adapters=adapters) as inventory, Ledger(str(tmp_path / "state")) as ledger:
        for op in range(500):
            if op == 200:
                mountinfo.unlink()
            if op == 300:
                mountinfo.write_bytes(recorded)
            kind = op % 3
            if kind == 0:
                snap = inventory.snapshot(ledger)
                kinds = {a.kind for a in snap.assets}
                assert {"cpu", "memory", "storage", "gpu"} <= kinds  # every kind reports, failing or not
                storage = snap.find("storage")
                others = [a for a in snap.assets if a.kind != "storage"]
                assert all(a.health.status == "ok" for a in others), [a for a in others if a.health.status != "ok"]
                if 200 <= op < 300:
                    failed_seen += 1
                    assert all(a.health.status == "failed" and a.allocatable == 0.0 for a in storage)
                    assert "mountinfo" in snap.errors["storage"] and str(proc) in snap.errors["storage"]
                    assert {a.id for a in storage} >= {mount}  # last known ids kept, reported failed
                    since = {a.health.since for a in storage}
                    assert len(since) == 1
                    failure_since = failure_since or since.pop()
                    assert failure_since == storage[0].health.since  # "since" stays at when it began
                else:
                    assert "storage" not in snap.errors and all(a.health.status == "ok" for a in storage)
                    recovered += op > 300
                    cpu = snap.find("cpu")[0]
                    assert cpu.allocated == pytest.approx(0.01 * len([h for h in held if h.startswith("cpu")]))
            elif kind == 1:
                target = ("cpu", None, 0.01) if op % 2 else ("storage", mount, 1 << 20)
                try:
                    grant = inventory.allocate(ledger, target[0], target[2], owner=f"op{op}", asset_id=target[1])
                    held.append(f"{target[0]}:{grant.id}")
                    assert not (200 <= op < 300 and target[0] == "storage"), "a failed asset granted"
                except Exception as exc:
                    assert 200 <= op < 300 and target[0] == "storage", exc
                    assert "has failed" in str(exc)
            elif held:
                _kind, _, gid = held.pop(0).partition(":")
                assert ledger.release(gid) is not None
    assert failed_seen == len(range(201, 300, 3)) and recovered > 30


def test_a_gpu_source_that_cannot_be_read_is_a_named_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NVML named but absent: no GPU asset to carry the reason, so the snapshot says it; the rest is unaffected."""
    monkeypatch.setenv("HYPERMESH_NVML", str(tmp_path / "absent" / "libnvidia-ml.so.1"))
    (tmp_path / "sys/class/drm").mkdir(parents=True)
    adapter = GpuAdapter(sys_root=str(tmp_path / "sys"), proc_root=str(tmp_path / "proc"))
    with Inventory(adapters=[CpuAdapter(), adapter]) as inventory:
        snap = inventory.snapshot()
        assert snap.find("gpu") == [] and snap.errors == {}
        assert "could not be loaded" in snap.problems["gpu.nvml"] and str(tmp_path) in snap.problems["gpu.nvml"]
        assert snap.find("cpu")[0].health.status == "ok"


@pytest.mark.root
def test_an_allocation_may_use_a_recent_reading_of_its_kind(tmp_path: Path, block_device_dir: Path) -> None:
    """max_age_s (the agent's allocations): capacity and health from the last snapshot of that kind while it is
    young enough, read afresh otherwise; the storage adapter's mount table taken away shows which one was used."""
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    mountinfo = proc / "self/mountinfo"
    mountinfo.write_bytes(Path("/proc/self/mountinfo").read_bytes())
    mount = str(block_device_dir)
    with Inventory(adapters=[StorageAdapter(proc_root=str(proc))]) as inventory, Ledger(str(tmp_path / "s")) as ledger:
        first = inventory.allocate(ledger, "storage", 1 << 20, owner="a", asset_id=mount, max_age_s=60)
        mountinfo.unlink()  # from now on a fresh read fails
        cached = inventory.allocate(ledger, "storage", 1 << 20, owner="b", asset_id=mount, max_age_s=60)
        with pytest.raises(Exception, match="has failed"):
            inventory.allocate(ledger, "storage", 1 << 20, owner="c", asset_id=mount)  # read afresh
        with pytest.raises(Exception, match="has failed"):  # the failed reading is now the recent one
            inventory.allocate(ledger, "storage", 1 << 20, owner="d", asset_id=mount, max_age_s=60)
        assert sorted(a.id for a in ledger.allocations()) == sorted([first.id, cached.id])
