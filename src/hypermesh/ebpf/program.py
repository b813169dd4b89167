"""Program lifecycle: an object file is opened (spec), loaded (the kernel holds it), attached (links),
then closed. Everything loaded has one owner that closes it; nothing stays in the kernel unless pinned.

``BpfObject`` is the generic layer over any ``.bpf.o`` (the ``hypermesh ebpf load FILE`` command and the
built-ins use it); ``Program`` is the base of the built-in programs (``hypermesh.ebpf.load(name)``).

Detaching is kernel-bound: destroying a tracepoint link waits 60-90 ms for an RCU grace period, an
XDP link ~16 ms. ``Program.close(wait=False)`` hands the links to one background thread and returns at
once with a ``threading.Event`` that is set when the kernel has let go, so an event loop never stalls.
"""

from __future__ import annotations

import ctypes
import errno
import os
import queue
import socket
import stat
import sys
import threading
import weakref

from hypermesh.ebpf import libbpf
from hypermesh.ebpf.probe import (
    TRACEFS_ACCESS_FIX,
    capability_fix,
    check_capabilities,
    missing_capabilities,
    tracefs_path,
    tracefs_unreadable,
)
from hypermesh.errors import BackendError, InvalidInput, NotFound, PermissionDenied, Unsupported, VerifierError
from hypermesh.model import Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from types import TracebackType
    from typing import Literal, NoReturn, Self

__all__ = [
    "PIN_ROOT",
    "BpfMap",
    "BpfObject",
    "Link",
    "MapInfo",
    "ObjectInfo",
    "PinnedObject",
    "PinnedProgram",
    "Program",
    "ProgramInfo",
    "close_all",
    "detach_pinned",
    "pin_component",
    "pinned",
    "require_bpffs",
]

PIN_ROOT = "/sys/fs/bpf/hypermesh"
BPFFS = "/sys/fs/bpf"
_EM_BPF = 247

PROG_TYPE_NAMES = {
    0: "unspec", 1: "socket_filter", 2: "kprobe", 3: "sched_cls", 4: "sched_act", 5: "tracepoint",
    6: "xdp", 7: "perf_event", 8: "cgroup_skb", 9: "cgroup_sock", 10: "lwt_in", 11: "lwt_out",
    12: "lwt_xmit", 13: "sock_ops", 14: "sk_skb", 15: "cgroup_device", 16: "sk_msg",
    17: "raw_tracepoint", 18: "cgroup_sock_addr", 19: "lwt_seg6local", 20: "lirc_mode2",
    21: "sk_reuseport", 22: "flow_dissector", 23: "cgroup_sysctl", 24: "raw_tracepoint_writable",
    25: "cgroup_sockopt", 26: "tracing", 27: "struct_ops", 28: "ext", 29: "lsm", 30: "sk_lookup",
    31: "syscall",
}  # fmt: skip
MAP_TYPE_NAMES = {
    0: "unspec", 1: "hash", 2: "array", 3: "prog_array", 4: "perf_event_array", 5: "percpu_hash",
    6: "percpu_array", 7: "stack_trace", 8: "cgroup_array", 9: "lru_hash", 10: "lru_percpu_hash",
    11: "lpm_trie", 12: "array_of_maps", 13: "hash_of_maps", 14: "devmap", 15: "sockmap", 16: "cpumap",
    17: "xskmap", 18: "sockhash", 19: "cgroup_storage", 20: "reuseport_sockarray",
    21: "percpu_cgroup_storage", 22: "queue", 23: "stack", 24: "sk_storage", 25: "devmap_hash",
    26: "struct_ops", 27: "ringbuf", 28: "inode_storage", 29: "task_storage", 30: "bloom_filter",
    31: "user_ringbuf", 32: "cgrp_storage",
}  # fmt: skip


@record
class ProgramInfo(Record):
    name: str
    section: str
    type: str
    instructions: int


@record
class MapInfo(Record):
    name: str
    type: str
    key_size: int
    value_size: int
    max_entries: int


@record
class ObjectInfo(Record):
    path: str
    programs: list[ProgramInfo]
    maps: list[MapInfo]
    loaded: bool


@record
class PinnedObject(Record):
    path: str
    kind: str  # "link" | "map" | "prog"
    id: int | None
    # Links only: whether the kernel still has it attached (an XDP link is detached by the kernel
    # when its interface is deleted), and for XDP the interface, by the ifindex the kernel holds.
    attached: bool | None = None
    interface: str | None = None


@record
class PinnedProgram(Record):
    name: str
    path: str
    objects: list[PinnedObject]
    interface: str | None = None  # XDP: the interface its link is (or was) attached to
    attached: bool | None = None  # every pinned link still attached; None when no link is pinned


# ------------------------------------------------------------------------------------------ maps


