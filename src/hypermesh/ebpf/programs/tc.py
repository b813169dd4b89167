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
        # Every program loads by default (no "?"-prefixed section): only the unused direction's is turned off.
        for direction, program in PROGRAM_OF.items():
            if direction not in self.directions:
                spec.set_autoload(program, False)

    def _after_load(self, collection: Collection) -> None:
        self._stats = collection.map("tc_stats")

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
        """Sum of every CPU's counters: one batched bpf() lookup returns every (direction, protocol)
        key for all CPUs (one lookup per key where the kernel cannot batch, before 5.6)."""
        with self._read_lock:
            self._require_loaded()  # under the lock: close() takes it too
            items = self._stats.items()
        # key = direction * len(PROTOCOLS) + slot; each value: (packets, bytes) per possible CPU.
        values = {int.from_bytes(key, sys.byteorder): memoryview(value).cast("Q").tolist() for key, value in items}
        counts = {d: self._direction(values, DIRECTIONS.index(d) * _N) for d in self.directions}
        return TcCounts(
            interface=self.interface,
            attach=self.attach_path,
            ingress=counts.get("ingress"),
            egress=counts.get("egress"),
        )

    @staticmethod
    def _direction(values: dict[int, list[int]], base: int) -> TcDirectionCounts:
        rows = [values.get(base + slot, []) for slot in range(_N)]
        packets = [sum(row[0::2]) for row in rows]
        sizes = [sum(row[1::2]) for row in rows]
        cpus = max((len(row) // 2 for row in rows), default=0)
        return TcDirectionCounts(
            packets=dict(zip(PROTOCOLS, packets, strict=True)),
            bytes=dict(zip(PROTOCOLS, sizes, strict=True)),
            total_packets=sum(packets),
            total_bytes=sum(sizes),
            cpu_packets=tuple([sum(row[2 * cpu] for row in rows if row) for cpu in range(cpus)]),
        )


PROGRAM = TcProgram
