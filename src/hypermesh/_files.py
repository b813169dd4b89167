"""Reading a file a user named: a regular file of bounded size, or an exception saying which it is not.

Used by the agent's config loader and the eBPF object check. The file is opened with O_NONBLOCK, so a
FIFO (or a device) never blocks the open waiting for a writer, and its type and size come from fstat
of that same descriptor (no window between a stat and the open). Callers turn the exceptions into
their own one-line InvalidInput.
"""

from __future__ import annotations

import os
import stat

__all__ = ["FileReadError", "FileTooLarge", "NotRegularFile", "RegularFile", "read_regular_file"]

FILE_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


class NotRegularFile(Exception):
    """The path names a directory, FIFO, device or socket."""

    def __init__(self, path: str, mode: int) -> None:
        self.path = path
        self.is_directory = stat.S_ISDIR(mode)
        self.kind = FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
        super().__init__(f"{path} is {self.kind}")


class FileTooLarge(Exception):
    """Larger than the limit: ``size`` is what fstat said, None when it grew past the limit while read."""

    def __init__(self, path: str, size: int | None, limit: int) -> None:
        self.path, self.size, self.limit = path, size, limit
        super().__init__(f"{path} is larger than {limit} bytes")


class FileReadError(Exception):
    """Opened, but fstat or a read failed (``error``: the OSError); opening errors are OSErrors themselves."""

    def __init__(self, path: str, error: OSError) -> None:
        self.path, self.error = path, error
        super().__init__(f"{path}: {error.strerror or error}")


class RegularFile:
    """What was read: ``data`` (the whole file, or its first ``prefix`` bytes) and ``size`` (st_size at
    open). A plain slotted class: dataclasses would cost the CLI ~10 ms of import for two fields."""

    __slots__ = ("data", "size")

    def __init__(self, data: bytes, size: int) -> None:
        self.data = data
        self.size = size


def read_regular_file(path: str, limit: int, *, prefix: int | None = None) -> RegularFile:
    """The bytes of ``path`` (all of them, or the first ``prefix``) if it is a regular file of at most
    ``limit`` bytes. Raises the OSError of the open (FileNotFoundError, PermissionError, ...),
    NotRegularFile, FileTooLarge or FileReadError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        try:
            info = os.fstat(fd)
        except OSError as exc:
            raise FileReadError(path, exc) from None
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFile(path, info.st_mode)
        if info.st_size > limit:
            raise FileTooLarge(path, info.st_size, limit)
        try:
            if prefix is not None:
                return RegularFile(os.pread(fd, prefix, 0), info.st_size)
            chunks, size = [], 0
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:  # grew while we read
                    raise FileTooLarge(path, None, limit)
        except OSError as exc:
            raise FileReadError(path, exc) from None
        return RegularFile(b"".join(chunks), info.st_size)
    finally:
        os.close(fd)