class BpfMap:
    """A loaded map: lookups through bpf(), values as bytes (per-CPU maps: one slot per possible CPU)."""

    def __init__(self, ptr: int) -> None:
        lib = libbpf.lib()
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

    def lookup_into(self, key: ctypes.Array[ctypes.c_char], value: ctypes.Array[ctypes.c_char]) -> bool:
        """Look ``key`` up into a caller-owned buffer (no allocation: the hot path of ``read()``)."""
        rc = self._lookup(self.fd, key, value)
        if rc == 0:
            return True
        if rc == -errno.ENOENT:
            return False
        raise BackendError(f"reading map {self.name!r}: {libbpf.strerror(rc)}")

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        rc = libbpf.lib().bpf_map_update_elem(self.fd, key, value, flags)
        if rc != 0:
            raise BackendError(f"writing map {self.name!r}: {libbpf.strerror(rc)}")

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value) pair: one batched bpf() call where the kernel supports it (>= 5.6)."""
        if self._batch_supported:
            got = self._items_batch()
            if got is not None:
                return got
            self._batch_supported = False
        return self._items_iterate()

    def lookup_batch(self) -> tuple[bytes, bytes, int] | None:
        """Every entry with one bpf() call (kernel >= 5.6): (keys, values, count) as packed bytes,
        or None when the kernel cannot batch this map type."""
        lib = libbpf.lib()
        count = self.max_entries
        keys = ctypes.create_string_buffer(self.key_size * count)
        values = ctypes.create_string_buffer(self.value_buffer_size * count)
        out_batch = ctypes.create_string_buffer(max(self.key_size, 8))
        opts = libbpf.MapBatchOpts(sz=ctypes.sizeof(libbpf.MapBatchOpts))
        n = ctypes.c_uint32(count)
        rc = lib.bpf_map_lookup_batch(self.fd, None, out_batch, keys, values, ctypes.byref(n), opts)
        if rc not in (0, -errno.ENOENT):  # ENOENT: the whole map fit in this batch
            if rc in (-errno.EINVAL, -errno.ENOTSUP, -errno.EOPNOTSUPP):
                return None
            raise BackendError(f"reading map {self.name!r}: {libbpf.strerror(rc)}")
        return keys.raw[: n.value * self.key_size], values.raw[: n.value * self.value_buffer_size], n.value

    def _items_batch(self) -> list[tuple[bytes, bytes]] | None:
        got = self.lookup_batch()
        if got is None:
            return None
        ks, vs, n = got
        kz, vz = self.key_size, self.value_buffer_size
        return [(ks[i * kz : (i + 1) * kz], vs[i * vz : (i + 1) * vz]) for i in range(n)]

    def _items_iterate(self) -> list[tuple[bytes, bytes]]:
        lib = libbpf.lib()
        key = ctypes.create_string_buffer(self.key_size)
        next_key = ctypes.create_string_buffer(self.key_size)
        value = ctypes.create_string_buffer(self.value_buffer_size)
        out: list[tuple[bytes, bytes]] = []
        prev: ctypes.Array[ctypes.c_char] | None = None
        while lib.bpf_map_get_next_key(self.fd, prev, next_key) == 0:
            ctypes.memmove(key, next_key, self.key_size)
            prev = key
            if self.lookup_into(key, value):
                out.append((key.raw, value.raw))
        return out


# ----------------------------------------------------------------------------------------- links


class Link:
    """An attachment of a program to a hook. Destroying it detaches the program (kernel-bound wait)."""

    def __init__(self, kind: str, target: str, *, ptr: int | None = None, fd: int | None = None) -> None:
        self.kind = kind
        self.target = target
        self._ptr = ptr
        self._fd = fd
        self.mode = ""  # xdp: "native" or "generic"
        self.native_refused = ""  # xdp after a fall back to generic: why native mode was refused

    @property
    def fd(self) -> int:
        if self._ptr is not None:
            return int(libbpf.lib().bpf_link__fd(self._ptr))
        return -1 if self._fd is None else self._fd

    @property
    def closed(self) -> bool:
        return self._ptr is None and self._fd is None

    def pin(self, path: str) -> None:
        rc = libbpf.lib().bpf_obj_pin(self.fd, path.encode())
        if rc != 0:
            raise BackendError(f"pinning {self.kind} link at {path}: {libbpf.strerror(rc)}")

    def destroy(self) -> None:
        """Detach now. Blocks for the kernel's RCU grace period (tracepoint 60-90 ms, XDP ~16 ms)."""
        ptr, fd = self._ptr, self._fd
        self._ptr = self._fd = None
        if ptr is not None:
            libbpf.lib().bpf_link__destroy(ptr)
        if fd is not None:
            os.close(fd)


