"""CPU as an asset: the cores this process may run on, in cores.

Capacity is the tighter of the CPUs the scheduler lets us use (sched_getaffinity: the cpuset of our cgroup and any
taskset binding) and the cgroup CPU quota (cfs_quota/cfs_period on v1, cpu.max on v2, tightest up the ancestry):
a container given 2.5 CPUs of a 64-core host has 2.5 cores, a job pinned to CPUs 0-3 has 4.
"""

from __future__ import annotations

import os

from hypermesh.assets.base import Context, Reading

__all__ = ["CpuAdapter"]


def bound_cpus() -> list[int] | None:
    """The CPUs this process may run on, or None where the OS does not say (macOS)."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is not None:
        return sorted(getaffinity(0))
    try:
        import psutil

        return sorted(psutil.Process().cpu_affinity() or [])
    except (ImportError, AttributeError, OSError):
        return None


def quota_cores(ctx: Context) -> float | None:
    """The cgroup CPU quota that binds this process, in cores (Linux; None elsewhere or without one)."""
    if not os.path.isdir(f"{ctx.proc}/self"):
        return None
    from hypermesh.platform.linux import cgroup

    return cgroup.limits(ctx.proc, ctx.sys).cpu_quota_cores


class CpuAdapter:
    kind = "cpu"

    def read(self, ctx: Context) -> list[Reading]:
        sample = ctx.need_sample()
        per_core = sample.cpu.per_core
        cpus = bound_cpus()
        if cpus is None:
            cpus = list(range(len(per_core)))
        quota = quota_cores(ctx)
        capacity = float(len(cpus)) if quota is None else min(float(len(cpus)), quota)
        # per_core is in online-CPU order: entry N is cpuN while every CPU is online (the CpuSample contract)
        busy = [per_core[c] for c in cpus if c < len(per_core)]
        return [
            Reading(
                id="cpu",
                unit="cores",
                capacity=capacity,
                usage=round(sum(busy) / 100.0, 4),
                details={
                    "cpus": cpus,
                    "quota_cores": quota,
                    "online_cores": len(per_core),
                    "per_core_percent": per_core,
                    "percent": sample.cpu.percent,
                },
            )
        ]

    def close(self) -> None:
        return None
