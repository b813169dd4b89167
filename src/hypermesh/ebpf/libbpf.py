"""The one module that touches libbpf.so.1, through ctypes.

Only the libbpf 1.x ABI is used (Debian ``libbpf1`` >= 1.1): functions returning a pointer return NULL
and set errno, functions returning int return ``-errno``. Struct layouts below mirror
``/usr/include/bpf/{libbpf,bpf}.h`` of libbpf 1.1; every ``*_opts`` struct starts with its size, so
newer libbpf versions accept them unchanged.

libbpf reports details (CO-RE failures, the verifier log) only through its print callback. We install
one callback per process that appends warnings to a per-thread capture list while hypermesh is inside
a libbpf call that may fail, so an error can carry exactly the lines that explain it.

The library is an argument, as httpx's transport is: ``lib()`` is the process's binding and the
default of every ``lib=`` parameter (``ObjectSpec``, ``pinned``); ``open_library(override, loader=...)``
binds whatever the loader returns. Tests pass a fake library there (tests/fixtures/libbpf), no
monkey-patching and no root needed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    c_bool,
    c_char_p,
    c_int,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)

from hypermesh.errors import Unsupported

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager
    from typing import Any

__all__ = [
    "LIBBPF_PACKAGE",
    "MAP_TYPE_NAMES",
    "PROG_TYPE_NAMES",
    "Lib",
    "bounded_message",
    "capture",
    "explain",
    "lib",
    "open_library",
    "strerror",
]

MIN_VERSION = (1, 1)
LIBBPF_PACKAGE = "libbpf1 (Debian/Ubuntu: apt install libbpf1; Fedora/Arch: the libbpf package)"

# enum libbpf_print_level
LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2

# uapi enum bpf_prog_type and enum bpf_map_type (include/uapi/linux/bpf.h, Linux 6.1): the one table of
# their names, for everything that shows a type to a user (``hypermesh ebpf load``'s listing).
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
_PROG_TYPES = {name: number for number, name in PROG_TYPE_NAMES.items()}
_MAP_TYPES = {name: number for number, name in MAP_TYPE_NAMES.items()}

PROG_TYPE_KPROBE = _PROG_TYPES["kprobe"]
PROG_TYPE_TRACEPOINT = _PROG_TYPES["tracepoint"]
PROG_TYPE_XDP = _PROG_TYPES["xdp"]
PROG_TYPE_SCHED_CLS = _PROG_TYPES["sched_cls"]
PROG_TYPE_RAW_TRACEPOINT = _PROG_TYPES["raw_tracepoint"]
PROG_TYPE_TRACING = _PROG_TYPES["tracing"]
MAP_TYPE_HASH = _MAP_TYPES["hash"]
MAP_TYPE_PERCPU_HASH = _MAP_TYPES["percpu_hash"]
MAP_TYPE_PERCPU_ARRAY = _MAP_TYPES["percpu_array"]
MAP_TYPE_LRU_PERCPU_HASH = _MAP_TYPES["lru_percpu_hash"]
MAP_TYPE_PERCPU_CGROUP_STORAGE = _MAP_TYPES["percpu_cgroup_storage"]
MAP_TYPE_RINGBUF = _MAP_TYPES["ringbuf"]
ATTACH_XDP = 37  # enum bpf_attach_type
ATTACH_TCX_INGRESS, ATTACH_TCX_EGRESS = 46, 47  # Linux 6.6+
LINK_TYPE_XDP = 6  # enum bpf_link_type
LINK_TYPE_TCX = 11  # Linux 6.6+
TC_INGRESS, TC_EGRESS = 1 << 0, 1 << 1  # enum bpf_tc_attach_point
TC_F_REPLACE = 1 << 0  # enum bpf_tc_flags
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2


def prog_type_name(number: int) -> str:
    return PROG_TYPE_NAMES.get(number, str(number))


def map_type_name(number: int) -> str:
    return MAP_TYPE_NAMES.get(number, str(number))


PERCPU_MAP_TYPES = frozenset(
    {MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY, MAP_TYPE_LRU_PERCPU_HASH, MAP_TYPE_PERCPU_CGROUP_STORAGE}
)


class ObjectOpenOpts(ctypes.Structure):
    """struct bpf_object_open_opts (libbpf 1.1)."""

    _fields_ = [
        ("sz", c_size_t),
        ("object_name", c_char_p),
        ("relaxed_maps", c_bool),
        ("pin_root_path", c_char_p),
        ("_removed_attach_prog_fd", c_uint32),
        ("kconfig", c_char_p),
        ("btf_custom_path", c_char_p),
        ("kernel_log_buf", c_char_p),
        ("kernel_log_size", c_size_t),
        ("kernel_log_level", c_uint32),
    ]


class LinkCreateOpts(ctypes.Structure):
    """struct bpf_link_create_opts (libbpf 1.1); the union is kept zeroed."""

    _fields_ = [
        ("sz", c_size_t),
        ("flags", c_uint32),
        ("iter_info", c_void_p),
        ("iter_info_len", c_uint32),
        ("target_btf_id", c_uint32),
        ("_union", c_uint8 * 32),
    ]


class TcHook(ctypes.Structure):
    """struct bpf_tc_hook (libbpf 1.1): a clsact qdisc's ingress or egress side of an interface."""

    _fields_ = [("sz", c_size_t), ("ifindex", c_int), ("attach_point", c_uint32), ("parent", c_uint32)]