class _Reaper:
    """One daemon thread that destroys links handed over by ``close(wait=False)``."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[list[Link], BpfObject | None, threading.Event]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, links: list[Link], obj: BpfObject | None) -> threading.Event:
        done = threading.Event()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hypermesh-bpf-detach", daemon=True)
                self._thread.start()
        self._queue.put((links, obj, done))
        return done

    def _run(self) -> None:
        while True:
            links, obj, done = self._queue.get()
            try:
                for link in links:
                    link.destroy()
                if obj is not None:
                    obj.close()
            finally:
                done.set()


_reaper = _Reaper()


# --------------------------------------------------------------------------------------- objects


MAX_OBJECT_BYTES = 64 << 20  # far above any real .bpf.o (ours are < 40 KiB; large ones are a few MiB)
REBUILD_HINT = "rebuild it: clang -target bpf -O2 -g -c FILE.bpf.c -o FILE.bpf.o (the built-in programs: make bpf)"


def _check_elf(path: str) -> None:
    """A regular file of sane size holding a complete BPF ELF header, before libbpf sees it.

    Opened with O_NONBLOCK so that a FIFO (or a device) never blocks the open; the type and size
    come from fstat of that same descriptor."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"no such BPF object file: {path}") from None
    except IsADirectoryError:
        raise InvalidInput(f"{path} is a directory, not a BPF ELF object (.bpf.o)") from None
    except PermissionError as exc:
        raise PermissionDenied(f"cannot read {path}: {exc.strerror}") from None
    except OSError as exc:
        raise InvalidInput(f"cannot open {path}: {exc.strerror}; give the path of a .bpf.o file") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _FILE_KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise InvalidInput(f"{path} is {kind}, not a BPF ELF object: give the path of a regular .bpf.o file")
        if st.st_size > MAX_OBJECT_BYTES:
            raise InvalidInput(
                f"{path} is {st.st_size / (1 << 20):.0f} MiB, larger than any BPF object "
                f"(limit {MAX_OBJECT_BYTES >> 20} MiB): give the path of a .bpf.o file"
            )
        head = os.pread(fd, 64, 0)
    finally:
        os.close(fd)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise InvalidInput(f"{path} is not a BPF ELF object: no ELF header (build one with clang -target bpf)")
    order: Literal["little", "big"] = "little" if head[5] == 1 else "big"
    machine = int.from_bytes(head[18:20], order)
    if machine != _EM_BPF:
        raise InvalidInput(f"{path} is an ELF file for machine {machine}, not BPF ({_EM_BPF}): not a .bpf.o")
    # The section header table (clang puts it at the end of the file) must lie inside the file.
    if head[4] == 2 and len(head) >= 64:  # ELFCLASS64, the only class clang emits for BPF
        shoff = int.from_bytes(head[0x28:0x30], order)
        shentsize, shnum = int.from_bytes(head[0x3A:0x3C], order), int.from_bytes(head[0x3C:0x3E], order)
    elif head[4] == 1 and len(head) >= 52:
        shoff = int.from_bytes(head[0x20:0x24], order)
        shentsize, shnum = int.from_bytes(head[0x2E:0x30], order), int.from_bytes(head[0x30:0x32], order)
    else:
        raise InvalidInput(
            f"{path} is truncated or not a complete BPF object (its ELF header is cut short): " + REBUILD_HINT
        )
    end = shoff + shentsize * shnum
    if shoff == 0 or end > st.st_size:
        raise InvalidInput(
            f"{path} is truncated or not a complete BPF object ({st.st_size} bytes, its section table "
            f"ends at byte {end}): " + REBUILD_HINT
        )


_FILE_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


def _verifier_log(text: str) -> str:
    start = text.find("-- BEGIN PROG LOAD LOG --")
    if start < 0:
        return ""
    end = text.find("-- END PROG LOAD LOG --", start)
    return text[start + len("-- BEGIN PROG LOAD LOG --") : end if end >= 0 else None].strip("\n")


def _libbpf_detail(messages: list[str], limit: int = 3) -> str:
    lines = [line.strip() for m in messages for line in m.splitlines() if line.strip()]
    lines = [line for line in lines if "PROG LOAD LOG" not in line]
    return "; ".join(lines[-limit:])


