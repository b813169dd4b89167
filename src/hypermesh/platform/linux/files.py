"""Reading kernel files: the two read disciplines procfs and sysfs need, and sysfs attributes kept open.

Files are read with os.open/os.read: a profile reads ~100 small files and the text-IO layer of open() would double
the cost. Nothing here parses beyond int(); parsers live in procfs.py, procnet.py and mounts.py.

- A sysfs attribute is one value the kernel formats into one page: one read(2) returns all of it (read_once).
- A procfs seq_file (mountinfo, /proc/stat, /proc/net/dev...) hands out whole records per read(2) and stops at the
  first record that does not fit the kernel's page-sized buffer (fs/seq_file.c), not at the size asked for:
  read until EOF (read_to_end, or pread_to_end for a file kept open).
"""

from __future__ import annotations

import errno
import os

__all__ = ["KeptAttributes", "listdir", "pread_to_end", "read_int", "read_once", "read_str", "read_to_end"]


def read_once(path: str) -> bytes | None:
    """A sysfs attribute or other small file in one read(2), or None when it does not exist or the kernel refuses.

    Refusals are normal in sysfs: ``speed`` of a down or virtual link answers EINVAL, some attributes are
    root-only. The caller decides what a missing value means.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, 65536)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_to_end(path: str) -> bytes | None:
    """A procfs seq_file's whole content, read until EOF, or None as read_once.

    A /proc/self/mountinfo of more than ~4 KiB comes in several reads.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def pread_to_end(fd: int) -> bytes:
    """The whole content of a procfs seq_file kept open, re-read from offset 0 with pread(2).

    procfs regenerates a seq_file's content on a read at offset 0, so one open serves the reader's life. About 30
    interfaces fill the first read of /proc/net/dev. Records of the files we keep open are under 1 KiB, so a read
    shorter than 2 KiB is the whole file (the common case: one system call); anything longer is read on, from where
    the kernel stopped, until EOF.
    """
    data = os.pread(fd, 65536, 0)
    if len(data) < 2048:
        return data
    chunks = [data]
    offset = len(data)
    while chunk := os.pread(fd, 65536, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def read_str(path: str) -> str | None:
    """A sysfs attribute as text, stripped; bytes that are not UTF-8 become U+FFFD."""
    data = read_once(path)
    return None if data is None else data.decode(errors="replace").strip()


def read_int(path: str) -> int | None:
    """A sysfs attribute that holds one decimal integer; None when absent, refused or not a number."""
    data = read_once(path)
    try:
        return None if data is None else int(data)
    except ValueError:
        return None


def listdir(path: str) -> list[str]:
    """Entries of a directory, [] when it does not exist or cannot be read (a driver not loaded)."""
    try:
        return os.listdir(path)
    except OSError:
        return []


class KeptAttributes:
    """sysfs attributes kept open between reads and re-read with pread(2) from offset 0.

    The set of attributes changes at run time (interfaces and CPUs come and go): each read round starts with
    ``begin()``, and ``end()`` closes the attributes not asked for since (an interface that went away). Not
    thread-safe on its own: its owner serialises rounds.
    """

    __slots__ = ("_fds", "_used")

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}
        self._used: set[str] = set()

    def begin(self) -> None:
        self._used = set()

    def end(self) -> None:
        for path in [p for p in self._fds if p not in self._used]:
            os.close(self._fds.pop(path))

    def read(self, path: str) -> bytes | None:
        """The attribute's content; None where it is absent or the driver refuses (EINVAL while a link is down).

        A kept fd answers ENODEV once its object is gone: an interface deleted between two reads, perhaps created
        again under the same name (a container's veth, a VPN's tun). The path is then opened afresh.
        """
        self._used.add(path)
        fd = self._fds.get(path)
        if fd is not None:
            try:
                return os.pread(fd, 4096, 0)
            except OSError as exc:
                if exc.errno != errno.ENODEV:
                    return None  # the driver refuses now (carrier, duplex while down): the fd stays good
                os.close(self._fds.pop(path))
        try:
            fd = self._fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            return os.pread(fd, 4096, 0)
        except OSError:
            return None

    def read_int(self, path: str) -> int | None:
        data = self.read(path)
        try:
            return None if data is None else int(data)
        except ValueError:
            return None

    def read_str(self, path: str) -> str | None:
        data = self.read(path)
        return None if data is None else data.decode(errors="replace").strip()

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)