class TcOpts(ctypes.Structure):
    """struct bpf_tc_opts (libbpf 1.1): one cls_bpf filter, by handle and priority."""

    _fields_ = [
        ("sz", c_size_t),
        ("prog_fd", c_int),
        ("flags", c_uint32),
        ("prog_id", c_uint32),
        ("handle", c_uint32),
        ("priority", c_uint32),
    ]


class MapBatchOpts(ctypes.Structure):
    _fields_ = [("sz", c_size_t), ("elem_flags", c_uint64), ("flags", c_uint64)]


PRINT_FN = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
RINGBUF_SAMPLE_FN = CFUNCTYPE(c_int, c_void_p, c_void_p, c_size_t)

# name: (restype, argtypes)
_SIGNATURES: dict[str, tuple[object, list[object]]] = {
    "libbpf_major_version": (c_uint32, []),
    "libbpf_minor_version": (c_uint32, []),
    "libbpf_set_print": (c_void_p, [PRINT_FN]),
    "libbpf_strerror": (c_int, [c_int, c_char_p, c_size_t]),
    "libbpf_num_possible_cpus": (c_int, []),
    "libbpf_probe_bpf_prog_type": (c_int, [c_int, c_void_p]),
    "libbpf_probe_bpf_map_type": (c_int, [c_int, c_void_p]),
    "bpf_object__open_file": (c_void_p, [c_char_p, POINTER(ObjectOpenOpts)]),
    "bpf_object__load": (c_int, [c_void_p]),
    "bpf_object__close": (None, [c_void_p]),
    "bpf_object__name": (c_char_p, [c_void_p]),
    "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p]),
    "bpf_object__next_map": (c_void_p, [c_void_p, c_void_p]),
    "bpf_object__find_program_by_name": (c_void_p, [c_void_p, c_char_p]),
    "bpf_program__name": (c_char_p, [c_void_p]),
    "bpf_program__section_name": (c_char_p, [c_void_p]),
    "bpf_program__fd": (c_int, [c_void_p]),
    "bpf_program__type": (c_int, [c_void_p]),
    "bpf_program__insn_cnt": (c_size_t, [c_void_p]),
    "bpf_program__set_autoload": (c_int, [c_void_p, c_bool]),
    "bpf_program__autoload": (c_bool, [c_void_p]),
    "bpf_program__attach": (c_void_p, [c_void_p]),
    "bpf_program__attach_tracepoint": (c_void_p, [c_void_p, c_char_p, c_char_p]),
    "bpf_program__attach_kprobe": (c_void_p, [c_void_p, c_bool, c_char_p]),
    "bpf_program__attach_perf_event": (c_void_p, [c_void_p, c_int]),
    "bpf_program__attach_lsm": (c_void_p, [c_void_p]),
    "bpf_program__attach_raw_tracepoint": (c_void_p, [c_void_p, c_char_p]),
    "bpf_link__destroy": (c_int, [c_void_p]),
    "bpf_link__fd": (c_int, [c_void_p]),
    "bpf_link__pin": (c_int, [c_void_p, c_char_p]),
    "bpf_link_create": (c_int, [c_int, c_int, c_int, POINTER(LinkCreateOpts)]),
    "bpf_xdp_attach": (c_int, [c_int, c_int, c_uint32, c_void_p]),
    "bpf_xdp_detach": (c_int, [c_int, c_uint32, c_void_p]),
    "bpf_tc_hook_create": (c_int, [POINTER(TcHook)]),
    "bpf_tc_hook_destroy": (c_int, [POINTER(TcHook)]),
    "bpf_tc_attach": (c_int, [POINTER(TcHook), POINTER(TcOpts)]),
    "bpf_tc_detach": (c_int, [POINTER(TcHook), POINTER(TcOpts)]),
    "bpf_tc_query": (c_int, [POINTER(TcHook), POINTER(TcOpts)]),
    "bpf_prog_get_fd_by_id": (c_int, [c_uint32]),
    "bpf_map__name": (c_char_p, [c_void_p]),
    "bpf_map__fd": (c_int, [c_void_p]),
    "bpf_map__type": (c_int, [c_void_p]),
    "bpf_map__key_size": (c_uint32, [c_void_p]),
    "bpf_map__value_size": (c_uint32, [c_void_p]),
    "bpf_map__max_entries": (c_uint32, [c_void_p]),
    "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, c_uint64]),
    "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_lookup_batch": (
        c_int,
        [c_int, c_void_p, c_void_p, c_void_p, c_void_p, POINTER(c_uint32), POINTER(MapBatchOpts)],
    ),
    "bpf_obj_pin": (c_int, [c_int, c_char_p]),
    "bpf_obj_get": (c_int, [c_char_p]),
    "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p, POINTER(c_uint32)]),
    "ring_buffer__new": (c_void_p, [c_int, RINGBUF_SAMPLE_FN, c_void_p, c_void_p]),
    "ring_buffer__poll": (c_int, [c_void_p, c_int]),
    "ring_buffer__consume": (c_int, [c_void_p]),
    "ring_buffer__free": (None, [c_void_p]),
}


