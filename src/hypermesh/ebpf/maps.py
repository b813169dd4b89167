"""A loaded map: lookups and updates through bpf(), keys and values as bytes, pinning.

A ``Map`` belongs to the ``Collection`` that created it: its fd lives as long as the collection, which
closes it. Per-CPU maps return one slot per possible CPU, each rounded up to 8 bytes.
"""

from __future__ import annotations

import ctypes
import errno
import os

from hypermesh.ebpf import libbpf
from hypermesh.errors import BackendError

__all__ = ["Map"]


class Map:
    """A loaded map: lookups through bpf(), values as bytes (per-CPU maps: one slot per possible CPU)."""

    def __init__(self, ptr: int, lib: libbpf.Lib) -> None:
        self._lib = lib
        self.name: str = lib.bpf_map__name(ptr).decode()
        self.fd: int = lib.bpf_map__fd(ptr)
        self.type: int = lib.bpf_map__type(ptr)
        self.key_size: int = lib.bpf_map__key_size(ptr)
        self.value_size: int = lib.bpf_map__value_size(ptr)
        self.max_entries: int = lib.bpf_map__max_entries(ptr)
        self.percpu = self.type in libbpf.PERCPU_MAP_TYPES
        # Per-CPU values are laid out one per possible CPU, each rounded up to 8 bytes.
        self.slot_size = (self.value_size + 7) & ~7 if self.percpu else self.value_size
        self.cpus = lib.possible_cpus if self.percpu else 1
        self.value_buffer_size = self.slot_size * self.cpus
        self._lookup = lib.bpf_map_lookup_elem
        self._batch_supported = True
        self._batch: tuple[ctypes.Array[ctypes.c_char], ...] | None = None
        self.pinned_at: str | None = None

    def lookup_into(self, key: ctypes.Array[ctypes.c_char], value: ctypes.Array[ctypes.c_char]) -> bool:
        """Look ``key`` up into a caller-owned buffer (no allocation: the hot path of ``read()``)."""
        rc = self._lookup(self.fd, key, value)
        if rc == 0:
            return True
        if rc == -errno.ENOENT:
            return False
        raise BackendError(f"reading map {self.name!r}: {self._lib.strerror(rc)}")

    def try_update(self, key: bytes, value: bytes, flags: int = 0) -> int:
        """0, or the kernel's -errno: for a caller that explains some errors itself."""
        rc: int = self._lib.bpf_map_update_elem(self.fd, key, value, flags)
        return rc

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        rc = self.try_update(key, value, flags)
        if rc != 0:
            raise BackendError(f"writing map {self.name!r}: {self._lib.strerror(rc)}")

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value) pair: one batched bpf() call where the kernel supports it (>= 5.6)."""
        keys, values, n = self.read_all()
        kz, vz = self.key_size, self.value_buffer_size
        return [(bytes(keys[i * kz : (i + 1) * kz]), bytes(values[i * vz : (i + 1) * vz])) for i in range(n)]

    def read_all(self) -> tuple[memoryview, memoryview, int]:
        """Every entry as packed (keys, values, count): BPF_MAP_LOOKUP_BATCH where the kernel has it
        (>= 5.6), one lookup per key otherwise. The views are valid until the next read of this map."""
        if self._batch_supported:
            got = self.lookup_batch()
            if got is not None:
                return got
            self._batch_supported = False
        pairs = self._items_iterate()
        return (
            memoryview(b"".join(k for k, _ in pairs)),
            memoryview(b"".join(v for _, v in pairs)),
            len(pairs),
        )

    def lookup_batch(self) -> tuple[memoryview, memoryview, int] | None:
        """Every entry with one bpf() call (kernel >= 5.6): (keys, values, count) packed, as views of
        buffers this map reuses (valid until its next batch read), or None when the kernel cannot
        batch this map type. Allocating and copying ~0.4 MB per read (a 10240-entry table) was most
        of what a read cost."""
        if self._batch is None:
            count = self.max_entries
            self._batch = (
                ctypes.create_string_buffer(self.key_size * count),
                ctypes.create_string_buffer(self.value_buffer_size * count),
                ctypes.create_string_buffer(max(self.key_size, 8)),
            )
            self._batch_opts = libbpf.MapBatchOpts(sz=ctypes.sizeof(libbpf.MapBatchOpts))
            self._batch_count = ctypes.c_uint32()
        keys, values, out_batch = self._batch
        n = self._batch_count
        n.value = self.max_entries
        rc = self._lib.bpf_map_lookup_batch(
            self.fd, None, out_batch, keys, values, ctypes.byref(n), ctypes.byref(self._batch_opts)
        )
        if rc not in (0, -errno.ENOENT):  # ENOENT: the whole map fit in this batch
            if rc in (-errno.EINVAL, -errno.ENOTSUP, -errno.EOPNOTSUPP):
                return None
            raise BackendError(f"reading map {self.name!r}: {self._lib.strerror(rc)}")
        count = n.value
        return (
            memoryview(keys).cast("B")[: count * self.key_size],
            memoryview(values).cast("B")[: count * self.value_buffer_size],
            count,
        )

    def _items_iterate(self) -> list[tuple[bytes, bytes]]:
        key = ctypes.create_string_buffer(self.key_size)
        next_key = ctypes.create_string_buffer(self.key_size)
        value = ctypes.create_string_buffer(self.value_buffer_size)
        out: list[tuple[bytes, bytes]] = []
        prev: ctypes.Array[ctypes.c_char] | None = None
        while self._lib.bpf_map_get_next_key(self.fd, prev, next_key) == 0:
            ctypes.memmove(key, next_key, self.key_size)
            prev = key
            if self.lookup_into(key, value):
                out.append((key.raw, value.raw))
        return out

    @property
    def pinnable(self) -> bool:
        """libbpf's internal maps (.rodata, .bss, .data) are not: bpffs refuses dots in names."""
        return "." not in self.name

    def pin(self, path: str) -> None:
        """Pin at ``path`` on bpffs: the map outlives this process until the pin is removed."""
        rc = self._lib.bpf_obj_pin(self.fd, path.encode())
        if rc != 0:
            raise BackendError(f"pinning map {self.name} at {path}: {self._lib.strerror(rc)}")
        self.pinned_at = path

    def unpin(self) -> None:
        """Remove the pin ``pin()`` made (the map stays while this process or another pin holds it)."""
        path, self.pinned_at = self.pinned_at, None
        if path is not None:
            os.unlink(path)
