"""A cgroup directory as an in-kernel filter sees it: hierarchy, depth and kernfs id. The one check of every
``--cgroup`` (syscalls, execsnoop, execguard, profile), so each says what is wrong with a path in the same words.

A BPF program recognises a cgroup by its kernfs node id, which is the directory's inode number on
64-bit kernels (``kernfs_id_ino``). Which cgroup of a task to compare depends on the hierarchy the
directory belongs to: the unified (v2) one, or one of the v1 hierarchies, named by the id that
/proc/cgroups gives each controller. A task is "under" the target when its cgroup's ancestor at the
target's depth is the target, which is why the depth is part of the answer.

The programs that ask ``bpf_current_task_under_cgroup()`` (syscalls, execsnoop, execguard) see the v2
hierarchy only, like every BPF cgroup helper: they resolve with ``v2_only``, and a v1 directory is refused
with where v2 is mounted (systemd's hybrid layout has it at /sys/fs/cgroup/unified). The profiler walks
the task's css_set itself and takes v1 controller hierarchies too. Named v1 hierarchies without a
controller (``name=systemd``) are not reachable from a task's css_set without walking its links, so they
are refused with the alternatives.
"""

from __future__ import annotations

import os

from hypermesh.errors import InvalidInput, NotFound
from hypermesh.model import Record, record
from hypermesh.platform.linux.mounts import MountEntry, parse_mountinfo

__all__ = ["CGROUP2_MOUNT_HINT", "CgroupTarget", "cgroup2_mounts", "resolve_cgroup", "where_v2"]

CGROUP_V2, CGROUP_V1 = 1, 2
CGROUP2_MOUNT_HINT = "mount -t cgroup2 none /sys/fs/cgroup/unified"
ANY_HIERARCHY = (
    "give a directory under /sys/fs/cgroup (a v1 controller's hierarchy such as /sys/fs/cgroup/cpu/NAME, "
    "or a cgroup2 mount)"
)


@record
class CgroupTarget(Record):
    path: str
    version: int  # 1 or 2
    hierarchy_id: int  # v1: /proc/cgroups' hierarchy column; v2: 0
    level: int  # depth below the hierarchy's root (the root itself is 0)
    cgroup_id: int  # kernfs id == inode number

    @property
    def mode(self) -> int:
        return CGROUP_V2 if self.version == 2 else CGROUP_V1


def _mounts(proc: str) -> list[MountEntry]:
    """Every mount in /proc/self/mountinfo, its paths spelt as os.realpath spells the paths they are compared with
    (surrogateescape for bytes that are not UTF-8)."""
    with open(os.path.join(proc, "self", "mountinfo"), "rb") as f:
        return parse_mountinfo(f.read().decode(errors="surrogateescape"))


def cgroup2_mounts(proc: str = "/proc") -> list[str]:
    """Where cgroup2 is mounted in this mount namespace."""
    try:
        return [m.mountpoint for m in _mounts(proc) if m.fstype == "cgroup2"]
    except OSError:
        return []


def where_v2(proc: str = "/proc") -> str:
    """The fix for a path that is not a cgroup v2 directory: where to find one, or how to mount the hierarchy."""
    mounts = cgroup2_mounts(proc)
    if mounts:
        return f"the cgroup v2 hierarchy is mounted at {', '.join(mounts)}: give a directory under it"
    return f"no cgroup v2 hierarchy is mounted: {CGROUP2_MOUNT_HINT}, then give a directory under it"


def resolve_cgroup(path: object, *, v2_only: bool = False, proc: str = "/proc") -> CgroupTarget:
    """``path`` as a cgroup directory, or the one-line error that names what it is instead and what to give.
    ``v2_only``: refuse a v1 directory (for the BPF cgroup helpers, which see the v2 hierarchy only)."""

    def fix() -> str:
        return where_v2(proc) if v2_only else ANY_HIERARCHY

    if not isinstance(path, str) or not path:
        raise InvalidInput(f"--cgroup takes the path of a cgroup directory, got {path!r}: {fix()}")
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise NotFound(f"no such cgroup directory: {path} (create it: mkdir {path})") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read the cgroup directory {path}: {exc.strerror}") from None
    if not os.path.isdir(real):
        raise InvalidInput(f"{path} is not a directory: {fix()}")
    best: MountEntry | None = None  # the deepest mount holding the path (a later mount over another wins)
    for mount in _mounts(proc):
        point = mount.mountpoint
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.mountpoint)):
            best = mount
    if best is None or best.fstype not in ("cgroup", "cgroup2"):
        raise InvalidInput(f"{path} is not in a cgroup file system: {fix()}")
    point, root, fstype, options = best.mountpoint, best.root, best.fstype, best.super_options
    if v2_only and fstype != "cgroup2":
        raise InvalidInput(f"{path} is a cgroup v1 directory, and BPF sees cgroup v2 only: {fix()}")
    relative = os.path.relpath(real, point)
    inside_root = os.path.normpath(os.path.join(root, "" if relative == "." else relative))
    level = len([p for p in inside_root.split("/") if p])
    if fstype == "cgroup2":
        return CgroupTarget(path=real, version=2, hierarchy_id=0, level=level, cgroup_id=st.st_ino)
    hierarchies = _hierarchy_ids(proc)
    controllers = [o for o in options.split(",") if o in hierarchies]
    if not controllers:
        named = next((o for o in options.split(",") if o.startswith("name=")), "no controller")
        raise InvalidInput(
            f"{path} is on a v1 hierarchy with no controller ({named}), which an in-kernel filter cannot "
            "see: give the same group under a controller's hierarchy (e.g. /sys/fs/cgroup/cpu/...) or "
            "a cgroup2 directory"
        )
    return CgroupTarget(
        path=real, version=1, hierarchy_id=hierarchies[controllers[0]], level=level, cgroup_id=st.st_ino
    )


def _hierarchy_ids(proc: str) -> dict[str, int]:
    """Controller name -> its v1 hierarchy id, from /proc/cgroups (0: bound to v2 or unmounted)."""
    out: dict[str, int] = {}
    try:
        with open(os.path.join(proc, "cgroups")) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 2 and not line.startswith("#") and fields[1].isdigit() and int(fields[1]):
                    out[fields[0]] = int(fields[1])
    except OSError:
        pass
    return out
