"""The BPF LSM exec guard, proven inside a second kernel: Debian's 6.1 (bpf among its active LSMs by its
CONFIG_LSM, LSM programs load), booted by virtme-ng. The host kernel of the CI machines lists bpf as an
active LSM but refuses LSM programs (EPERM, as fentry), so the proofs cannot run there.

Inside the guest: tests/vm/guest_execguard.py (EPERM in enforce mode, audit events, nothing outside the
cgroup, the resolved path judged, JSON lines from the CLI, nothing left after SIGKILL or SIGTERM, 100
load/attach/read/close cycles) and the host's own tests/integration/test_ebpf_execguard.py, with CI=1 so
nothing may skip. One boot, bounded by a timeout.
"""

from __future__ import annotations

import os
import re
import shlex
import sys

import pytest

from tests.vm.second_kernel import REPO, boot_second_kernel, second_kernel

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.ebpf, pytest.mark.root]

# Software emulation, and 100 CO-RE loads with an LSM detach each: several minutes, more on a busy machine.
GUEST_TIMEOUT_S = 1500
GUEST_TESTS = ["tests/vm/guest_execguard.py", "tests/integration/test_ebpf_execguard.py"]


@pytest.mark.timeout(GUEST_TIMEOUT_S + 60)
def test_exec_guard_in_a_kernel_that_runs_bpf_lsm() -> None:
    python = shlex.quote(sys.executable)
    selection = " ".join(shlex.quote(t) for t in GUEST_TESTS)
    guest = (
        f"cd {shlex.quote(REPO)} && scripts/kernel-mounts.sh && export CI=1 PYTHONDONTWRITEBYTECODE=1 && "
        f"uname -r && cat /sys/kernel/security/lsm && echo && "
        f"{python} -u -m pytest -q -p no:cacheprovider -p no:hypothesispytest --durations=0 {selection} && "
        "echo GUEST-ALL-PASSED"
    )
    output = boot_second_kernel(guest, "1G", GUEST_TIMEOUT_S)
    artifacts = os.path.join(REPO, "tests", "artifacts")
    os.makedirs(artifacts, exist_ok=True)
    with open(os.path.join(artifacts, "ebpf-execguard-guest.log"), "w") as f:
        f.write(output)
    assert "GUEST-ALL-PASSED" in output, output[-4000:]
    kernel = os.path.basename(second_kernel() or "").removeprefix("vmlinuz-")
    assert kernel and kernel != os.uname().release and kernel in output.splitlines(), output[:2000]
    assert re.search(r"^[a-z,]*\bbpf\b[a-z,]*$", output, re.MULTILINE), "bpf not among the guest's active LSMs"
    passed = re.search(r"(\d+) passed", output)
    assert passed and int(passed.group(1)) == 10 and " skipped" not in output, output[-2000:]
