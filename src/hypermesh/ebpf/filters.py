"""What the built-in programs filter on in the kernel: a process (``--pid``, checked here) and a cgroup
(``--cgroup``, checked by ``cgroup_target.resolve_cgroup``), both before anything is loaded so a typo is a
clear error, not an empty result.

The cgroup filter (syscalls, execsnoop, execguard) is a BPF_MAP_TYPE_CGROUP_ARRAY holding the cgroup
directory's fd, set by ``set_cgroup_filter``; the programs ask
``bpf_current_task_under_cgroup()``, which matches that cgroup and every cgroup below it. Chosen over
comparing ``bpf_get_current_cgroup_id()``, which matches one cgroup exactly (a service's child cgroups
would be missed). Both look at the cgroup v2 hierarchy only: on a host with v1 controllers, the path
must be on a cgroup2 mount (systemd's hybrid layout has one at /sys/fs/cgroup/unified).
"""

from __future__ import annotations

import errno
import os
import struct

from hypermesh.ebpf.cgroup_target import resolve_cgroup, where_v2
from hypermesh.errors import BackendError, InvalidInput, NotFound, PermissionDenied

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hypermesh.ebpf.maps import Map
    from hypermesh.ebpf.object import Collection

__all__ = ["check_cgroup", "check_process", "positive_int_or_none", "set_cgroup_filter", "set_filters"]


def positive_int_or_none(name: str, value: object) -> int | None:
    """The API's own check of what the CLI's parser refuses: a top of -1 dropped the last row and 0
    returned nothing, a pid of "1" (a str) gave "1 is a thread of process 1"."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an int >= 1 or None, got {type(value).__name__} {value!r}")
    if value < 1:
        raise InvalidInput(f"{name} must be >= 1, got {value}")
    return value


def check_process(pid: int) -> None:
    """``pid`` must name a running process, not one of its threads: the kernel-side filters compare
    the thread group id, so a thread's id (it has a /proc entry too) would match nothing at all."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            tgid = next((int(line.split()[1]) for line in f if line.startswith(b"Tgid:")), pid)
    except (FileNotFoundError, ProcessLookupError):
        raise NotFound(f"no process with pid {pid}") from None
    except OSError:
        return  # unreadable here (hidepid): let the filter run as asked
    if tgid != pid:
        raise InvalidInput(
            f"{pid} is a thread of process {tgid}, not a process: --pid counts whole processes; use --pid {tgid}"
        )


def check_cgroup(path: str) -> str:
    """``path`` as given, once ``resolve_cgroup`` finds a cgroup v2 directory there (else its error)."""
    resolve_cgroup(path, v2_only=True)
    return path


def set_cgroup_filter(cgroup_map: Map, path: str) -> None:
    """Put the cgroup at ``path`` into slot 0 of the program's CGROUP_ARRAY ``cgroup_map``. The kernel
    takes its own reference to the cgroup; the fd is closed again here."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:  # checked before the load, removed since
        raise NotFound(f"no such cgroup directory: {path} (create it: mkdir {path})") from None
    except PermissionError:
        raise PermissionDenied(f"cannot open the cgroup {path}: run as root") from None
    except OSError as exc:
        raise InvalidInput(f"cannot open the cgroup {path}: {exc.strerror}") from None
    try:
        rc = cgroup_map.try_update(struct.pack("<I", 0), struct.pack("<I", fd))
    finally:
        os.close(fd)
    # The kernel says EBADF for a directory that is not a cgroup, or a cgroup of a v1 hierarchy.
    if rc == -errno.EBADF:
        raise InvalidInput(f"{path} is not a cgroup v2 directory: {where_v2()}")
    if rc != 0:
        raise BackendError(f"setting the cgroup filter to {path}: {os.strerror(-rc)}")


def set_filters(collection: Collection, config_map: str, pid: int | None, cgroup: str | None) -> None:
    """The --pid and --cgroup filters of syscalls and execsnoop: slot 0 of ``config_map`` holds their
    ``{pid, use_cgroup}`` filter struct, ``cgroup_filter`` the cgroup. The kernel zeroes a new array's
    values, so with no filter slot 0 already lets everything through and nothing is written."""
    if cgroup is not None:
        set_cgroup_filter(collection.map("cgroup_filter"), cgroup)
    if pid is not None or cgroup is not None:
        config = struct.pack("<II", pid or 0, cgroup is not None)
        collection.map(config_map).update(struct.pack("<I", 0), config)
