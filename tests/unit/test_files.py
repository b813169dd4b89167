"""``hypermesh._files.read_regular_file``: the one reader behind the agent's config file and the eBPF
object check. Only files this test makes in tmp_path (and /dev/null): no kernel file is read."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from hypermesh._files import FileTooLarge, NotRegularFile, read_regular_file


def test_a_regular_file_whole_or_its_prefix(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    data = bytes(range(256)) * 300  # more than one 64 KiB read
    path.write_bytes(data)
    whole = read_regular_file(str(path), len(data))
    assert whole.data == data and whole.size == len(data) == os.stat(path).st_size
    head = read_regular_file(str(path), len(data), prefix=64)
    assert head.data == data[:64] and head.size == len(data)


def test_what_is_not_a_regular_file_is_named(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(sock_path))
    done = threading.Event()
    kinds = {}

    def read_all() -> None:  # a FIFO without a writer would block a plain open(): O_NONBLOCK must not
        for path in (fifo, tmp_path, Path("/dev/null")):
            with pytest.raises(NotRegularFile) as info:
                read_regular_file(str(path), 1 << 20)
            kinds[path] = (info.value.kind, info.value.is_directory)
        done.set()

    worker = threading.Thread(target=read_all, daemon=True)
    worker.start()
    assert done.wait(10), "read_regular_file blocked on a FIFO"
    sock.close()
    assert kinds == {
        fifo: ("a FIFO (named pipe)", False),
        tmp_path: ("a directory", True),
        Path("/dev/null"): ("a character device", False),
    }
    with pytest.raises(OSError):  # a socket cannot be opened at all: the open's own error
        read_regular_file(str(sock_path), 1 << 20)
    with pytest.raises(FileNotFoundError):
        read_regular_file(str(tmp_path / "absent"), 1 << 20)


def test_a_file_over_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "big"
    with open(path, "wb") as f:
        f.truncate(65 << 20)  # sparse
    with pytest.raises(FileTooLarge) as info:
        read_regular_file(str(path), 64 << 20, prefix=64)
    assert (info.value.size, info.value.limit) == (65 << 20, 64 << 20)
    exact = tmp_path / "exact"
    exact.write_bytes(b"x" * 100)
    assert read_regular_file(str(exact), 100).data == b"x" * 100
    with pytest.raises(FileTooLarge):
        read_regular_file(str(exact), 99)
