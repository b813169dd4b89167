"""``xdp``: per-CPU packet and byte counts by protocol on one interface; the program always passes.

Attached through a bpf_link (detached when the link closes, never left behind by a crash), native
mode first and generic (skb) mode when the driver has no XDP support; ``mode`` says which.
"""

from __future__ import annotations

import ctypes
import socket

from hypermesh.ebpf import libbpf
from hypermesh.ebpf.link import Link
from hypermesh.ebpf.maps import Map
from hypermesh.ebpf.object import Collection
from hypermesh.ebpf.pin import pin_component
from hypermesh.ebpf.program import Program
from hypermesh.errors import InvalidInput, NotFound
from hypermesh.model import Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["XdpCounts", "XdpProgram", "interface_index"]

# Slot order of the enum in packet_protocol.h (shared by xdp.bpf.c and tc.bpf.c).
PROTOCOLS = (
    "ipv4_tcp", "ipv4_udp", "ipv4_icmp", "ipv4_other",
    "ipv6_tcp", "ipv6_udp", "ipv6_icmp", "ipv6_other",
    "arp", "other",
)  # fmt: skip
_N = len(PROTOCOLS)
MODES = ("auto", "native", "generic")


@record
class XdpCounts(Record):
    interface: str
    mode: str
    packets: Mapping[str, int]
    bytes: Mapping[str, int]
    total_packets: int
    total_bytes: int
    cpu_packets: tuple[int, ...]  # packets per possible CPU (the kernel counts per CPU, without atomics)
    # Per possible CPU, by protocol: one list per CPU, in the order of PROTOCOLS (the keys of
    # packets/bytes). Lists, not dicts: building 2 x CPUs dicts doubled the cost of a read.
    cpu_packets_by_protocol: tuple[tuple[int, ...], ...]
    cpu_bytes_by_protocol: tuple[tuple[int, ...], ...]


def interface_index(interface: str) -> int:
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        raise NotFound(
            f"no network interface {interface!r} in this network namespace",
            [name for _, name in socket.if_nameindex()],
        ) from None


class XdpProgram(Program):
    name = "xdp"
    # CAP_PERFMON too: the frame length (data_end - data) is pointer arithmetic, which the verifier
    # allows only with it ("pointer -= pointer prohibited" otherwise).
    capabilities = ("CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN")

    def __init__(self, interface: str, mode: str = "auto") -> None:
        super().__init__()
        if not isinstance(interface, str) or not interface:
            raise InvalidInput(
                f"interface must be an interface name (str), got {type(interface).__name__} {interface!r}"
            )
        if mode not in MODES:
            raise InvalidInput(f"XDP mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.interface = interface
        self.ifindex = interface_index(interface)
        self.mode = mode
        self.attached_mode = ""
        self.native_refused = ""  # after auto fell back to generic: why native mode was refused

    @property
    def pin_name(self) -> str:
        """One pin per interface: xdp-<interface> (bpffs-safe spelling, see pin_component)."""
        return f"xdp-{pin_component(self.interface)}"

    def _after_load(self, collection: Collection) -> None:
        self._stats: Map | None = None  # made at the first read: not part of the load

    def _prepare_read(self, collection: Collection) -> Map:
        stats = self._stats = collection.map("xdp_stats")
        self._key = ctypes.create_string_buffer(4)  # key 0
        self._value = ctypes.create_string_buffer(stats.value_buffer_size)
        self._stride = stats.slot_size // 8
        return stats

    def _attach(self, collection: Collection) -> list[Link]:
        link = collection.attach_xdp("count_packets", self.ifindex, self.interface, self.mode)
        self.attached_mode = link.mode
        self.native_refused = link.native_refused
        return [link]

    def interface_gone(self) -> bool:
        """Whether the kernel detached the program because its interface was deleted after the attach:
        the counts stop where that happened. (An interface moved to another namespace keeps it.)"""
        if not self.links:
            return False
        # struct bpf_link_info: type, id, prog_id, then (8-aligned) xdp.ifindex, 0 once the device is gone.
        info = (ctypes.c_uint32 * 8)()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        if libbpf.lib().bpf_obj_get_info_by_fd(self.links[0].fd, info, ctypes.byref(size)) != 0:
            return False
        return info[4] == 0

    def read(self) -> XdpCounts:
        """Sum of every CPU's counters: one bpf() lookup returns all protocols for all CPUs."""
        with self._read_lock:
            collection = self._require_loaded()  # under the lock: close() takes it too
            stats = self._stats or self._prepare_read(collection)
            stats.lookup_into(self._key, self._value)
            words = memoryview(self._value).cast("B").cast("Q").tolist()
        stride = self._stride
        per_cpu = [words[c : c + 2 * _N] for c in range(0, len(words), stride)]
        totals = [sum(column) for column in zip(*per_cpu, strict=True)]
        by_packets = [cpu[:_N] for cpu in per_cpu]
        packets = dict(zip(PROTOCOLS, totals[:_N], strict=True))
        byte_counts = dict(zip(PROTOCOLS, totals[_N:], strict=True))
        return XdpCounts(
            interface=self.interface,
            mode=self.attached_mode,
            packets=packets,
            bytes=byte_counts,
            total_packets=sum(totals[:_N]),
            total_bytes=sum(totals[_N:]),
            cpu_packets=tuple([sum(cpu) for cpu in by_packets]),
            cpu_packets_by_protocol=tuple([tuple(cpu) for cpu in by_packets]),
            cpu_bytes_by_protocol=tuple([tuple(cpu[_N:]) for cpu in per_cpu]),
        )


PROGRAM = XdpProgram
