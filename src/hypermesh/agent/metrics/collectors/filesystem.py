"""statvfs of each real mounted filesystem (pseudo filesystems and /dev, /proc, /run, /sys... left out)."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, gauge
from hypermesh.agent.metrics.scrape import Scrape

__all__ = ["FilesystemCollector"]

# FilesystemStats attribute -> its description.
_COLUMNS = tuple(
    (field, gauge(name, f"{text} (statvfs)", unit))
    for field, name, text, unit in (
        ("size_bytes", "hypermesh_filesystem_size_bytes", "Size of the filesystem.", "bytes"),
        ("free_bytes", "hypermesh_filesystem_free_bytes", "Free space, root's reserve included.", "bytes"),
        (
            "available_bytes",
            "hypermesh_filesystem_avail_bytes",
            "Space available to unprivileged users (what df calls Avail).",
            "bytes",
        ),
        ("files", "hypermesh_filesystem_files", "Inodes of the filesystem.", ""),
        ("files_free", "hypermesh_filesystem_files_free", "Free inodes.", ""),
    )
)
READONLY = gauge("hypermesh_filesystem_readonly", "1 if the filesystem is mounted read-only.")
DEVICE_ERROR = gauge("hypermesh_filesystem_device_error", "1 if statvfs failed on the mount (e.g. a stale NFS server).")


class FilesystemCollector:
    area = "filesystem"
    reads_node_stats = True

    def collect(self, scrape: Scrape) -> list[Family]:
        filesystems = sorted(scrape.node_stats.filesystems, key=lambda f: f.mountpoint)
        labels = [(("device", f.device), ("fstype", f.fstype), ("mountpoint", f.mountpoint)) for f in filesystems]
        families = []
        for field, desc in _COLUMNS:
            family = desc.family()
            for fs, label in zip(filesystems, labels, strict=True):
                if not fs.error:
                    family.samples.append((label, float(getattr(fs, field))))
            families.append(family)
        readonly = READONLY.family()
        error = DEVICE_ERROR.family()
        for fs, label in zip(filesystems, labels, strict=True):
            readonly.samples.append((label, 1.0 if fs.readonly else 0.0))
            error.samples.append((label, 1.0 if fs.error else 0.0))
        families.extend((readonly, error))
        return families
