"""Enforced grants on cgroup v2, proven inside a second kernel (Debian 6.1 under virtme-ng, whose guest mounts
cgroup v2 at /sys/fs/cgroup; this host is v1, whose path tests/integration/test_assets_enforce.py proves).
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from tests.conftest import require, require_root

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.root]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOOT_TIMEOUT_S = 600


@pytest.mark.timeout(BOOT_TIMEOUT_S + 60)
def test_enforced_grants_on_cgroup_v2() -> None:
    require_root()
    bindir = os.path.dirname(sys.executable)
    vng = shutil.which("vng", path=f"{bindir}:{os.environ.get('PATH', '')}")
    require(vng, "virtme-ng (pip install virtme-ng; it is in the dev extra)")
    require(shutil.which("qemu-system-x86_64"), "qemu-system-x86 (make deps)")
    running = os.uname().release
    kernel = next((k for k in sorted(glob.glob("/boot/vmlinuz-*")) if not k.endswith(running)), None)
    require(kernel, "a second kernel image in /boot (Debian linux-image-amd64)")
    guest = (
        f"cd {shlex.quote(REPO)} && PYTHONDONTWRITEBYTECODE=1 {shlex.quote(sys.executable)} tests/vm/guest_cgroup_v2.py"
    )
    env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}"}
    result = subprocess.run(
        [vng, "--disable-kvm", "-r", kernel, "--memory", "1G", "--cpus", "2", "--", guest],  # type: ignore[list-item]
        capture_output=True, text=True, timeout=BOOT_TIMEOUT_S, env=env, check=False, cwd=REPO,
    )  # fmt: skip
    output = result.stdout + result.stderr
    line = next((x for x in output.splitlines() if x.startswith("GUEST-RESULT ")), None)
    assert line is not None, output[-4000:]
    data = json.loads(line.removeprefix("GUEST-RESULT "))
    print(json.dumps(data))
    assert data["kernel"] != running and data["cgroup_version"] == 2
    memory = data["memory"]
    assert memory["returncode"] == -9 and not memory["survived"]  # OOM-killed inside its cgroup, not the host
    assert memory["oom_kill"] >= 1
    assert memory["peak"] is None or memory["peak"] <= memory["grant"]
    assert data["memory_cgroup_removed"] is True and data["slice_left"] == []
    assert data["cpu_granted_share"] <= 0.6
    if data["cpu_control_share"] >= 0.8:
        assert data["cpu_granted_share"] >= 0.35