class Lib:
    """libbpf with typed functions as attributes (``lib.bpf_object__load(obj)``).

    ``cdll`` is what ``open_library`` bound (``ctypes.CDLL``); everything that calls libbpf takes a
    ``Lib`` argument defaulting to ``lib()``, the process's one binding, so a test can hand in a
    ``Lib`` over a fake library instead (the seam: httpx's transport argument)."""

    def __init__(self, cdll: Any) -> None:
        self.cdll = cdll
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(cdll, name)
            fn.restype = restype
            fn.argtypes = argtypes
            setattr(self, name, fn)
        self.version = (int(cdll.libbpf_major_version()), int(cdll.libbpf_minor_version()))
        self.possible_cpus = int(cdll.libbpf_num_possible_cpus())
        self._libc = ctypes.CDLL(None, use_errno=True)
        # vasprintf allocates what the message needs: the verifier log arrives as one message of any
        # size (libbpf grows its buffer until the kernel's log fits, 16 MiB and up), and its end holds
        # the complaint. A fixed buffer would keep the start and lose exactly that.
        self._libc.vasprintf.restype = c_int
        self._libc.vasprintf.argtypes = [POINTER(c_void_p), c_char_p, c_void_p]
        self._libc.free.restype = None
        self._libc.free.argtypes = [c_void_p]
        self._print_fn = PRINT_FN(self._on_print)  # kept referenced: libbpf holds the pointer
        # libbpf calls the print function ~60 times per load (mostly debug lines): through ctypes that
        # is ~0.1 ms, a third of a whole load. So none is installed on the fast path (libbpf then
        # prints nothing), and a failed call is replayed inside capture() to collect the explanation.
        self._captures = 0
        self._capture_lock = threading.Lock()
        self._no_print = PRINT_FN()  # a NULL function pointer: libbpf prints nothing
        cdll.libbpf_set_print(self._no_print)

    def __getattr__(self, name: str) -> Callable[..., Any]:  # pragma: no cover - typing aid only
        raise AttributeError(name)

    def capture(self) -> AbstractContextManager[_Capture]:
        """Collect libbpf's warnings printed by this thread inside the ``with`` block."""
        return _Capture(self)

    def strerror(self, err: int) -> str:
        """libbpf's text for an error code (positive or negative), which knows libbpf's own codes."""
        buf = ctypes.create_string_buffer(256)
        self.libbpf_strerror(abs(err), buf, len(buf))
        return buf.value.decode("utf-8", "replace") or os.strerror(abs(err))

    @staticmethod
    def errno() -> int:
        """errno as the last libbpf call returning NULL left it (ctypes keeps a copy per thread)."""
        return ctypes.get_errno()

    def _capture_begin(self) -> None:
        with self._capture_lock:
            if self._captures == 0:
                self.cdll.libbpf_set_print(self._print_fn)
            self._captures += 1

    def _capture_end(self) -> None:
        with self._capture_lock:
            self._captures -= 1
            if self._captures == 0:
                self.cdll.libbpf_set_print(self._no_print)

    def _on_print(self, level: int, fmt: bytes | None, args: int | None) -> int:
        messages: list[str] | None = getattr(_capture_state, "messages", None)
        if messages is None or level == LIBBPF_DEBUG or fmt is None:
            return 0
        if args is None:  # no va_list: the message came formatted already (a test's fake library)
            messages.append(bounded_message(fmt).decode("utf-8", "replace"))
            return 0
        out = c_void_p()
        n = self._libc.vasprintf(ctypes.byref(out), fmt, args)
        if n < 0 or not out.value:
            return 0
        try:
            messages.append(bounded_message(ctypes.string_at(out.value, n)).decode("utf-8", "replace"))
        finally:
            self._libc.free(out)
        return 0


MESSAGE_LIMIT = 1 << 20


