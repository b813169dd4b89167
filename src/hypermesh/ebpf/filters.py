"""What the built-in tracing programs filter on in the kernel: a process (``--pid``) and a cgroup
(``--cgroup``), checked here before anything is loaded so a typo is a clear error, not an empty result.

The cgroup filter is a BPF_MAP_TYPE_CGROUP_ARRAY holding the cgroup directory's fd; the programs ask
``bpf_current_task_under_cgroup()``, which matches that cgroup and every cgroup below it. Chosen over
comparing ``bpf_get_current_cgroup_id()``, which matches one cgroup exactly (a service's child cgroups
would be missed). Both look at the cgroup v2 hierarchy only: on a host with v1 controllers, the path
must be on a cgroup2 mount (systemd's hybrid layout has one at /sys/fs/cgroup/unified).
"""

from __future__ import annotations

import errno
import os
import struct

from hypermesh.errors import BackendError, InvalidInput, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hypermesh.ebpf.maps import Map

__all__ = ["cgroup2_mounts", "check_cgroup", "check_process", "positive_int_or_none", "set_cgroup_filter"]

CGROUP2_MOUNT_HINT = "mount -t cgroup2 none /sys/fs/cgroup/unified"


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


def cgroup2_mounts() -> list[str]:
    """Where cgroup2 is mounted in this mount namespace (/proc/self/mounts)."""
    try:
        with open("/proc/self/mounts") as f:
            return [line.split()[1] for line in f if line.split()[2:3] == ["cgroup2"]]
    except OSError:
        return []


def _where_v2() -> str:
    mounts = cgroup2_mounts()
    if mounts:
        return f"the cgroup v2 hierarchy is mounted at {', '.join(mounts)}: give a directory under it"
    return f"no cgroup v2 hierarchy is mounted: {CGROUP2_MOUNT_HINT}, then give a directory under it"


def check_cgroup(path: object) -> str:
    """``path`` as given, once it names a directory (the kernel says whether it is a v2 cgroup)."""
    if not isinstance(path, str) or not path:
        raise InvalidInput(f"cgroup must be the path of a cgroup v2 directory, got {path!r}")
    if not os.path.exists(path):
        raise NotFound(f"no such cgroup directory: {path}")
    if not os.path.isdir(path):
        raise InvalidInput(f"{path} is not a directory: --cgroup takes a cgroup v2 directory; {_where_v2()}")
    return path


def set_cgroup_filter(cgroup_map: Map, path: str) -> None:
    """Put the cgroup at ``path`` into slot 0 of the program's CGROUP_ARRAY ``cgroup_map``. The kernel
    takes its own reference to the cgroup; the fd is closed again here."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise NotFound(f"no such cgroup directory: {path}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot open cgroup {path}: {exc.strerror}") from None
    try:
        rc = cgroup_map.try_update(struct.pack("<I", 0), struct.pack("<I", fd))
    finally:
        os.close(fd)
    # The kernel says EBADF for a directory that is not a cgroup, or a cgroup of a v1 hierarchy.
    if rc == -errno.EBADF:
        raise InvalidInput(f"{path} is not a cgroup v2 directory: {_where_v2()}")
    if rc != 0:
        raise BackendError(f"setting the cgroup filter to {path}: {os.strerror(-rc)}")
