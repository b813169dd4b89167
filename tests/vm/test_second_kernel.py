"""The kprobe path and CO-RE portability, proven inside a second kernel: Debian's 6.1 (kprobes on),
booted by virtme-ng under software emulation (nested KVM hangs on the CI machines), running this
checkout with the host's Python. One boot, bounded by a timeout.

Inside the guest: tests/vm/guest_check.py (every committed object loads and reads there; ``--attach
auto`` picks the kprobe; exact getppid count), then a pytest selection of the host's own tests that
must also pass on that kernel, with CI=1 so nothing in it may skip.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys

import pytest

from tests.vm.second_kernel import REPO, boot_second_kernel

pytestmark = [pytest.mark.vm, pytest.mark.slow, pytest.mark.ebpf, pytest.mark.root]

GUEST_TESTS = [
    "tests/integration/test_ebpf_tracing.py::test_syscalls_counts_exact_getppid_calls_for_a_pid",
    "tests/integration/test_ebpf_tracing.py::test_execsnoop_ten_true",
    "tests/integration/test_ebpf_errors.py::test_kprobe_attach_follows_kernel_support",
    "tests/integration/test_ebpf_errors.py::test_verifier_error_carries_the_log",
    "tests/integration/test_ebpf_lifecycle.py::test_several_programs_at_once",
    "tests/integration/test_ebpf_xdp.py::test_xdp_counts_match_what_was_sent",
    # No tcx before 6.6: auto takes clsact filters there (a killed clsact run's cleanup is proven on the host with
    # --attach clsact: the same code, without two minutes of CLI starts under emulation).
    "tests/integration/test_ebpf_tc.py::test_tc_counts_both_directions_exactly",
    "tests/integration/test_ebpf_tc.py::test_tcx_follows_kernel_support",
    # The host kernel of some VMs has neither schedstat nor a cpuidle driver; Debian's 6.1 has schedstat.
    "tests/integration/test_live_linux.py::test_per_core_cpu_at_100_hz_is_finer_than_ticks",
    # The BPF LSM exec guard: this host's kernel refuses LSM programs (EPERM, as fentry); Debian's 6.1 runs them.
    # In the same boot as the rest: a boot under emulation costs a minute or more, and CI has 20 in all.
    "tests/vm/guest_execguard.py",
]
# Software emulation on a shared 2-core machine: the selection above takes 4-8 minutes there.
GUEST_TIMEOUT_S = 900


def guest_boot() -> tuple[str, str, float]:
    """(guest command, memory, timeout): the one boot this module needs (tests/vm/conftest.py starts it early)."""
    python = shlex.quote(sys.executable)
    selection = " ".join(shlex.quote(t) for t in GUEST_TESTS)
    guest = (
        f"cd {shlex.quote(REPO)} && scripts/kernel-mounts.sh && export CI=1 PYTHONDONTWRITEBYTECODE=1 "
        f"HYPERMESH_BTF_CACHE=/tmp/hypermesh-btf && uname -r && cat /sys/kernel/security/lsm && echo && "
        f"{python} tests/vm/guest_check.py && "
        f"{python} -m pytest -q -p no:cacheprovider -p no:hypothesispytest {selection} && echo GUEST-ALL-PASSED"
    )
    return guest, "2G", GUEST_TIMEOUT_S


@pytest.mark.timeout(GUEST_TIMEOUT_S + 60)
def test_kprobe_path_and_co_re_on_a_second_kernel() -> None:
    output = boot_second_kernel(*guest_boot())
    artifacts = os.path.join(REPO, "tests", "artifacts")
    os.makedirs(artifacts, exist_ok=True)
    with open(os.path.join(artifacts, "ebpf-second-kernel.log"), "w") as f:
        f.write(output)
    assert "GUEST-ALL-PASSED" in output, output[-4000:]
    line = next(line for line in output.splitlines() if line.startswith("GUEST-RESULT "))
    data = json.loads(line.removeprefix("GUEST-RESULT "))
    assert data["kernel"] != os.uname().release
    assert data["features"]["kprobe"] is True
    assert data["auto_attach"] == "kprobe"
    assert 2000 <= data["getppid"] <= 2002
    assert set(data["loaded"]) == {"xdp", "syscalls", "biolatency", "execsnoop", "tc", "profile"}
    assert re.search(r"^[a-z,]*\bbpf\b[a-z,]*$", output, re.MULTILINE), "bpf not among the guest's active LSMs"
    passed = re.search(r"(\d+) passed", output)
    # guest_execguard.py holds several tests; every other entry is one.
    assert passed and int(passed.group(1)) >= len(GUEST_TESTS) + 5, output[-2000:]
    assert " skipped" not in output and " failed" not in output, output[-2000:]
    assert data["loaded"]["syscalls"]["links"] == ["kprobe"]
    assert data["loaded"]["tc"]["links"] == ["clsact", "clsact"]  # 6.1 has no tcx links
