"""Filesystems of the agent's node stats: which mounts count, and statvfs(3) that a hung mount cannot hang.

The mount table comes from mounts.parse_mountinfo; this module decides which of its entries are real filesystems
(node_exporter's rule) and asks each for its sizes, network and FUSE mounts through a worker thread with a limit.
"""

from __future__ import annotations

import os
import queue
import threading

from hypermesh.model import FilesystemStats

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hypermesh.platform.linux.mounts import MountEntry

__all__ = ["StatvfsWorker", "filesystem_stats", "may_hang", "real_filesystems"]

# Like node_exporter's defaults: pseudo and kernel-internal filesystems carry no capacity worth alerting on,
# and mounts under these directories are the system's plumbing or removable media.
PSEUDO_FSTYPES = frozenset(
    [
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devpts",
        "devtmpfs",
        "fusectl",
        "hugetlbfs",
        "iso9660",
        "mqueue",
        "nsfs",
        "overlay",
        "proc",
        "procfs",
        "pstore",
        "rpc_pipefs",
        "securityfs",
        "selinuxfs",
        "squashfs",
        "sysfs",
        "tracefs",
    ]
)
EXCLUDED_MOUNT_DIRS = ("/dev", "/proc", "/run", "/sys", "/mnt", "/media")
EXCLUDED_MOUNT_PREFIXES = ("/var/lib/docker/", "/var/lib/containers/storage/")


def real_filesystems(entries: list[MountEntry]) -> list[MountEntry]:
    """The mounts of real filesystems, each at its mountpoint's first place in mountinfo; a mountpoint listed twice
    (mounted over) keeps its last, visible entry."""
    mounts: dict[str, MountEntry] = {}
    for entry in entries:
        mountpoint = entry.mountpoint
        if entry.fstype in PSEUDO_FSTYPES or mountpoint.startswith(EXCLUDED_MOUNT_PREFIXES):
            continue
        if any(mountpoint == d or mountpoint.startswith(d + "/") for d in EXCLUDED_MOUNT_DIRS):
            continue
        mounts[mountpoint] = entry
    return list(mounts.values())


# How long one statvfs call of a network or FUSE mount may take. A hard NFS mount of a dead server blocks statvfs in
# the kernel for good: past this the mount being asked is "stuck", reported as a device error and not asked again
# until that call returns (node_exporter's --collector.filesystem.mount-timeout, 5 s there).
STATVFS_TIMEOUT_S = 1.0
# Filesystems whose statvfs waits on a server or a user-space daemon; only these go through StatvfsWorker (local ones
# answer from memory, and the hand-over to a thread would cost more than all their calls together).
NETWORK_FSTYPES = frozenset(
    [
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "ceph",
        "glusterfs",
        "9p",
        "afs",
        "coda",
        "lustre",
        "gpfs",
        "beegfs",
        "orangefs",
        "davfs",
        "virtiofs",
    ]
)


def may_hang(fstype: str) -> bool:
    return fstype in NETWORK_FSTYPES or fstype.startswith("fuse")


class _StatvfsJob:
    __slots__ = ("abandoned", "current", "done", "paths", "results")

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.results: dict[str, os.statvfs_result | None] = {}
        self.current: str | None = None
        self.abandoned = False
        self.done = threading.Event()


class StatvfsWorker:
    """statvfs(3) of mounts in a worker thread, so that a hung mount cannot hang the reader (and the agent with it).

    One thread does a read's calls in a row (one hand-over per read, not one per mount). When a call does not return
    within the limit (no progress for ``timeout_s``), the path being asked is stuck: the thread is left to it, and
    the next read gets a new thread and skips the stuck path until its call returns (the left thread then ends).
    At most one thread per stuck mount.
    """

    def __init__(self, timeout_s: float = STATVFS_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._stuck: set[str] = set()
        self._queue: queue.SimpleQueue[_StatvfsJob | None] | None = None

    def stat(self, paths: list[str]) -> dict[str, os.statvfs_result | None]:
        """path -> statvfs result, or None where it failed, is stuck, or was not reached in time."""
        with self._lock:
            todo = [p for p in paths if p not in self._stuck]
        if not todo:
            return {}
        if self._queue is None:
            self._queue = queue.SimpleQueue()
            threading.Thread(target=self._run, args=(self._queue,), name="hypermesh-statvfs", daemon=True).start()
        job = _StatvfsJob(todo)
        self._queue.put(job)
        answered = 0
        while not job.done.wait(self.timeout_s):  # the limit is per call: slow but moving mounts are waited for
            with self._lock:
                if job.done.is_set():
                    break
                if len(job.results) > answered:
                    answered = len(job.results)
                    continue
                job.abandoned = True
                if job.current is not None:
                    self._stuck.add(job.current)
                self._queue = None  # that thread is blocked: the next read starts another
                break
        with self._lock:
            return dict(job.results)

    def _run(self, jobs: queue.SimpleQueue[_StatvfsJob | None]) -> None:
        while (job := jobs.get()) is not None:
            for path in job.paths:
                with self._lock:
                    if job.abandoned:
                        break
                    job.current = path
                try:
                    result: os.statvfs_result | None = os.statvfs(path)
                except OSError:
                    result = None
                with self._lock:
                    self._stuck.discard(path)
                    if job.abandoned:
                        return  # the reader gave up on this thread while it was blocked: a newer one serves it
                    job.results[path] = result
            with self._lock:
                job.current = None
                job.done.set()

    def close(self) -> None:
        if self._queue is not None:
            self._queue.put(None)
            self._queue = None


def filesystem_stats(
    device: str, mountpoint: str, fstype: str, readonly: bool, st: os.statvfs_result | None
) -> FilesystemStats:
    """Sizes from statvfs(3): f_frsize units for blocks; f_bfree counts root's reserve, f_bavail does not."""
    if st is None:
        return FilesystemStats(device, mountpoint, fstype, 0, 0, 0, 0, 0, readonly, True)
    unit = st.f_frsize or st.f_bsize
    return FilesystemStats(
        device=device,
        mountpoint=mountpoint,
        fstype=fstype,
        size_bytes=st.f_blocks * unit,
        free_bytes=st.f_bfree * unit,
        available_bytes=st.f_bavail * unit,
        files=st.f_files,
        files_free=st.f_ffree,
        # Not statvfs's ST_RDONLY: that is this process's view, read-only everywhere under a hardened unit
        # (systemd's ProtectSystem=strict), which would call every filesystem read-only (node_exporter reads the
        # mount table alike).
        readonly=readonly,
        error=False,
    )
