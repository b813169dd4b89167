"""Minimised kernel BTF for CO-RE objects: only the types an object relocates against, cached per boot.

libbpf needs the kernel's BTF to relocate a CO-RE object (execsnoop reads task_struct, biolatency the
block request); parsing the whole of /sys/kernel/btf/vmlinux costs ~10 ms per load. The first load in
a boot writes a minimised BTF (``bpftool gen min_core_btf``) to a cache keyed by the kernel build and
the object's digest, and later loads hand it to libbpf as ``btf_custom_path``. Without bpftool the full
BTF is used.
"""

from __future__ import annotations

import hashlib
import os
import platform
import struct
import subprocess
import threading

from hypermesh.ebpf.probe import BTF_PATH

__all__ = ["BTF_CACHE_DIR", "btf_cache_dir", "minimised_btf"]

BTF_CACHE_DIR = "/run/hypermesh/btf"  # HYPERMESH_BTF_CACHE moves it (read at each use)
_BTF_HEADER = struct.Struct("<HBBIIIII")  # struct btf_header: magic, version, flags, hdr_len, type/str off+len
_BTF_MAGIC = 0xEB9F


def btf_cache_dir() -> str:
    return os.environ.get("HYPERMESH_BTF_CACHE") or BTF_CACHE_DIR


def _looks_like_btf(path: str) -> bool:
    """A whole BTF file, as far as its header tells: magic, version 1, and a size matching the
    sections it announces (catches a file cut short or emptied, e.g. by a full /run)."""
    try:
        with open(path, "rb") as f:
            head = f.read(_BTF_HEADER.size)
            size = os.fstat(f.fileno()).st_size
    except OSError:
        return False
    if len(head) < _BTF_HEADER.size:
        return False
    magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = _BTF_HEADER.unpack(head)
    return bool(
        magic == _BTF_MAGIC
        and version == 1
        and hdr_len >= _BTF_HEADER.size
        and size == hdr_len + max(type_off + type_len, str_off + str_len)
    )


_btf_lock = threading.Lock()
_kernel_key: str | None = None
_object_digests: dict[tuple[str, int, int], str] = {}


def _kernel() -> str:
    """The running kernel build, as far as the cache key needs it (constant for the process's life)."""
    global _kernel_key
    if _kernel_key is None:
        size = os.stat(BTF_PATH).st_size
        _kernel_key = hashlib.sha256(f"{platform.release()} {platform.version()} {size}".encode()).hexdigest()[:16]
    return _kernel_key


def _digest(object_path: str) -> str:
    """The object's content digest, remembered per (path, size, mtime): hashing it at every load was
    a measurable part of one."""
    st = os.stat(object_path)
    key = (object_path, st.st_size, st.st_mtime_ns)
    digest = _object_digests.get(key)
    if digest is None:
        with open(object_path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:16]
        _object_digests[key] = digest
    return digest


def minimised_btf(object_path: str, *, rebuild: bool = False) -> str | None:
    """Path of a BTF holding only the kernel types ``object_path`` relocates against, made once per
    kernel build and object; None (use the full vmlinux BTF) when it cannot be made. A cached file
    that is not a whole BTF, or ``rebuild``, makes it again. Once found good, the path is returned
    without touching the file again in this process (two stats were a tenth of a load): a file
    spoiled meanwhile makes libbpf fail, and the loader then asks again with ``rebuild``."""
    cache = btf_cache_dir()
    known = _known.get((cache, object_path))
    if known is not None and not rebuild:
        return known
    try:
        path = os.path.join(cache, f"{_kernel()}-{_digest(object_path)}.btf")
    except OSError:  # no kernel BTF, or the object is unreadable
        return None
    if not rebuild and _still_good(path):
        _known[cache, object_path] = path
        return path
    with _btf_lock:
        if not rebuild and _looks_like_btf(path):
            return path
        bpftool = next((p for p in ("/usr/sbin/bpftool", "/usr/bin/bpftool") if os.access(p, os.X_OK)), None)
        if bpftool is None:
            return None
        try:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            subprocess.run(
                [bpftool, "gen", "min_core_btf", BTF_PATH, tmp, object_path],
                check=True,
                capture_output=True,
                timeout=30,
            )
            if not _looks_like_btf(tmp):
                os.unlink(tmp)
                return None
            os.replace(tmp, path)
        except (OSError, subprocess.SubprocessError):
            return None
    _verified.pop(path, None)
    _known[cache, object_path] = path
    return path


_verified: dict[str, tuple[int, int, int]] = {}
_known: dict[tuple[str, str], str] = {}  # (cache dir, object path) -> its minimised BTF, found good here


def _still_good(path: str) -> bool:
    """``_looks_like_btf(path)``, read once per process while the file keeps its inode, size and mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    identity = (st.st_ino, st.st_size, st.st_mtime_ns)
    if _verified.get(path) == identity:
        return True
    if not _looks_like_btf(path):
        return False
    _verified[path] = identity
    return True