class BpfObject:
    """One ``.bpf.o``: opened from a file (a spec), then loaded into the kernel, then closed."""

    def __init__(self, path: str, *, btf_custom_path: str | None = None) -> None:
        _check_elf(path)
        self.path = path
        lib = libbpf.lib()
        self.btf_custom_path = btf_custom_path
        self._autoload: dict[str, bool] = {}
        ptr = self._open()
        if not ptr:
            err = libbpf.get_errno()
            with libbpf.capture() as cap:  # replay to collect libbpf's explanation
                replay = self._open()
            if replay:
                lib.bpf_object__close(replay)
            detail = _libbpf_detail(cap.messages) or libbpf.strerror(err)
            raise InvalidInput(
                f"{path} is not a loadable BPF object ({detail}): the file is truncated, corrupt or not a complete "
                "BPF object; " + REBUILD_HINT
            )
        self._ptr: int | None = ptr
        self.loaded = False
        self.refused_program: str | None = None  # after a failed load: the program the kernel refused
        self.programs: dict[str, int] = {}
        self.maps: dict[str, BpfMap] = {}
        self._map_ptrs: dict[str, int] = {}
        prog = lib.bpf_object__next_program(ptr, None)
        while prog:
            self.programs[lib.bpf_program__name(prog).decode()] = prog
            prog = lib.bpf_object__next_program(ptr, prog)
        m = lib.bpf_object__next_map(ptr, None)
        while m:
            self._map_ptrs[lib.bpf_map__name(m).decode()] = m
            m = lib.bpf_object__next_map(ptr, m)

    def _open(self) -> int | None:
        opts = libbpf.ObjectOpenOpts(sz=ctypes.sizeof(libbpf.ObjectOpenOpts))
        if self.btf_custom_path:
            opts.btf_custom_path = self.btf_custom_path.encode()
        ptr: int | None = libbpf.lib().bpf_object__open_file(self.path.encode(), ctypes.byref(opts))
        return ptr

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> ObjectInfo:
        lib = libbpf.lib()
        programs = [
            ProgramInfo(
                name=name,
                section=lib.bpf_program__section_name(p).decode(),
                type=PROG_TYPE_NAMES.get(lib.bpf_program__type(p), str(lib.bpf_program__type(p))),
                instructions=int(lib.bpf_program__insn_cnt(p)),
            )
            for name, p in self.programs.items()
        ]
        maps = [
            MapInfo(
                name=name,
                type=MAP_TYPE_NAMES.get(lib.bpf_map__type(m), str(lib.bpf_map__type(m))),
                key_size=int(lib.bpf_map__key_size(m)),
                value_size=int(lib.bpf_map__value_size(m)),
                max_entries=int(lib.bpf_map__max_entries(m)),
            )
            for name, m in self._map_ptrs.items()
        ]
        return ObjectInfo(path=self.path, programs=programs, maps=maps, loaded=self.loaded)

    def set_autoload(self, program: str, autoload: bool) -> None:
        libbpf.lib().bpf_program__set_autoload(self._program(program), autoload)
        self._autoload[program] = autoload

    def load(self) -> None:
        """Load every autoload program and create the maps; errors say what the kernel objected to."""
        lib = libbpf.lib()
        rc = lib.bpf_object__load(self._require_open())
        if rc != 0:
            self._raise_load_error(rc, self._replay_load())
        self.loaded = True
        self.maps = {name: BpfMap(m) for name, m in self._map_ptrs.items()}

    def _replay_load(self) -> list[str]:
        """Load a fresh copy of the object with libbpf's messages captured (the verifier log among
        them). libbpf marks a failed object as loaded, so it cannot simply be retried; a failed load
        leaves nothing in the kernel, so the replay is free of side effects."""
        lib = libbpf.lib()
        with libbpf.capture() as cap:
            replay = self._open()
            if replay:
                try:
                    prog = lib.bpf_object__next_program(replay, None)
                    while prog:
                        autoload = self._autoload.get(lib.bpf_program__name(prog).decode())
                        if autoload is not None:
                            lib.bpf_program__set_autoload(prog, autoload)
                        prog = lib.bpf_object__next_program(replay, prog)
                    lib.bpf_object__load(replay)
                finally:
                    lib.bpf_object__close(replay)
        return cap.messages

    def _raise_load_error(self, rc: int, messages: list[str]) -> NoReturn:
        text = "".join(messages)
        log = _verifier_log(text)
        name = os.path.basename(self.path)
        # libbpf names the program it was loading when the kernel said no: "prog 'x': failed to load".
        prog = next(
            (m.split("'")[1] for m in messages if m.startswith("libbpf: prog '") and "failed to load" in m), None
        ) or next((m.split("'")[1] for m in messages if m.startswith("libbpf: prog '")), None)
        self.refused_program = prog
        if log:
            lines = [line for line in log.splitlines() if line.strip() and not line.startswith("processed ")]
            why = f": {lines[-1].strip()}" if lines else ""
            where = f"program {prog!r} in {name}" if prog else f"a program in {name}"
            raise VerifierError(f"the kernel's verifier rejected {where}{why}", log=log)
        what = name
        if prog is not None:
            section = (
                libbpf.lib().bpf_program__section_name(self.programs[prog]).decode() if prog in self.programs else ""
            )
            what = f"program {prog!r} ({section}) of {name}" if section else f"program {prog!r} of {name}"
        if rc in (-errno.EPERM, -errno.EACCES):
            missing = missing_capabilities(("CAP_BPF", "CAP_PERFMON"))
            if missing:
                raise PermissionDenied(
                    f"loading {what} was refused ({libbpf.strerror(rc)}): " + _capability_fix(missing),
                    capability=missing[0],
                )
            raise PermissionDenied(
                f"loading {what} was refused ({libbpf.strerror(rc)}) although this process holds CAP_BPF "
                "and CAP_PERFMON: kernel lockdown, an LSM policy or the kernel's configuration forbids it"
            )
        detail = _libbpf_detail(messages) or libbpf.strerror(rc)
        raise BackendError(f"loading {what} failed: {detail}")

    def program_fd(self, program: str) -> int:
        return int(libbpf.lib().bpf_program__fd(self._program(program)))

    def _program(self, name: str) -> int:
        try:
            return self.programs[name]
        except KeyError:
            raise NotFound(f"no program {name!r} in {self.path}", list(self.programs)) from None

    def map(self, name: str) -> BpfMap:
        try:
            return self.maps[name]
        except KeyError:
            raise NotFound(f"no map {name!r} loaded from {self.path}", list(self._map_ptrs)) from None

    def _require_open(self) -> int:
        if self._ptr is None:
            raise InvalidInput(f"{self.path} is closed")
        return self._ptr

    def attach_tracepoint(self, program: str, category: str, event: str) -> Link:
        lib = libbpf.lib()
        prog, args = self._program(program), (category.encode(), event.encode())
        ptr = lib.bpf_program__attach_tracepoint(prog, *args)
        if not ptr:
            err = libbpf.get_errno()
            if tracefs_path() is None:  # libbpf resolves a tracepoint's id through tracefs
                unreadable = tracefs_unreadable()
                if unreadable:
                    raise PermissionDenied(
                        f"attaching to tracepoint {category}:{event} needs tracefs, which is mounted at "
                        f"{unreadable} but not readable by this user: {TRACEFS_ACCESS_FIX}"
                    )
                raise Unsupported(
                    f"tracepoint {category}:{event}",
                    "tracefs is not mounted: mount -t tracefs tracefs /sys/kernel/tracing",
                )
            messages = self._replay_attach(lib.bpf_program__attach_tracepoint, prog, *args)
            self._raise_attach_error(f"tracepoint {category}:{event}", err, messages)
        return Link("tracepoint", f"{category}:{event}", ptr=ptr)

    @staticmethod
    def _replay_attach(fn: Callable[..., int | None], *args: object) -> list[str]:
        """Attach again with libbpf's messages captured, to explain a failure (a success is undone)."""
        with libbpf.capture() as cap:
            ptr = fn(*args)
            if ptr:
                libbpf.lib().bpf_link__destroy(ptr)
        return cap.messages

    def attach_kprobe(self, program: str, function: str) -> Link:
        lib = libbpf.lib()
        prog = self._program(program)
        ptr = lib.bpf_program__attach_kprobe(prog, False, function.encode())
        if not ptr:
            err = libbpf.get_errno()
            messages = self._replay_attach(lib.bpf_program__attach_kprobe, prog, False, function.encode())
            self._raise_attach_error(f"kprobe {function}", err, messages)
        return Link("kprobe", function, ptr=ptr)

    def attach_xdp(self, program: str, ifindex: int, interface: str, mode: str = "auto") -> Link:
        """Attach through a bpf_link: native (driver) mode, falling back to generic (skb) mode in
        ``auto``. The link's ``mode`` says which one the kernel accepted and, after a fall back,
        ``native_refused`` why native mode was not had."""
        lib = libbpf.lib()
        prog_fd = self.program_fd(program)
        modes = {"auto": ("native", "generic"), "native": ("native",), "generic": ("generic",)}[mode]
        rc, native_refused = 0, ""
        for attempt in modes:
            opts = libbpf.LinkCreateOpts(sz=ctypes.sizeof(libbpf.LinkCreateOpts))
            opts.flags = libbpf.XDP_FLAGS_DRV_MODE if attempt == "native" else libbpf.XDP_FLAGS_SKB_MODE
            rc = lib.bpf_link_create(prog_fd, ifindex, libbpf.ATTACH_XDP, ctypes.byref(opts))
            if rc >= 0:
                link = Link("xdp", interface, fd=rc)
                link.mode = attempt
                link.native_refused = native_refused
                return link
            if rc in (-errno.EPERM, -errno.EACCES, -errno.EBUSY, -errno.EEXIST):
                break  # not a driver limitation: generic mode would fail the same way
            if attempt == "native":
                native_refused = self._native_refusal(prog_fd, ifindex, interface, -rc)
                if mode == "native":
                    self._raise_native_error(interface, -rc, native_refused)
        self._raise_attach_error(f"XDP on {interface}", -rc, [])

    @staticmethod
    def _native_refusal(prog_fd: int, ifindex: int, interface: str, err: int) -> str:
        """Why the kernel refused native XDP, in its own words where it has some.

        Only EOPNOTSUPP means the driver has no native XDP; a driver that has it can still refuse
        (veth: ERANGE "Peer MTU is too large to set XDP"). bpf_link_create does not return the
        kernel's message (extack); the netlink attach does, so that is replayed with libbpf's
        messages captured. UPDATE_IF_NOEXIST: the replay never replaces anything; should it succeed,
        it is detached again at once."""
        if err == errno.EOPNOTSUPP:
            return f"{_driver_of(interface)} has no native (driver) XDP support"
        lib = libbpf.lib()
        flags = libbpf.XDP_FLAGS_DRV_MODE | libbpf.XDP_FLAGS_UPDATE_IF_NOEXIST
        with libbpf.capture() as cap:
            if lib.bpf_xdp_attach(ifindex, prog_fd, flags, None) == 0:
                lib.bpf_xdp_detach(ifindex, libbpf.XDP_FLAGS_DRV_MODE, None)
        prefix = "libbpf: Kernel error message: "
        kernel_says = next((m[len(prefix) :].strip() for m in cap.messages if m.startswith(prefix)), "")
        name = errno.errorcode.get(err, str(err))
        why = f"{kernel_says} ({name}: {os.strerror(err)})" if kernel_says else f"{name}: {os.strerror(err)}"
        return f"the kernel refused native XDP on {interface}: {why}"

    @staticmethod
    def _raise_native_error(interface: str, err: int, refusal: str) -> NoReturn:
        generic = "use --mode generic (or --mode auto, which falls back to generic; API: mode='generic' or 'auto')"
        if err == errno.EOPNOTSUPP:
            raise Unsupported(f"native XDP on {interface}", f"{refusal}: {generic}")
        if err == errno.ERANGE:
            hint = (
                f"lower the MTU of {interface} (and of its peer, for veth), e.g. ip link set dev {interface} "
                f"mtu 1500, or {generic}"
            )
            raise Unsupported(f"native XDP on {interface}", f"{refusal}: {hint}")
        if err == errno.EINVAL:
            raise Unsupported(
                f"native XDP on {interface}",
                f"{refusal}: the driver does not take native XDP in this configuration (its MTU, queues or "
                f"offloads); {generic}",
            )
        raise BackendError(f"attaching XDP on {interface} in native mode failed: {refusal}; or {generic}")

    def _raise_attach_error(self, what: str, err: int, messages: list[str]) -> NoReturn:
        err = abs(err)
        if err in (errno.EPERM, errno.EACCES):
            needed = ("CAP_NET_ADMIN",) if what.startswith("XDP") else ("CAP_PERFMON",)
            missing = missing_capabilities(("CAP_BPF", *needed))
            if missing:
                raise PermissionDenied(
                    f"attaching to {what} was refused: " + _capability_fix(missing), capability=missing[0]
                )
            raise PermissionDenied(
                f"attaching to {what} was refused although this process holds CAP_BPF and {needed[0]}: "
                "kernel lockdown or an LSM policy forbids it"
            )
        if err in (errno.EBUSY, errno.EEXIST):
            raise BackendError(f"attaching to {what}: another XDP program is already attached there")
        detail = _libbpf_detail(messages) or os.strerror(err)
        raise BackendError(f"attaching to {what} failed: {detail}")

    def close(self) -> None:
        ptr, self._ptr = self._ptr, None
        self.maps = {}
        if ptr is not None:
            libbpf.lib().bpf_object__close(ptr)


