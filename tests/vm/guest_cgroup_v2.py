"""Runs INSIDE the second kernel booted by test_cgroup_v2_enforce.py, where /sys/fs/cgroup is cgroup v2.

Proves the v2 path of hypermesh.assets.enforce with real processes: a memory hog asking 4x its grant is held to it
(its cgroup's memory.peak, the OOM kill counted in its memory.events), a busy loop granted 0.5 cores runs about
half a core, releasing removes the cgroup. Prints one GUEST-RESULT JSON line; exits non-zero on any failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 1 << 20
TICKS = os.sysconf("SC_CLK_TCK")
HOG = "import sys\nsys.stdin.readline()\nchunks = [bytearray(1 << 20) for _ in range(int(sys.argv[1]))]\nprint('survived')\n"
SPIN = "import sys, time\nsys.stdin.readline()\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


def cpu_seconds(pid: int) -> float:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    fields = data[data.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def main() -> int:
    from hypermesh.assets import Inventory, Ledger, enforce

    out: dict[str, object] = {"kernel": os.uname().release, "cgroup_version": enforce.version()}
    assert out["cgroup_version"] == 2
    state = tempfile.mkdtemp(prefix="hm-ledger-")
    with Inventory() as inventory, Ledger(state) as ledger:
        grant_bytes = 64 * MiB
        hog = subprocess.Popen(
            [sys.executable, "-c", HOG, str(4 * grant_bytes // MiB)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        grant = inventory.allocate(ledger, "memory", grant_bytes, owner="hog", pid=hog.pid, enforce=True)
        d = Path(f"/sys/fs/cgroup/{grant.enforced}")
        assert grant.enforced == f"hypermesh.slice/{grant.id}", grant
        assert Path(f"/proc/{hog.pid}/cgroup").read_text().strip() == f"0::/hypermesh.slice/{grant.id}"
        assert int((d / "memory.max").read_text()) == grant_bytes
        printed, _ = hog.communicate("go\n", timeout=300)
        events = dict(line.split() for line in (d / "memory.events").read_text().splitlines())
        out["memory"] = {
            "returncode": hog.returncode,
            "survived": "survived" in printed,
            "peak": int((d / "memory.peak").read_text()) if (d / "memory.peak").exists() else None,
            "oom_kill": int(events["oom_kill"]),
            "grant": grant_bytes,
        }
        assert ledger.allocations() == []  # the hog exited: released on this read, and its cgroup removed
        out["memory_cgroup_removed"] = not d.exists()

        def spin(enforced: bool, seconds: float = 4.0) -> float:
            proc = subprocess.Popen([sys.executable, "-c", SPIN, str(seconds)], stdin=subprocess.PIPE, text=True)
            if enforced:
                g = inventory.allocate(ledger, "cpu", 0.5, owner="spin", pid=proc.pid, enforce=True)
                assert Path(f"/sys/fs/cgroup/{g.enforced}/cpu.max").read_text().split() == ["50000", "100000"]
            assert proc.stdin is not None
            before, start = cpu_seconds(proc.pid), time.monotonic()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            time.sleep(seconds - 1.0)
            share = (cpu_seconds(proc.pid) - before) / (time.monotonic() - start)
            proc.stdin.close()
            proc.wait(timeout=120)
            return share

        out["cpu_control_share"] = round(spin(False), 3)
        out["cpu_granted_share"] = round(spin(True), 3)
        ledger.allocations()
        out["slice_left"] = sorted(p.name for p in Path("/sys/fs/cgroup/hypermesh.slice").iterdir() if p.is_dir())
    print("GUEST-RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
