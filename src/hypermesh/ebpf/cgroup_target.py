"""A cgroup directory as an in-kernel filter sees it: hierarchy, depth and kernfs id.

A BPF program recognises a cgroup by its kernfs node id, which is the directory's inode number on
64-bit kernels (``kernfs_id_ino``). Which cgroup of a task to compare depends on the hierarchy the
directory belongs to: the unified (v2) one, or one of the v1 hierarchies, named by the id that
/proc/cgroups gives each controller. A task is "under" the target when its cgroup's ancestor at the
target's depth is the target, which is why the depth is part of the answer.

Named v1 hierarchies without a controller (``name=systemd``) are not reachable from a task's
css_set without walking its links, so they are refused with the alternatives.
"""

from __future__ import annotations

import os

from hypermesh.errors import InvalidInput, NotFound
from hypermesh.model import Record, record

__all__ = ["CgroupTarget", "resolve_cgroup"]

CGROUP_V2, CGROUP_V1 = 1, 2


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


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...)
    return field.encode().decode("unicode_escape") if "\\" in field else field


def resolve_cgroup(path: str, proc: str = "/proc") -> CgroupTarget:
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise NotFound(f"no such cgroup directory: {path}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    if not os.path.isdir(real):
        raise InvalidInput(f"{path} is not a directory: give a cgroup directory such as /sys/fs/cgroup/cpu/NAME")
    best: tuple[str, str, str, str] | None = None  # mount point, root, fstype, super options
    with open(os.path.join(proc, "self", "mountinfo")) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            if len(fields) < 5 or len(tail) < 3:
                continue
            point = _unescape(fields[4])
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and (best is None or len(point) >= len(best[0])):
                best = (point, _unescape(fields[3]), tail[0], tail[2])
    if best is None or best[2] not in ("cgroup", "cgroup2"):
        raise InvalidInput(
            f"{path} is not in a cgroup file system: give a directory under /sys/fs/cgroup "
            "(a v1 controller's hierarchy such as /sys/fs/cgroup/cpu/NAME, or a cgroup2 mount)"
        )
    point, root, fstype, options = best
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
