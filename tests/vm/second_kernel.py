"""Booting the second kernel (Debian's 6.1, /boot/vmlinuz-* other than the running one) under virtme-ng, for the
tests in tests/vm. Software emulation: nested KVM hangs right after the boot loader on the CI machines.

A boot under emulation takes minutes of CPU, so the boots a session selects start at collection (tests/vm/conftest.py)
and run one after another in the background at nice 19: they take the CPU the host's tests leave idle (most of
those tests wait on sockets, agents and timeouts), and the host's timing-sensitive tests keep their share. The VM test
then only collects the output. Run alone, a VM test boots in the foreground as before."""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from tests.conftest import require, require_root
from tests.suite_rules import BACKGROUND_THREAD

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOOT_TIMEOUT_S = 600


def second_kernel() -> str | None:
    running = os.uname().release
    return next((k for k in sorted(glob.glob("/boot/vmlinuz-*")) if not k.endswith(running)), None)


def _path() -> str:
    return f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"


def _command(guest: str, memory: str) -> list[str] | None:
    """The vng command line, or None where a boot is impossible here (the test then says why)."""
    vng = shutil.which("vng", path=_path())
    kernel = second_kernel()
    if os.geteuid() != 0 or vng is None or kernel is None or shutil.which("qemu-system-x86_64") is None:
        return None
    return [vng, "--disable-kvm", "-r", kernel, "--memory", memory, "--cpus", "2", "--", guest]


def _lowest_autogroup(pid: int) -> None:
    """With sched_autogroup on (Debian's default), a new session is a scheduling group of its own that competes with
    the test's group as an equal, whatever the nice value of its tasks: the VM then took half of a pinned test
    spinner's core. The group's own nice (19) is what makes it take only the CPU left idle."""
    try:
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write("19")
    except OSError:
        pass  # no autogroup in this kernel (CONFIG_SCHED_AUTOGROUP off): nice alone already holds


class _Boot:
    """One boot started ahead of its test; output() waits for it (bounded by the boot's own timeout)."""

    def __init__(self, command: list[str], timeout: float) -> None:
        self.command = command
        self.timeout = timeout
        self.done = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  (lives as long as the boot: read by output())
        self.note = ""
        self.lock = threading.Lock()
        self.stopped = False

    def run(self) -> None:
        try:
            started = time.monotonic()
            with self.lock:  # a session that ends first (--collect-only, Ctrl-C) must not leave a VM behind
                if self.stopped:
                    self.note = "\n[the session ended before this boot started]"
                    return
                self.proc = subprocess.Popen(
                    ["nice", "-n", "19", *self.command], stdout=self.log, stderr=subprocess.STDOUT,
                    env={**os.environ, "PATH": _path()}, cwd=REPO, start_new_session=True,
                )  # fmt: skip
                _lowest_autogroup(self.proc.pid)
            try:
                self.proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.note = f"\n[the background boot ran out of its {self.timeout:.0f} s]"
            self.note += f"\n[background boot: {time.monotonic() - started:.0f} s]"
        finally:
            self.done.set()

    def kill(self) -> None:
        with self.lock:
            self.stopped = True
            if self.proc is not None and self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)  # vng, virtme-run and qemu: one session of their own
                self.proc.wait()

    def output(self) -> str:
        self.done.wait(self.timeout + 60)
        self.log.seek(0)
        return self.log.read().decode(errors="replace") + self.note


_BACKGROUND: dict[tuple[str, str], _Boot] = {}


def start_in_background(boots: list[tuple[str, str, float]]) -> None:
    """Start the boots ``(guest, memory, timeout)`` one after another in a background thread."""
    queue = []
    for guest, memory, timeout in boots:
        command = _command(guest, memory)
        if command is not None and (guest, memory) not in _BACKGROUND:
            # Its own bound counts from its start, and at nice 19 it shares the CPU with the host's tests: ten
            # minutes more than a boot in the foreground gets (the VM test's wait stays within its own timeout).
            queue.append(_BACKGROUND.setdefault((guest, memory), _Boot(command, timeout + 600)))

    def run_all() -> None:
        for boot in queue:
            boot.run()

    if queue:
        threading.Thread(target=run_all, name=BACKGROUND_THREAD, daemon=True).start()


def stop_background() -> None:
    for boot in _BACKGROUND.values():
        boot.kill()


atexit.register(stop_background)  # also when pytest itself is stopped before its session-finish hook


def boot_second_kernel(guest: str, memory: str, timeout: float = BOOT_TIMEOUT_S) -> str:
    """Run the shell command ``guest`` in the second kernel with this checkout and this Python; its output."""
    require_root()
    require(shutil.which("vng", path=_path()), "virtme-ng (pip install virtme-ng; it is in the dev extra)")
    require(shutil.which("qemu-system-x86_64"), "qemu-system-x86 (make deps)")
    require(second_kernel(), "a second kernel image in /boot (Debian linux-image-amd64)")
    early = _BACKGROUND.get((guest, memory))
    if early is not None:
        return early.output()
    command = _command(guest, memory)
    assert command is not None
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env={**os.environ, "PATH": _path()}, check=False,
        cwd=REPO,
    )  # fmt: skip
    return result.stdout + result.stderr
