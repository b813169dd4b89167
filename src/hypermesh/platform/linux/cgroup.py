"""cgroup limits that bind this process: CPU quota, memory limit, pids limit, for cgroup v1 and v2.

The binding limit is the tightest one on the way from our cgroup up to the root: a container's leaf cgroup is
often unlimited while its parent carries the limit. Inside a cgroup namespace our path reads "/" and the mount
is already our own cgroup; when the path from /proc/self/cgroup does not exist under the mount (a container
without a cgroup namespace sees the host's path), the mount's root is ours.
"""

from __future__ import annotations

import os

from hypermesh.model import Limits
from hypermesh.platform.linux.files import read_str
from hypermesh.platform.linux.procfs import parse_proc_cgroup

__all__ = ["limits"]

# v1 reports "no limit" as PAGE_COUNTER_MAX pages (0x7FFFFFFFFFFFF000 on 4 KiB-page 64-bit kernels).
_V1_UNLIMITED = 1 << 62


def _ancestors(mount: str, path: str) -> list[str]:
    """Directories from our cgroup up to the mount root, leaf first."""
    path = path.strip("/")
    if path and not os.path.isdir(f"{mount}/{path}"):
        path = ""
    parts = path.split("/") if path else []
    return [f"{mount}/{'/'.join(parts[:i])}".rstrip("/") for i in range(len(parts), -1, -1)]


def _tightest(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _v2_cpu(text: str | None) -> float | None:
    if not text:
        return None
    quota, _, period = text.partition(" ")
    return None if quota == "max" else int(quota) / int(period or "100000")


def _v2_int(text: str | None) -> float | None:
    return None if not text or text == "max" else int(text)


def _v1_cpu(directory: str) -> float | None:
    quota = read_str(f"{directory}/cpu.cfs_quota_us")
    period = read_str(f"{directory}/cpu.cfs_period_us")
    if not quota or not period or int(quota) < 0:
        return None
    return int(quota) / int(period)


def _v1_memory(directory: str) -> float | None:
    text = read_str(f"{directory}/memory.limit_in_bytes")
    return None if not text or int(text) >= _V1_UNLIMITED else int(text)


def _v1_mount(cgroup_root: str, controllers: list[str]) -> str | None:
    for name in (",".join(controllers), *controllers):
        if name and os.path.isdir(f"{cgroup_root}/{name}"):
            return f"{cgroup_root}/{name}"
    return None


def limits(proc_root: str, sys_root: str) -> Limits:
    cgroup_root = f"{sys_root}/fs/cgroup"
    text = read_str(f"{proc_root}/self/cgroup")
    if not text:
        return Limits(cgroup_version=None, cpu_quota_cores=None, memory_limit_bytes=None, pids_max=None)
    entries = parse_proc_cgroup(text)
    v1 = {c: path for _hid, controllers, path in entries for c in controllers if controllers}
    v2_path = next((path for hid, controllers, path in entries if hid == "0" and not controllers), None)

    cpu: list[float | None] = []
    memory: list[float | None] = []
    pids: list[float | None] = []
    # Controllers still on v1 (hybrid hierarchies) are read there; the rest from the unified tree.
    if v1:
        by_controller = {ctl: c for _hid, c, _p in entries for ctl in c}
        for controller, reader, sink in (
            ("cpu", _v1_cpu, cpu),
            ("memory", _v1_memory, memory),
            ("pids", lambda d: _v2_int(read_str(f"{d}/pids.max")), pids),
        ):
            mount = _v1_mount(cgroup_root, by_controller.get(controller, [controller]))
            if mount and controller in v1:
                sink.extend(reader(d) for d in _ancestors(mount, v1[controller]))
    if v2_path is not None:
        unified = cgroup_root if os.path.exists(f"{cgroup_root}/cgroup.controllers") else f"{cgroup_root}/unified"
        if os.path.exists(f"{unified}/cgroup.controllers"):
            for d in _ancestors(unified, v2_path):
                if "cpu" not in v1:
                    cpu.append(_v2_cpu(read_str(f"{d}/cpu.max")))
                if "memory" not in v1:
                    memory.append(_v2_int(read_str(f"{d}/memory.max")))
                if "pids" not in v1:
                    pids.append(_v2_int(read_str(f"{d}/pids.max")))
    version = 1 if v1 else (2 if v2_path is not None else None)
    mem = _tightest(memory)
    pid = _tightest(pids)
    return Limits(
        cgroup_version=version,
        cpu_quota_cores=_tightest(cpu),
        memory_limit_bytes=None if mem is None else int(mem),
        pids_max=None if pid is None else int(pid),
    )