def bounded_message(message: bytes, limit: int = MESSAGE_LIMIT) -> bytes:
    """``message`` cut to about ``limit`` bytes, keeping its first line and its END.

    A verifier log is one message; its first line is libbpf's "-- BEGIN PROG LOAD LOG --" marker
    and its last lines are the verifier's complaint and "processed N insns". What is cut is the
    middle, at line boundaries, and a line says how much."""
    if len(message) <= limit:
        return message
    first_end = message.find(b"\n")
    first = message[: first_end + 1] if 0 <= first_end < 4096 else b""
    tail = message[len(message) - limit :]
    newline = tail.find(b"\n")
    if 0 <= newline < len(tail) - 1:
        tail = tail[newline + 1 :]
    cut = len(message) - len(first) - len(tail)
    return (
        first
        + f"... ({cut} bytes cut here: only the last {limit // 1024} KiB of this message are kept)\n".encode()
        + tail
    )


def explain(messages: list[str], limit: int = 3) -> str:
    """The last ``limit`` lines libbpf printed (the verifier log's markers left out): what a failed
    call's error carries when the kernel gave no verifier log."""
    lines = [line.strip() for m in messages for line in m.splitlines() if line.strip()]
    lines = [line for line in lines if "PROG LOAD LOG" not in line]
    return "; ".join(lines[-limit:])


_capture_state = threading.local()


class _Capture:
    """Collects ``lib``'s warnings printed by this thread inside the ``with`` block."""

    def __init__(self, lib: Lib) -> None:
        self.messages: list[str] = []
        self._lib = lib
        self._outer: list[str] | None = None

    def __enter__(self) -> _Capture:
        self._lib._capture_begin()
        self._outer = getattr(_capture_state, "messages", None)
        _capture_state.messages = self.messages
        return self

    def __exit__(self, *exc: object) -> None:
        _capture_state.messages = self._outer
        self._lib._capture_end()

    @property
    def text(self) -> str:
        return "".join(self.messages)

    def lines(self) -> Iterator[str]:
        for message in self.messages:
            yield from message.splitlines()


_lib: Lib | None = None
_lib_lock = threading.Lock()


def lib() -> Lib:
    """The bound libbpf, loaded once per process; Unsupported naming the package if it is missing."""
    global _lib
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is None:
            _lib = open_library(os.environ.get("HYPERMESH_LIBBPF"))
    return _lib


def _ctypes_loader(name: str) -> Any:
    return ctypes.CDLL(name, use_errno=True)


def open_library(override: str | None = None, *, loader: Callable[[str], Any] = _ctypes_loader) -> Lib:
    """Bind libbpf >= 1.1: ``override`` (the value of HYPERMESH_LIBBPF: that one library, no fall back,
    for a libbpf built elsewhere) or the system's. ``loader`` turns a library name into its functions
    or raises OSError (``ctypes.CDLL``; a test passes one that returns a fake library)."""
    candidates = [override] if override else ["libbpf.so.1", ctypes.util.find_library("bpf")]
    errors = []
    for candidate in candidates:
        if not candidate:
            continue
        try:
            cdll = loader(candidate)
        except OSError as exc:
            errors.append(str(exc))
            continue
        if not hasattr(cdll, "libbpf_major_version") or not hasattr(cdll, "libbpf_minor_version"):
            errors.append(f"{candidate} is not libbpf (it has no libbpf_major_version)")
            continue
        cdll.libbpf_major_version.restype = c_uint32
        cdll.libbpf_minor_version.restype = c_uint32
        # 1.0 made NULL + errno / -errno the only error convention, which this binding relies on; the
        # struct layouts mirror 1.1 (Debian 12's), the oldest version this binding is tested with.
        version = (int(cdll.libbpf_major_version()), int(cdll.libbpf_minor_version()))
        if version < MIN_VERSION:
            errors.append(f"{candidate} is libbpf {version[0]}.{version[1]}, older than 1.1")
            continue
        missing = [name for name in _SIGNATURES if not hasattr(cdll, name)]
        if missing:
            errors.append(f"{candidate} (libbpf {version[0]}.{version[1]}) lacks {', '.join(missing[:5])}")
            continue
        return Lib(cdll)
    detail = "; ".join(errors) or "libbpf.so.1 not found"
    if override:
        raise Unsupported(
            "eBPF",
            f"HYPERMESH_LIBBPF={override}: {detail}; point it at libbpf.so.1 >= 1.1, or unset it to use the "
            f"system's: {LIBBPF_PACKAGE}",
        )
    raise Unsupported("eBPF", f"libbpf >= 1.1 is needed: install {LIBBPF_PACKAGE} ({detail})")


def capture() -> AbstractContextManager[_Capture]:
    """``lib().capture()``."""
    return lib().capture()


def strerror(err: int) -> str:
    """``lib().strerror(err)``."""
    return lib().strerror(err)


def get_errno() -> int:
    return ctypes.get_errno()