def _driver_of(interface: str) -> str:
    """'the driver of eth0 (virtio_net)', or without the name where sysfs has none (lo, veth's peer)."""
    try:
        name = os.path.basename(os.readlink(f"/sys/class/net/{interface}/device/driver"))
    except OSError:
        return f"the driver of {interface}"
    return f"the driver of {interface} ({name})"


def _capability_fix(missing: Iterable[str]) -> str:
    names = list(missing)
    return f"missing {', '.join(names)}; {capability_fix(names)}"


# -------------------------------------------------------------------------------------- programs

_live: weakref.WeakSet[Program] = weakref.WeakSet()


class Program:
    """Base of the built-in programs: ``with load("syscalls") as prog: prog.attach(); prog.read()``.

    Subclasses set ``name`` and ``capabilities`` and implement ``_attach()`` and ``read()``.
    ``read()`` is thread-safe; ``close()`` is idempotent.
    """

    name = ""
    capabilities: tuple[str, ...] = ("CAP_BPF", "CAP_PERFMON")

    def __init__(self) -> None:
        self.obj: BpfObject | None = None
        self.links: list[Link] = []
        self.pinned_at: str | None = None
        self._read_lock = threading.Lock()

    @property
    def object_path(self) -> str:
        return os.path.join(os.path.dirname(__file__), "programs", f"{self.name}.bpf.o")

    # -- lifecycle

    def load(self) -> Self:
        check_capabilities(self.capabilities, what=f"the {self.name} eBPF program")
        btf = self._btf_custom_path()
        try:
            self._load_object(btf)
        except (BackendError, VerifierError):
            if btf is None:
                raise
            # A custom BTF (execsnoop's cached minimised one) libbpf cannot use, truncated or corrupt:
            # it failed to parse ("failed to parse target BTF"), or parsed without the types the
            # relocations need (the verifier then rejects the poisoned instructions). Try what the
            # subclass offers instead, ending with the kernel's full BTF.
            last: BaseException | None = None
            for fallback in self._btf_fallbacks(btf):
                try:
                    self._load_object(fallback)
                    break
                except (BackendError, VerifierError) as exc:
                    last = exc
            else:
                raise last or BackendError(f"loading {self.name} failed") from None
        _live.add(self)
        return self

    def _load_object(self, btf_custom_path: str | None) -> None:
        obj = BpfObject(self.object_path, btf_custom_path=btf_custom_path)
        try:
            self._configure(obj)
            obj.load()
            self.obj = obj
            self._after_load(obj)
        except BaseException:
            obj.close()
            self.obj = None
            raise

    def attach(self) -> Self:
        """Attach to the program's hooks; on any failure, what was attached is detached again."""
        obj = self._require_loaded()
        if self.links:
            return self
        try:
            self.links = self._attach(obj)
        except BaseException:
            self._destroy_links()
            raise
        return self

    def close(self, wait: bool = True) -> threading.Event:
        """Detach and unload. ``wait=False`` returns at once and detaches in a background thread
        (the returned Event is set when done): use it from an event loop or a signal path."""
        with self._read_lock:  # a read() in another thread finishes before the maps' fds go
            links, self.links = self.links, []
            obj, self.obj = self.obj, None
        _live.discard(self)
        if not wait and (links or obj is not None):
            return _reaper.submit(links, obj)
        for link in links:
            link.destroy()
        if obj is not None:
            obj.close()
        done = threading.Event()
        done.set()
        return done

    @property
    def attached(self) -> bool:
        return bool(self.links)

    def __enter__(self) -> Self:
        if self.obj is None:
            self.load()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # Last resort for a Program dropped without close(). At interpreter exit the modules it needs
        # may be gone, and the kernel frees everything with the process's fds anyway.
        if sys.is_finalizing():
            return
        if getattr(self, "obj", None) is not None or getattr(self, "links", None):
            self.close()

    # -- pinning

    @property
    def pin_name(self) -> str:
        """The directory under /sys/fs/bpf/hypermesh/ that ``pin()`` uses (and ``detach`` takes)."""
        return self.name

    def check_pin_free(self) -> str:
        """The pin directory ``pin()`` would use; InvalidInput when something is pinned there already
        (worth knowing before the attach: for XDP the pinned program occupies the interface)."""
        require_bpffs("pinning")
        path = os.path.join(PIN_ROOT, self.pin_name)
        if os.path.exists(path):
            raise InvalidInput(
                f"{self.pin_name} is already pinned at {path}: 'hypermesh ebpf detach {self.pin_name}' first"
            )
        return path

    def pin(self) -> str:
        """Pin links and maps under /sys/fs/bpf/hypermesh/<pin_name>/: they outlive this process until
        ``hypermesh ebpf detach <pin_name>`` removes them."""
        obj = self._require_loaded()
        if not self.links:
            raise InvalidInput(
                f"attach {self.name} before pinning it: a pinned program that is not attached does nothing"
            )
        path = self.check_pin_free()
        try:
            os.makedirs(path)
        except PermissionError as exc:
            raise PermissionDenied(
                f"cannot pin {self.name} at {path} ({exc.filename}: {exc.strerror}): run as root, the owner of "
                f"{PIN_ROOT}",
                "CAP_DAC_OVERRIDE",
            ) from None
        try:
            for i, link in enumerate(self.links):
                link.pin(os.path.join(path, f"link-{i}-{link.kind}"))
            for name, m in obj.maps.items():
                if "." in name:  # internal .rodata/.bss maps; bpffs refuses dots in names anyway
                    continue
                rc = libbpf.lib().bpf_obj_pin(m.fd, os.path.join(path, f"map-{name}").encode())
                if rc != 0:
                    raise BackendError(f"pinning map {name} at {path}: {libbpf.strerror(rc)}")
        except BaseException:
            _remove_pin_dir(path)
            raise
        self.pinned_at = path
        return path

    # -- for subclasses

    def _btf_custom_path(self) -> str | None:
        return None

    def _btf_fallbacks(self, failed: str) -> list[str | None]:
        """BTF paths to try, in order, after a load with ``failed`` as btf_custom_path failed
        (None: the kernel's own vmlinux BTF)."""
        return [None]

    def _configure(self, obj: BpfObject) -> None:
        """Before load: choose which programs autoload."""

    def _after_load(self, obj: BpfObject) -> None:
        """After load, before attach: write configuration maps, prepare read buffers."""

    def _attach(self, obj: BpfObject) -> list[Link]:
        raise NotImplementedError

    def read(self) -> Record:
        raise NotImplementedError

    def _require_loaded(self) -> BpfObject:
        if self.obj is None:
            raise InvalidInput(f"the {self.name} program is not loaded (use hypermesh.ebpf.load) or already closed")
        return self.obj

    def _destroy_links(self) -> None:
        links, self.links = self.links, []
        for link in links:
            link.destroy()


