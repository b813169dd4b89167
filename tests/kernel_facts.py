"""Independent readings of the live kernel that tests compare our numbers with (test oracles, no hypermesh code).

Why not ``os.cpu_count()``: Python 3.13 lets ``PYTHON_CPU_COUNT`` / ``-X cpu_count`` override it, and it says
nothing of which CPUs are online. Why not ``os.sched_getaffinity(0)``: that is where this process may run (taskset,
a cpuset), a subset of the machine; hypermesh reports the machine's online CPUs, as /proc/stat and the kernel do.
"""

from __future__ import annotations

import os


def online_cpus() -> list[int]:
    """The kernel's online CPU ids, from /sys/devices/system/cpu/online ("0-3,8,10-11")."""
    with open("/sys/devices/system/cpu/online") as f:
        text = f.read().strip()
    cpus: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    # Where this process may run is always among the online CPUs: a cross-check of the reading itself.
    assert set(os.sched_getaffinity(0)) <= set(cpus), (os.sched_getaffinity(0), cpus)
    return cpus


def root_mount() -> tuple[str, str]:
    """(major:minor, fstype) of this process's / from /proc/self/mountinfo."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields, _, tail = line.partition(" - ")
            parts = fields.split()
            if parts[4] == "/":
                root = (parts[2], tail.split()[0])
    return root


def root_on_block_device() -> bool:
    """Whether a block device holds / (false on a container's overlay root: major 0, an anonymous device)."""
    device, _ = root_mount()
    return os.path.exists(f"/sys/dev/block/{device}")
