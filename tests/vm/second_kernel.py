"""Booting the second kernel (Debian's 6.1, /boot/vmlinuz-* other than the running one) under virtme-ng, for the
tests in tests/vm. Software emulation: nested KVM hangs right after the boot loader on the CI machines.

A boot under emulation takes minutes of CPU, so the boots a session selects start at collection (tests/vm/conftest.py)
and run one after another in a runner process (tests/vm/boot_runner.py) at nice 19: they take the CPU the host's tests leave idle (most of
those tests wait on sockets, agents and timeouts), and the host's timing-sensitive tests keep their share. The VM test
then only collects the output. Run alone, a VM test boots in the foreground as before."""

from __future__ import annotations

import atexit
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import require, require_root

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


class _Background:
    """The boots started at collection: one runner process (tests/vm/boot_runner.py) in a session of its own."""

    def __init__(self, boots: list[tuple[tuple[str, str], list[str], float]]) -> None:
        self.dir = tempfile.mkdtemp(prefix="hypermesh-vm-boots-")
        self.logs: dict[tuple[str, str], tuple[str, float]] = {}
        spec = []
        for n, (key, command, timeout) in enumerate(boots):
            log = os.path.join(self.dir, f"boot-{n}.log")
            spec.append({"command": ["nice", "-n", "19", *command], "timeout": timeout, "log": log})
            self.logs[key] = (log, timeout)
        with open(os.path.join(self.dir, "spec.json"), "w") as f:
            json.dump(spec, f)
        self.runner = subprocess.Popen(
            [sys.executable, "-m", "tests.vm.boot_runner", os.path.join(self.dir, "spec.json")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "PATH": _path()}, cwd=REPO, start_new_session=True,
        )  # fmt: skip
        _lowest_autogroup(self.runner.pid)
        self.started = time.monotonic()

    def output(self, key: tuple[str, str]) -> str:
        """The boot's output once it has ended; waits at most until every boot before it could have run out."""
        log, _ = self.logs[key]
        deadline = self.started + sum(t for _, t in self.logs.values()) + 60
        while not os.path.exists(log + ".done") and self.runner.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        text = Path(log).read_text(errors="replace") if os.path.exists(log) else ""
        if os.path.exists(log + ".done"):
            with open(log + ".done") as f:
                done = json.load(f)
            timed_out = " (ran out of its time)" if done["timed_out"] else ""
            return f"{text}\n[background boot: {done['seconds']} s{timed_out}]"
        return f"{text}\n[background boot did not end: runner exit {self.runner.poll()}]"

    def stop(self) -> None:
        if self.runner.poll() is None:
            os.killpg(self.runner.pid, signal.SIGKILL)  # the runner, vng, virtme-run and qemu: one session
        self.runner.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


_BACKGROUND: list[_Background] = []


def start_in_background(boots: list[tuple[str, str, float]]) -> None:
    """Start the boots ``(guest, memory, timeout)`` one after another in a runner process."""
    runnable = []
    for guest, memory, timeout in boots:
        command = _command(guest, memory)
        if command is not None:
            # Its bound counts from its own start, and at nice 19 it shares the CPU with the host's tests: ten
            # minutes more than a boot in the foreground gets (the VM test's wait stays within its own timeout).
            runnable.append(((guest, memory), command, timeout + 600))
    if runnable and not _BACKGROUND:
        _BACKGROUND.append(_Background(runnable))


def stop_background() -> None:
    while _BACKGROUND:
        _BACKGROUND.pop().stop()


atexit.register(stop_background)  # also when pytest itself is stopped before its session-finish hook


def boot_second_kernel(guest: str, memory: str, timeout: float = BOOT_TIMEOUT_S) -> str:
    """Run the shell command ``guest`` in the second kernel with this checkout and this Python; its output."""
    require_root()
    require(shutil.which("vng", path=_path()), "virtme-ng (pip install virtme-ng; it is in the dev extra)")
    require(shutil.which("qemu-system-x86_64"), "qemu-system-x86 (make deps)")
    require(second_kernel(), "a second kernel image in /boot (Debian linux-image-amd64)")
    early = next((b for b in _BACKGROUND if (guest, memory) in b.logs), None)
    if early is not None:
        return early.output((guest, memory))
    command = _command(guest, memory)
    assert command is not None
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env={**os.environ, "PATH": _path()}, check=False,
        cwd=REPO,
    )  # fmt: skip
    return result.stdout + result.stderr