def close_all(wait: bool = True) -> None:
    """Close every Program still open in this process (the CLI calls it on SIGINT/SIGTERM)."""
    for prog in list(_live):
        prog.close(wait=wait)


# --------------------------------------------------------------------------------------- pinning


def require_bpffs(what: str) -> None:
    """Pins live on bpffs: without it mounted at /sys/fs/bpf nothing can be pinned, listed or removed
    (another mount namespace may well hold pins: "nothing pinned" would be a guess)."""
    if not os.path.ismount(BPFFS):
        raise Unsupported(what, f"bpffs is not mounted at {BPFFS}: mount -t bpf bpf {BPFFS}")


_LINK_TYPE_XDP = 6  # enum bpf_link_type


def pin_component(name: str) -> str:
    """``name`` (an interface's) as a bpffs file name: bpffs refuses names with a dot (reserved,
    EPERM), which interface names may have (eth0.100), so '.', '%' and bytes outside printable
    ASCII are written %XX."""
    return "".join(chr(b) if 0x20 < b < 0x7F and b not in (0x25, 0x2E) else f"%{b:02X}" for b in os.fsencode(name))


def unpin_component(text: str) -> str:
    """The inverse of ``pin_component``."""
    out, i = bytearray(), 0
    while i < len(text):
        code = text[i + 1 : i + 3]
        if text[i] == "%" and len(code) == 2 and all(c in "0123456789ABCDEFabcdef" for c in code):
            out.append(int(code, 16))
            i += 3
        else:
            out += text[i].encode()
            i += 1
    return os.fsdecode(bytes(out))


