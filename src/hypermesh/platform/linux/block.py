"""Block devices from /sys/block and their mounts from /proc/self/mountinfo.

Whole devices only (partitions fold into their disk's mounts). loop and ram devices are listed only when they back
a mount: an idle loop0..7 is noise, a squashfs-mounted loop is storage someone uses. zram devices are listed when
mounted or configured (a non-zero disksize, as zram swap has): an unconfigured zram0 of size 0 is noise too.
"""

from __future__ import annotations

import os

from hypermesh.model import Mount, StorageDevice
from hypermesh.platform.linux.files import listdir, read_int, read_str
from hypermesh.platform.linux.mounts import parse_mountinfo
from hypermesh.platform.linux.procfs import SECTOR_BYTES

__all__ = ["sample_disk_names", "storage_devices"]

# Pseudo devices that only count when mounted; zram also when configured (size > 0).
_ON_DEMAND_PREFIXES = ("loop", "ram", "zram")
_VIRTUAL_PREFIXES = ("vd", "xvd", "dm-", "md", "zram", "nbd", "rbd", "loop", "ram")


def _dev(sys_block_dir: str) -> tuple[int, int] | None:
    text = read_str(f"{sys_block_dir}/dev")
    if not text or ":" not in text:
        return None
    major, _, minor = text.partition(":")
    return int(major), int(minor)


def kind_of(name: str, rotational: bool | None) -> str:
    """nvme | virtual | hdd | ssd, from the kernel's name and queue/rotational."""
    if name.startswith("nvme"):
        return "nvme"
    if name.startswith(_VIRTUAL_PREFIXES):
        return "virtual"
    return "hdd" if rotational else "ssd"


def block_tree(sys_root: str) -> dict[str, list[tuple[str, tuple[int, int]]]]:
    """{disk: [(name, (major, minor)) of the disk and each of its partitions]} for every entry of /sys/block."""
    disks: dict[str, list[tuple[str, tuple[int, int]]]] = {}
    for name in sorted(listdir(f"{sys_root}/block")):
        d = f"{sys_root}/block/{name}"
        ids = [(name, dev)] if (dev := _dev(d)) else []
        ids.extend(
            (child, p) for child in listdir(d) if child.startswith(name) and (p := _dev(f"{d}/{child}")) is not None
        )
        disks[name] = ids
    return disks


def whole_disks(sys_root: str) -> dict[str, list[tuple[int, int]]]:
    """{disk: [(major, minor) of the disk and each of its partitions]} for every entry of /sys/block."""
    return {disk: [dev for _name, dev in ids] for disk, ids in block_tree(sys_root).items()}


def _mounts(
    mountinfo: str, tree: dict[str, list[tuple[str, tuple[int, int]]]]
) -> list[tuple[tuple[int, int], str, str]]:
    """[((major, minor) of the block device, mountpoint, fstype)] for every mount a block device backs.

    Major 0 is the anonymous major (tmpfs, proc, overlay...), but btrfs also hands each mount an anonymous device
    number (subvolumes): for those the source, "/dev/sda2" or "/dev/mapper/luks-..." (a link to dm-N), names the
    block device.
    """
    by_name = {name: dev for ids in tree.values() for name, dev in ids}
    out = []
    for m in parse_mountinfo(mountinfo):
        if m.major != 0:
            out.append(((m.major, m.minor), m.mountpoint, m.fstype))
        elif m.source.startswith("/dev/") and (dev := by_name.get(os.path.basename(os.path.realpath(m.source)))):
            out.append((dev, m.mountpoint, m.fstype))
    return out


def storage_devices(sys_root: str, mountinfo: str, statvfs_root: str | None) -> list[StorageDevice]:
    """Whole block devices with their mounts.

    ``statvfs_root`` prefixes mountpoints for os.statvfs ("" on a live system); None skips sizes (fixture trees).
    """
    tree = block_tree(sys_root)
    by_dev: dict[tuple[int, int], list[tuple[str, str]]] = {}
    for dev, mountpoint, fstype in _mounts(mountinfo, tree):
        by_dev.setdefault(dev, []).append((mountpoint, fstype))

    devices = []
    for name, named_ids in tree.items():
        ids = [dev for _name, dev in named_ids]
        mounted = [m for dev_id in ids for m in by_dev.get(dev_id, ())]
        d = f"{sys_root}/block/{name}"
        sectors = read_int(f"{d}/size")
        if not mounted and not _in_use_unmounted(name, sectors):
            continue
        rot = read_int(f"{d}/queue/rotational")
        removable = read_int(f"{d}/removable")
        rotational = None if rot is None else bool(rot)
        devices.append(
            StorageDevice(
                name=name,
                model=read_str(f"{d}/device/model") or None,
                size_bytes=None if sectors is None else sectors * SECTOR_BYTES,
                rotational=rotational,
                removable=None if removable is None else bool(removable),
                kind=kind_of(name, rotational),
                mounts=tuple([_mount(mp, fs, statvfs_root) for mp, fs in sorted(mounted)]),
            )
        )
    return devices


def _in_use_unmounted(name: str, sectors: int | None) -> bool:
    """Whether a device that backs no mount is still worth listing: any real disk; a configured zram."""
    if name.startswith("zram"):
        return bool(sectors)
    return not name.startswith(_ON_DEMAND_PREFIXES)


def _mount(mountpoint: str, fstype: str, statvfs_root: str | None) -> Mount:
    total = free = None
    if statvfs_root is not None:
        try:
            st = os.statvfs(statvfs_root + mountpoint)
        except OSError:
            pass
        else:
            # f_bavail, not f_bfree: what an unprivileged writer can still use, as df reports it.
            total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
    return Mount(mountpoint=mountpoint, fstype=fstype, total_bytes=total, free_bytes=free)


def sample_disk_names(sys_root: str, mountinfo: str) -> frozenset[bytes]:
    """Names /proc/diskstats lines are kept for: the same whole devices the profile lists.

    Encoded back as os.listdir decoded them (surrogateescape), so a name that is not UTF-8 is the kernel's bytes.
    """
    tree = block_tree(sys_root)
    mounted = {dev for dev, _mountpoint, _fstype in _mounts(mountinfo, tree)}
    return frozenset(
        name.encode(errors="surrogateescape")
        for name, ids in tree.items()
        if mounted.intersection(dev for _n, dev in ids)
        or _in_use_unmounted(name, read_int(f"{sys_root}/block/{name}/size") if name.startswith("zram") else None)
    )
