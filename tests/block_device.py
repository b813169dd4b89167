"""A real block device for tests that need one, on any machine: a loop device over a file in the test's tmp_path.

In a container or a chroot / sits on an overlay with no block device behind it, and /var/tmp with it, so a test that
wrote "to the disk under /var/tmp" had nothing to watch. A loop device is a block device of the kernel's own (blk-mq,
diskstats, block tracepoints) wherever losetup and /dev/loop-control exist.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import require_binary, require_root


def make_loop_device(tmp_path: Path, mkfs: list[str], size: int) -> Iterator[str]:
    """A loop device over a ``size``-byte image formatted by ``mkfs``; detached afterwards."""
    require_root()
    require_binary("losetup")
    require_binary(mkfs[0])
    image = os.path.join(str(tmp_path), "disk.img")
    with open(image, "wb") as f:
        f.truncate(size)
    subprocess.run([*mkfs, image], check=True, capture_output=True)
    device = subprocess.run(["losetup", "-f", "--show", image], capture_output=True, text=True, check=True)
    try:
        yield device.stdout.strip()
    finally:
        subprocess.run(["losetup", "-d", device.stdout.strip()], check=False)


@contextlib.contextmanager
def mounted_block_device(tmp_path: Path, size: int = 64 * 1024**2) -> Iterator[Path]:
    """A directory on an ext4 loop device, mounted for the test and unmounted after."""
    with contextlib.contextmanager(make_loop_device)(tmp_path, ["mkfs.ext4", "-q", "-F"], size) as device:
        mountpoint = tmp_path / "blockdev"
        mountpoint.mkdir()
        subprocess.run(["mount", device, str(mountpoint)], check=True, capture_output=True)
        try:
            yield mountpoint
        finally:
            subprocess.run(["umount", "--lazy", str(mountpoint)], check=False)
