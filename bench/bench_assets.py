"""Assets (issue 11): a snapshot of every asset, allocate + release in the ledger against bare SQLite in the same
run, and one GPU read per device through DRM sysfs (AMD fixture tree) and NVML (nvidia-ml-py against the test
suite's stand-in libnvidia-ml.so.1, built here with gcc where gcc is installed).

Goals: snapshot <= 2 ms median (scaled by the machine factor, psutil's four sample calls against the issue's
reference machine, as bench_core does); allocate + release <= 2x a bare SQLite insert + commit + delete + commit
with the same durability (WAL, synchronous=FULL); a GPU read <= 1 ms per device.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from pathlib import Path

from bench.bench_core import REFERENCE_PSUTIL_FOUR_CALLS_US, psutil_sample, summary, timed

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "gpu"


def _bare_sqlite(path: str) -> object:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, owner TEXT, kind TEXT, asset_id TEXT, amount REAL, at REAL)")
    n = [0]

    def cycle() -> None:
        n[0] += 1
        key = f"k{n[0]}"
        db.execute("BEGIN")
        db.execute("INSERT INTO t VALUES (?, 'o', 'cpu', 'cpu', 1.0, 0.0)", (key,))
        db.execute("COMMIT")
        db.execute("BEGIN")
        db.execute("DELETE FROM t WHERE id = ?", (key,))
        db.execute("COMMIT")

    return cycle


def _nvml_per_device_us(workdir: str) -> dict[str, object] | None:
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    lib = os.path.join(workdir, "libnvidia-ml.so.1")
    source = FIXTURES / "nvidia" / "fake_nvml.c"
    subprocess.run([gcc, "-shared", "-fPIC", "-Wl,-soname,libnvidia-ml.so.1", "-o", lib, str(source)], check=True)
    from hypermesh.gpu import GpuReader

    reader = GpuReader(sys_root=workdir, proc_root=workdir, nvml_library=lib)
    devices = len(reader.read())
    values = timed(reader.read, 2000, warmup=100)
    reader.close()
    return {"devices": devices, "per_device_us": summary([v / devices for v in values])}


def run() -> dict[str, object]:
    from hypermesh.assets import Inventory, Ledger
    from hypermesh.gpu import GpuReader

    psutil_us = summary(timed(psutil_sample, 500, warmup=50))["median"]
    slowdown = psutil_us / REFERENCE_PSUTIL_FOUR_CALLS_US
    with Inventory() as inventory:
        inventory.snapshot()  # the Sampler's baseline
        snap = summary(timed(inventory.snapshot, 500, warmup=20))
        count = len(inventory.snapshot().assets)

    amd = GpuReader(sys_root=str(FIXTURES / "amd" / "sys"))
    drm = summary(timed(amd.read, 2000, warmup=100))

    with tempfile.TemporaryDirectory(prefix="hm-bench-assets-") as tmp:
        ledger = Ledger(os.path.join(tmp, "state"))

        def allocate_release() -> None:
            ledger.release(ledger.allocate("cpu", "cpu", 1, owner="bench", capacity=1e9).id)

        bare = _bare_sqlite(os.path.join(tmp, "bare.sqlite"))
        # interleaved rounds, so both see the same disk and the same neighbours
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(5):
            ours += timed(allocate_release, 60, warmup=5)
            theirs += timed(bare, 60, warmup=5)  # type: ignore[arg-type]
        ledger.close()
        nvml = _nvml_per_device_us(tmp)
    ledger_ratio = summary(ours)["median"] / summary(theirs)["median"]
    gpu_us = [drm["median"]] + ([nvml["per_device_us"]["median"]] if nvml else [])  # type: ignore[index]
    return {
        "machine_slowdown_vs_issue_reference": round(slowdown, 2),
        "assets_in_snapshot": count,
        "snapshot_us": snap,
        "ledger_allocate_release_us": summary(ours),
        "bare_sqlite_insert_commit_delete_commit_us": summary(theirs),
        "ledger_vs_bare_sqlite_ratio": round(ledger_ratio, 2),
        "gpu_drm_read_per_device_us": drm,
        "gpu_nvml_read": nvml,
        "goal_met_scaled_to_reference": {
            "snapshot_median_le_2ms": snap["median"] / slowdown <= 2000,
            "ledger_le_2x_bare_sqlite": ledger_ratio <= 2.0,
            "gpu_read_le_1ms_per_device": all(us / slowdown <= 1000 for us in gpu_us),
        },
        "notes": "snapshot: live Inventory on this machine (cpu, memory, storage, network; no GPU). Ledger: one "
        "allocate (BEGIN IMMEDIATE, purge of exited owners, capacity check, insert, commit) plus one release, "
        "both fsync'd (WAL, synchronous=FULL), against the same four statements on a bare table.",
    }