def _pinned_info(path: str) -> tuple[int | None, int | None, int | None]:
    """(id, type, XDP ifindex) of a pinned object, from the kernel; Nones where unknown."""
    lib = libbpf.lib()
    fd = lib.bpf_obj_get(path.encode())
    if fd < 0:
        return None, None, None
    try:
        # bpf_{prog,map,link}_info all start with (type, id); a link's then has prog_id and, 8-aligned,
        # the union whose xdp member is the ifindex (0 once the kernel detached it: interface deleted).
        info = (ctypes.c_uint32 * 8)()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        if lib.bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) != 0:
            return None, None, None
        return int(info[1]), int(info[0]), int(info[4])
    finally:
        os.close(fd)


def _pinned_id(path: str) -> int | None:
    return _pinned_info(path)[0]


def _pinned_object(path: str, kind: str, pin_name: str) -> PinnedObject:
    object_id, link_type, ifindex = _pinned_info(path)
    if kind != "link" or object_id is None:
        return PinnedObject(path=path, kind=kind, id=object_id)
    if link_type != _LINK_TYPE_XDP:
        return PinnedObject(path=path, kind=kind, id=object_id, attached=True)
    interface = None
    if ifindex:
        try:
            interface = socket.if_indextoname(ifindex)
        except OSError:  # attached to an interface in another network namespace
            interface = f"ifindex {ifindex}"
    elif pin_name.startswith("xdp-"):
        interface = unpin_component(pin_name[4:])  # gone: the name it was pinned under
    return PinnedObject(path=path, kind=kind, id=object_id, attached=bool(ifindex), interface=interface)


