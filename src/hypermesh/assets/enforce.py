"""Enforced grants: the allocation's process is put into a cgroup whose limits are the grant.

- cgroup v2: ``<cgroupfs>/hypermesh.slice/<allocation id>`` with ``cpu.max`` (quota per 100 ms period),
  ``memory.max`` and ``cpuset.cpus``; the controllers are enabled in the parents' ``cgroup.subtree_control``.
- cgroup v1: ``<controller>/hypermesh/<allocation id>`` under each of the cpu, memory and cpuset hierarchies:
  ``cpu.cfs_quota_us``/``cpu.cfs_period_us``, ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes``
  where swap accounting is on, so swapping out cannot exceed the grant), ``cpuset.cpus``/``cpuset.mems`` (a v1
  cpuset admits no task until both are set).

A CPU grant of 0.5 cores is a quota of 50 ms per 100 ms period: the CFS throttles the group once it has run that
long, whatever the host's load. A memory grant is a hard limit: the group reclaims its own pages, then the OOM
killer acts inside the group only, never on the host. The cpuset is the CPUs the CPU asset reports (the ones we
may use ourselves), so an enforced process is never moved onto CPUs outside our own binding.

Releasing moves any process still inside back to the hierarchy's root cgroup and removes the directories. GPUs,
storage and network have no cgroup controller that holds them to a share: enforcing those is refused as
unsupported, and their grants are bookkeeping.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os

from hypermesh.errors import InvalidInput, PermissionDenied, Unsupported

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hypermesh.assets.model import Allocation, Snapshot

__all__ = ["apply", "remove", "usage", "version"]

CGROUP_ROOT = "/sys/fs/cgroup"
PERIOD_US = 100_000
_V1 = ("cpu", "memory", "cpuset")


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def version(cgroup_root: str = CGROUP_ROOT) -> int:
    if os.path.exists(f"{cgroup_root}/cgroup.controllers"):
        return 2
    if all(os.path.isdir(f"{cgroup_root}/{c}") for c in _V1):
        return 1
    raise Unsupported("enforcing a grant", f"no cgroup v2 or v1 cpu/memory/cpuset hierarchy under {cgroup_root}")


def _limits(grant: Allocation, snap: Snapshot | None) -> dict[str, object]:
    """What the cgroup must hold the process to: cpu cores, memory bytes, and the CPUs it may run on."""
    cpus: list[int] = []
    if snap is not None:
        for asset in snap.find("cpu"):
            cpus = list(asset.details.get("cpus") or [])
    if grant.kind == "cpu":
        return {"cpu": grant.amount, "cpus": cpus}
    if grant.kind == "memory":
        return {"memory": int(grant.amount), "cpus": cpus}
    raise Unsupported(
        f"enforcing a {grant.kind} grant",
        "the kernel has no cgroup controller that holds a process to a share of it; the grant is bookkeeping only",
    )


def _v1_dirs(grant_id: str, cgroup_root: str) -> dict[str, str]:
    """{controller: directory}; cpuacct too where it is a hierarchy of its own (else it is cpu's, co-mounted)."""
    dirs = {c: f"{cgroup_root}/{c}/hypermesh/{grant_id}" for c in _V1}
    cpuacct = f"{cgroup_root}/cpuacct"
    if os.path.isdir(cpuacct) and os.path.realpath(cpuacct) != os.path.realpath(f"{cgroup_root}/cpu"):
        dirs["cpuacct"] = f"{cpuacct}/hypermesh/{grant_id}"
    return dirs


def _v2_dir(grant_id: str, cgroup_root: str) -> str:
    return f"{cgroup_root}/hypermesh.slice/{grant_id}"


def apply(grant: Allocation, snap: Snapshot | None = None, cgroup_root: str = CGROUP_ROOT) -> str:
    """Create the grant's cgroup, set its limits and move ``grant.pid`` into it; returns the cgroup's name."""
    if grant.pid is None:
        raise Unsupported("enforcing a grant without a pid", "pass --pid: the process to hold to the grant")
    if "/" in grant.id or grant.id in (".", ".."):
        # the id names the cgroup directory: "../x" would create (and later remove) one outside hypermesh/
        raise InvalidInput(
            f"an enforced allocation's id names its cgroup: {grant.id!r} may not contain '/' or be . or .."
        )
    limits = _limits(grant, snap)
    try:
        if version(cgroup_root) == 2:
            return _apply_v2(grant, limits, cgroup_root)
        return _apply_v1(grant, limits, cgroup_root)
    except PermissionError as exc:
        remove(grant.id, cgroup_root)
        raise PermissionDenied(
            f"cannot create the cgroup for allocation {grant.id}: {exc.strerror} ({exc.filename}); run as root",
            capability="CAP_SYS_ADMIN",
        ) from exc
    except OSError:
        remove(grant.id, cgroup_root)
        raise


def _quota_us(cores: float) -> int:
    # The kernel refuses quotas under 1 ms (kernel/sched/core.c min_cfs_quota_period)
    return max(1000, math.ceil(cores * PERIOD_US))


def _apply_v1(grant: Allocation, limits: dict[str, object], cgroup_root: str) -> str:
    dirs = _v1_dirs(grant.id, cgroup_root)
    for controller, d in dirs.items():
        parent = os.path.dirname(d)
        os.makedirs(d, exist_ok=True)
        if controller == "cpuset":
            # v1 cpusets start empty and admit no task until cpus and mems are set; the parent too
            root_cpus = _read(f"{cgroup_root}/cpuset/cpuset.cpus")
            root_mems = _read(f"{cgroup_root}/cpuset/cpuset.mems")
            for level in (parent, d):
                if not _read(f"{level}/cpuset.mems"):
                    _write(f"{level}/cpuset.mems", root_mems)
                if not _read(f"{level}/cpuset.cpus"):
                    _write(f"{level}/cpuset.cpus", root_cpus)
            cpus = limits.get("cpus")
            if isinstance(cpus, list) and cpus:
                _write(f"{d}/cpuset.cpus", ",".join(map(str, cpus)))
    cores = limits.get("cpu")
    if isinstance(cores, float):
        _write(f"{dirs['cpu']}/cpu.cfs_period_us", str(PERIOD_US))
        _write(f"{dirs['cpu']}/cpu.cfs_quota_us", str(_quota_us(cores)))
    memory = limits.get("memory")
    if isinstance(memory, int):
        _write(f"{dirs['memory']}/memory.limit_in_bytes", str(memory))
        if os.path.exists(f"{dirs['memory']}/memory.memsw.limit_in_bytes"):
            _write(f"{dirs['memory']}/memory.memsw.limit_in_bytes", str(memory))
    for d in dirs.values():
        _write(f"{d}/cgroup.procs", str(grant.pid))
    return f"hypermesh/{grant.id}"


def _apply_v2(grant: Allocation, limits: dict[str, object], cgroup_root: str) -> str:
    d = _v2_dir(grant.id, cgroup_root)
    slice_dir = os.path.dirname(d)
    os.makedirs(d, exist_ok=True)
    for level in (cgroup_root, slice_dir):
        available = _read(f"{level}/cgroup.controllers").split()
        wanted = [c for c in ("cpu", "memory", "cpuset") if c in available]
        _write(f"{level}/cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
    cores = limits.get("cpu")
    if isinstance(cores, float):
        _write(f"{d}/cpu.max", f"{_quota_us(cores)} {PERIOD_US}")
    memory = limits.get("memory")
    if isinstance(memory, int):
        _write(f"{d}/memory.max", str(memory))
        if os.path.exists(f"{d}/memory.swap.max"):
            _write(f"{d}/memory.swap.max", "0")
    cpus = limits.get("cpus")
    if isinstance(cpus, list) and cpus and os.path.exists(f"{d}/cpuset.cpus"):
        _write(f"{d}/cpuset.cpus", ",".join(map(str, cpus)))
    _write(f"{d}/cgroup.procs", str(grant.pid))
    return f"hypermesh.slice/{grant.id}"


def remove(grant_id: str, cgroup_root: str = CGROUP_ROOT) -> None:
    """Move any process left in the grant's cgroup(s) to the hierarchy root and remove them; absent is fine."""
    if os.path.exists(f"{cgroup_root}/cgroup.controllers"):
        targets = [(_v2_dir(grant_id, cgroup_root), cgroup_root)]
    else:
        targets = [(d, f"{cgroup_root}/{c}") for c, d in _v1_dirs(grant_id, cgroup_root).items()]
    for d, root in targets:
        if not os.path.isdir(d):
            continue
        try:
            pids = _read(f"{d}/cgroup.procs").split()
        except FileNotFoundError:
            continue
        for pid in pids:
            try:
                _write(f"{root}/cgroup.procs", pid)
            except OSError as exc:
                if exc.errno != errno.ESRCH:  # exited meanwhile: nothing to move
                    raise
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(d)


def usage(enforced: str, cgroup_root: str = CGROUP_ROOT) -> dict[str, float]:
    """What an enforced allocation's cgroup uses now: cpu_seconds (cumulative) and memory_bytes."""
    out: dict[str, float] = {}
    if enforced.startswith("hypermesh.slice/"):
        d = f"{cgroup_root}/{enforced}"
        stat = dict(line.split() for line in _read(f"{d}/cpu.stat").splitlines())
        out["cpu_seconds"] = int(stat["usage_usec"]) / 1e6
        out["memory_bytes"] = float(_read(f"{d}/memory.current"))
    else:
        out["cpu_seconds"] = int(_read(f"{cgroup_root}/cpuacct/{enforced}/cpuacct.usage")) / 1e9
        out["memory_bytes"] = float(_read(f"{cgroup_root}/memory/{enforced}/memory.usage_in_bytes"))
    return out
