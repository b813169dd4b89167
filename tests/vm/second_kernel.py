"""Booting the second kernel (Debian's 6.1, /boot/vmlinuz-* other than the running one) under virtme-ng, for the
tests in tests/vm. Software emulation: nested KVM hangs right after the boot loader on the CI machines."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

from tests.conftest import require, require_root

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOOT_TIMEOUT_S = 600


def second_kernel() -> str | None:
    running = os.uname().release
    return next((k for k in sorted(glob.glob("/boot/vmlinuz-*")) if not k.endswith(running)), None)


def boot_second_kernel(guest: str, memory: str, timeout: float = BOOT_TIMEOUT_S) -> str:
    """Run the shell command ``guest`` in the second kernel with this checkout and this Python; its output."""
    require_root()
    bindir = os.path.dirname(sys.executable)
    path = f"{bindir}:{os.environ.get('PATH', '')}"
    vng = shutil.which("vng", path=path)
    require(vng, "virtme-ng (pip install virtme-ng; it is in the dev extra)")
    require(shutil.which("qemu-system-x86_64"), "qemu-system-x86 (make deps)")
    kernel = second_kernel()
    require(kernel, "a second kernel image in /boot (Debian linux-image-amd64)")
    result = subprocess.run(
        [vng, "--disable-kvm", "-r", kernel, "--memory", memory, "--cpus", "2", "--", guest],  # type: ignore[list-item]
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "PATH": path}, check=False,
        cwd=REPO,
    )  # fmt: skip
    return result.stdout + result.stderr
