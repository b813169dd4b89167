"""``tc``: per-CPU packet and byte counts by protocol in each direction of an interface (XDP sees only
ingress); the programs never change a verdict (TC_ACT_UNSPEC: whatever comes after them decides).

Two attach paths, ``attach_path`` says which one was taken:

- ``tcx``: a bpf_link per direction (Linux 6.6+). The kernel detaches it when the link's fd closes,
  so nothing is left on the interface after exit, SIGTERM or SIGKILL.
- ``clsact``: a cls_bpf filter per direction on a clsact qdisc (older kernels; see ``clsact.py``).
  Closing removes it; a filter left by a killed process is recognised and removed by the next run on
  the interface and by ``hypermesh ebpf detach tc-IF``.

``auto`` takes tcx where the kernel has it and clsact otherwise (``fallback_reason`` says why).
"""

from __future__ import annotations

import ctypes
import sys

from hypermesh.ebpf import clsact
from hypermesh.ebpf.object import Collection, ObjectSpec
from hypermesh.ebpf.pin import pin_component
from hypermesh.ebpf.program import Program
from hypermesh.ebpf.programs.xdp import PROTOCOLS, interface_index
from hypermesh.errors import InvalidInput, Unsupported
from hypermesh.model import Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

    from hypermesh.ebpf.link import Link

__all__ = ["DIRECTIONS", "TcCounts", "TcDirectionCounts", "TcProgram"]

DIRECTIONS = ("ingress", "egress")  # the keys of tc.bpf.c's tc_stats map, in order
DIRECTION_CHOICES = ("ingress", "egress", "both")
ATTACH_CHOICES = ("auto", "tcx", "clsact")
PROGRAM_OF = {"ingress": "hm_tc_ingress", "egress": "hm_tc_egress"}
_N = len(PROTOCOLS)


@record
class TcDirectionCounts(Record):
    packets: Mapping[str, int]
    bytes: Mapping[str, int]
    total_packets: int
    total_bytes: int
    cpu_packets: tuple[int, ...]  # packets per possible CPU (the kernel counts per CPU, without atomics)


@record
class TcCounts(Record):
    interface: str
    attach: str  # "tcx" | "clsact": how the programs are attached
    ingress: TcDirectionCounts | None  # None: that direction was not asked for
    egress: TcDirectionCounts | None


class TcProgram(Program):
    name = "tc"
    capabilities = ("CAP_BPF", "CAP_NET_ADMIN")

    def __init__(self, interface: str, direction: str = "both", attach: str = "auto") -> None:
        super().__init__()
        if not isinstance(interface, str) or not interface:
            raise InvalidInput(
                f"interface must be an interface name (str), got {type(interface).__name__} {interface!r}"
            )
        if direction not in DIRECTION_CHOICES:
            raise InvalidInput(f"TC direction must be one of {', '.join(DIRECTION_CHOICES)}, got {direction!r}")
        if attach not in ATTACH_CHOICES:
            raise InvalidInput(f"TC attach must be one of {', '.join(ATTACH_CHOICES)}, got {attach!r}")
        self.interface = interface
        self.ifindex = interface_index(interface)
        self.directions = DIRECTIONS if direction == "both" else (direction,)
        self.requested_attach = attach
        self.attach_path = ""  # "tcx" | "clsact" once attached
        self.fallback_reason = ""  # auto on a kernel without tcx: why clsact was taken
        self.removed_leftovers: tuple[clsact.TcFilter, ...] = ()

    @property
    def pin_name(self) -> str:
        """One pin per interface: tc-<interface> (bpffs-safe spelling, see pin_component)."""
        return f"tc-{pin_component(self.interface)}"

    def check_pin_free(self) -> str:
        if self.requested_attach == "clsact":
            raise Unsupported("pinning tc through clsact", "a clsact filter is not a bpf link; use --attach tcx")
        return super().check_pin_free()

    def pin(self) -> str:
        if self.attach_path == "clsact":
            raise Unsupported(
                f"pinning tc on {self.interface}",
                f"this kernel has no tcx links ({self.fallback_reason or 'clsact was asked for'}), and a clsact "
                "filter is not a bpf link that can be pinned: run without --pin",
            )
        return super().pin()

    def _configure(self, spec: ObjectSpec) -> None:
        for direction, program in PROGRAM_OF.items():
            spec.set_autoload(program, direction in self.directions)

    def _after_load(self, collection: Collection) -> None:
        self._stats = collection.map("tc_stats")
        self._keys = {
            d: ctypes.create_string_buffer(DIRECTIONS.index(d).to_bytes(4, sys.byteorder), 4) for d in self.directions
        }
        self._value = ctypes.create_string_buffer(self._stats.value_buffer_size)
        self._stride = self._stats.slot_size // 8

    def _attach(self, collection: Collection) -> list[Link]:
        self.removed_leftovers = tuple(clsact.remove_leftovers(self.ifindex))
        if self.requested_attach in ("auto", "tcx"):
            links: list[Link] = []
            try:
                for direction in self.directions:  # one at a time: a failure closes those already made
                    link = collection.attach_tcx(PROGRAM_OF[direction], self.ifindex, self.interface, direction)
                    links.append(link)
            except Unsupported as exc:
                for made in links:
                    made.close()
                if self.requested_attach == "tcx":
                    raise
                self.fallback_reason = exc.reason
            except BaseException:
                for made in links:
                    made.close()
                raise
            else:
                self.attach_path = "tcx"
                return links
        fds = {d: collection.program_fd(PROGRAM_OF[d]) for d in self.directions}
        filters: list[Link] = list(clsact.attach(fds, self.ifindex, self.interface))
        self.attach_path = "clsact"
        return filters

    def read(self) -> TcCounts:
        """Sum of every CPU's counters, one bpf() lookup per direction."""
        words: dict[str, list[int]] = {}
        with self._read_lock:
            self._require_loaded()  # under the lock: close() takes it too
            for direction, key in self._keys.items():
                self._stats.lookup_into(key, self._value)
                words[direction] = memoryview(self._value).cast("B").cast("Q").tolist()
        counts = {d: self._direction(w) for d, w in words.items()}
        return TcCounts(
            interface=self.interface,
            attach=self.attach_path,
            ingress=counts.get("ingress"),
            egress=counts.get("egress"),
        )

    def _direction(self, words: list[int]) -> TcDirectionCounts:
        stride = self._stride
        per_cpu = [words[c : c + 2 * _N] for c in range(0, len(words), stride)]
        totals = [sum(column) for column in zip(*per_cpu, strict=True)]
        return TcDirectionCounts(
            packets=dict(zip(PROTOCOLS, totals[:_N], strict=True)),
            bytes=dict(zip(PROTOCOLS, totals[_N:], strict=True)),
            total_packets=sum(totals[:_N]),
            total_bytes=sum(totals[_N:]),
            cpu_packets=tuple([sum(cpu[:_N]) for cpu in per_cpu]),
        )


PROGRAM = TcProgram