def pinned() -> list[PinnedProgram]:
    """What hypermesh pinned under /sys/fs/bpf/hypermesh/ (empty when nothing is, or bpffs is absent).

    Something another tool pinned straight into that directory (not in a program's directory) is
    listed too, under its own name, with its kind read from the kernel."""
    try:
        names = sorted(os.listdir(PIN_ROOT))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except PermissionError as exc:
        raise PermissionDenied(f"cannot list {PIN_ROOT}: {exc.strerror}; run as root", "CAP_SYS_ADMIN") from None
    out = []
    for name in names:
        path = os.path.join(PIN_ROOT, name)
        if not os.path.isdir(path):
            objects = [_pinned_object(path, _pinned_kind(path), name)]
        else:
            objects = [
                _pinned_object(os.path.join(path, e), e.split("-", 1)[0], name) for e in sorted(os.listdir(path))
            ]
        links = [o for o in objects if o.kind == "link"]
        out.append(
            PinnedProgram(
                name=name,
                path=path,
                objects=objects,
                interface=next((o.interface for o in links if o.interface), None),
                attached=all(bool(o.attached) for o in links) if links else None,
            )
        )
    return out


def _pinned_kind(path: str) -> str:
    """ "map", "prog" or "link" for a pin of unknown origin, from the kernel's fdinfo of the object."""
    fd = libbpf.lib().bpf_obj_get(path.encode())
    if fd < 0:
        return "unknown"
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            fields = {line.split(":", 1)[0] for line in f}
    except OSError:
        return "unknown"
    finally:
        os.close(fd)
    return next((kind for kind in ("link", "prog", "map") if f"{kind}_type" in fields), "unknown")


def _remove_pin_dir(path: str) -> None:
    if not os.path.isdir(path):
        os.unlink(path)
        return
    for entry in os.listdir(path):
        _remove_pin_dir(os.path.join(path, entry))
    os.rmdir(path)


def detach_pinned(name: str) -> PinnedProgram:
    """Remove the pins of ``name``: once no process holds it either, the kernel detaches and frees it."""
    require_bpffs(f"detaching {name}")
    for entry in pinned():
        if entry.name == name:
            try:
                _remove_pin_dir(entry.path)
            except PermissionError as exc:
                raise PermissionDenied(
                    f"cannot remove the pins of {name} ({exc.filename}: {exc.strerror}): run as root, the "
                    f"owner of {PIN_ROOT}",
                    "CAP_DAC_OVERRIDE",
                ) from None
            return entry
    raise NotFound(f"nothing named {name!r} is pinned under {PIN_ROOT}", [p.name for p in pinned()])
