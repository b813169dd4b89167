"""Memory as an asset, in bytes: the tighter of MemTotal and the cgroup memory limit up our cgroup's ancestry.

Health from PSI (/proc/pressure/memory, 4.20+): ``some avg10`` (share of the last 10 s in which at least one task
stalled on memory) at or above ``degraded_at`` makes it degraded; ``full avg10`` (all non-idle tasks stalled at
once: the machine was doing nothing but reclaim) at or above ``failed_at`` makes it failed.
"""

from __future__ import annotations

import os

from hypermesh.assets.base import Context, Reading
from hypermesh.errors import InvalidInput

__all__ = ["MemoryAdapter"]


class MemoryAdapter:
    kind = "memory"

    def __init__(self, degraded_at: float = 10.0, failed_at: float = 20.0) -> None:
        for name, value in (("degraded_at", degraded_at), ("failed_at", failed_at)):
            if not 0.0 <= value <= 100.0:
                raise InvalidInput(f"memory PSI threshold {name} must be a percentage 0-100, got {value!r}")
        self.degraded_at = degraded_at
        self.failed_at = failed_at

    def read(self, ctx: Context) -> list[Reading]:
        sample = ctx.need_sample()
        memory = sample.memory
        limit = None
        usage = float(memory.used_bytes)
        if os.path.isdir(f"{ctx.proc}/self"):  # Linux: cgroups
            from hypermesh.platform.linux import cgroup

            limit = cgroup.limits(ctx.proc, ctx.sys).memory_limit_bytes
            if limit is not None and limit < memory.total_bytes:
                # The limit binds: what counts against it is its cgroup's charge, not the host's used memory.
                charged = cgroup_usage(ctx, limit)
                usage = usage if charged is None else float(charged)
        capacity = memory.total_bytes if limit is None else min(memory.total_bytes, limit)
        psi = memory.pressure
        problem = None
        failed = False
        if psi is not None:
            if psi.full_avg10 is not None and psi.full_avg10 >= self.failed_at:
                problem, failed = f"memory pressure: full avg10 {psi.full_avg10:.2f}% ≥ {self.failed_at:g}%", True
            elif psi.some_avg10 >= self.degraded_at:
                problem = f"memory pressure: some avg10 {psi.some_avg10:.2f}% ≥ {self.degraded_at:g}%"
        return [
            Reading(
                id="memory",
                unit="bytes",
                capacity=float(capacity),
                usage=usage,
                details={
                    "total_bytes": memory.total_bytes,
                    "cgroup_limit_bytes": limit,
                    "host_used_bytes": memory.used_bytes,
                    "available_bytes": memory.available_bytes,
                    "pressure": None if psi is None else psi.to_dict(),
                },
                problem=problem,
                failed=failed,
            )
        ]

    def close(self) -> None:
        return None


def cgroup_usage(ctx: Context, limit: int) -> int | None:
    """Bytes charged to the cgroup whose memory limit is ``limit`` (the binding one, ours or an ancestor)."""
    from hypermesh.platform.linux.cgroup import _ancestors
    from hypermesh.platform.linux.files import read_int, read_str
    from hypermesh.platform.linux.procfs import parse_proc_cgroup

    root = f"{ctx.sys}/fs/cgroup"
    for hid, controllers, path in parse_proc_cgroup(read_str(f"{ctx.proc}/self/cgroup") or ""):
        if "memory" in controllers:
            mount, limit_file, usage_file = f"{root}/memory", "memory.limit_in_bytes", "memory.usage_in_bytes"
        elif hid == "0" and not controllers:
            unified = root if os.path.exists(f"{root}/cgroup.controllers") else f"{root}/unified"
            mount, limit_file, usage_file = unified, "memory.max", "memory.current"
        else:
            continue
        for directory in _ancestors(mount, path):
            if read_int(f"{directory}/{limit_file}") == limit:
                return read_int(f"{directory}/{usage_file}")
    return None
