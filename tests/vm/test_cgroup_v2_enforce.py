"""Enforced grants on cgroup v2, proven inside a second kernel (Debian 6.1 under virtme-ng, whose guest mounts
cgroup v2 at /sys/fs/cgroup; this host is v1, whose path tests/integration/test_assets_enforce.py proves).
"""

from __future__ import annotations

import json
import os
import shlex
import sys

import pytest

from tests.vm.second_kernel import BOOT_TIMEOUT_S, REPO, boot_second_kernel

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.root]


def guest_boot() -> tuple[str, str, float]:
    """(guest command, memory, timeout): the one boot this module needs (tests/vm/conftest.py starts it early)."""
    python = shlex.quote(sys.executable)
    return (
        f"cd {shlex.quote(REPO)} && PYTHONDONTWRITEBYTECODE=1 {python} tests/vm/guest_cgroup_v2.py",
        "1G",
        BOOT_TIMEOUT_S,
    )


@pytest.mark.timeout(BOOT_TIMEOUT_S + 60)
def test_enforced_grants_on_cgroup_v2() -> None:
    output = boot_second_kernel(*guest_boot())
    line = next((x for x in output.splitlines() if x.startswith("GUEST-RESULT ")), None)
    assert line is not None, output[-4000:]
    data = json.loads(line.removeprefix("GUEST-RESULT "))
    print(json.dumps(data))
    assert data["kernel"] != os.uname().release and data["cgroup_version"] == 2
    memory = data["memory"]
    assert memory["returncode"] == -9 and not memory["survived"]  # OOM-killed inside its cgroup, not the host
    assert memory["oom_kill"] >= 1
    assert memory["peak"] is None or memory["peak"] <= memory["grant"]
    assert data["memory_cgroup_removed"] is True and data["slice_left"] == []
    assert data["cpu_granted_share"] <= 0.6
    if data["cpu_control_share"] >= 0.8:
        assert data["cpu_granted_share"] >= 0.35
