"""``biolatency``: block I/O latency, issue to completion, as a log2 histogram of microseconds per device.

Uses the block_rq_issue and block_rq_complete raw tracepoints (no tracefs needed; the request's disk
is read with CO-RE, so the kernel's BTF too) where the kernel has both, else the block:block_rq_issue
and block:block_rq_complete tracefs tracepoints; ``attach_type`` says which. A request issued before
the program attached has no start time and is not counted.
"""

from __future__ import annotations

import os

from hypermesh.ebpf.link import Link
from hypermesh.ebpf.object import Collection, ObjectSpec
from hypermesh.ebpf.probe import BTF_PATH, raw_tracepoints
from hypermesh.ebpf.program import Program
from hypermesh.model import Record, record

__all__ = ["BioLatency"]


@record
class LatencyBucket(Record):
    low_us: int
    high_us: int
    count: int


@record
class DeviceLatency(Record):
    device: str  # "major:minor"
    name: str | None  # "vda", from /sys/dev/block
    total: int
    sum_ns: int  # of every latency counted in the buckets (a Prometheus histogram's _sum)
    buckets: tuple[LatencyBucket, ...]


@record
class BioLatency(Record):
    devices: tuple[DeviceLatency, ...]


def device_name(major: int, minor: int) -> str | None:
    try:
        with open(f"/sys/dev/block/{major}:{minor}/uevent") as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    return line.split("=", 1)[1].strip()
    except OSError:
        return None
    return None


_has_btf: list[bool] = []


def _kernel_has_btf() -> bool:
    """Whether the running kernel exposes its BTF: a property of the kernel build, so looked at once
    per process rather than at every load."""
    if not _has_btf:
        _has_btf.append(os.path.exists(BTF_PATH))
    return _has_btf[0]


HOOK_PROGRAMS = {"raw_tracepoint": ("raw_complete", "raw_issue"), "tracepoint": ("on_complete", "on_issue")}


class BioLatencyProgram(Program):
    name = "biolatency"
    co_re = True

    def __init__(self) -> None:
        super().__init__()
        self.has_btf = _kernel_has_btf()
        self.attach_type = "raw_tracepoint" if self.has_btf and raw_tracepoints().supported else "tracepoint"

    def _btf_custom_path(self) -> str | None:
        if not self.has_btf:
            # Only the raw tracepoint programs have CO-RE relocations, and they are not loaded; libbpf
            # would still insist on the kernel's BTF. Given the object's own BTF as the target it
            # relocates nothing and loads the tracefs programs.
            return self.object_path
        return super()._btf_custom_path()

    def _configure(self, spec: ObjectSpec) -> None:
        # Every program loads by default (no "?"-prefixed section): only the other hook's are turned off.
        for hook, programs in HOOK_PROGRAMS.items():
            if hook != self.attach_type:
                for program in programs:
                    spec.set_autoload(program, False)

    def _attach(self, collection: Collection) -> list[Link]:
        # Completion first: a request is only timed once both are attached, so no half-measured entries.
        complete_program, issue_program = HOOK_PROGRAMS[self.attach_type]
        if self.attach_type == "raw_tracepoint":
            complete = collection.attach_raw_tracepoint(complete_program, "block_rq_complete")
        else:
            complete = collection.attach_tracepoint(complete_program, "block", "block_rq_complete")
        try:
            if self.attach_type == "raw_tracepoint":
                issue = collection.attach_raw_tracepoint(issue_program, "block_rq_issue")
            else:
                issue = collection.attach_tracepoint(issue_program, "block", "block_rq_issue")
        except BaseException:
            complete.close()
            raise
        return [complete, issue]

    def read(self) -> BioLatency:
        with self._read_lock:
            collection = self._require_loaded()  # under the lock: close() takes it too
            # The maps are made at the first read (the collection keeps them), not in the load.
            items = collection.map("latency_hist").items()
            sum_items = collection.map("latency_sum_ns").items()
        sums = {int.from_bytes(k[:4], "little"): int.from_bytes(v[:8], "little") for k, v in sum_items}
        per_device: dict[int, dict[int, int]] = {}
        for key, value in items:
            dev, slot = int.from_bytes(key[:4], "little"), int.from_bytes(key[4:8], "little")
            slots = per_device.setdefault(dev, {})
            slots[slot] = slots.get(slot, 0) + int.from_bytes(value[:8], "little")
        devices = []
        for dev in sorted(per_device):
            major, minor = dev >> 20, dev & ((1 << 20) - 1)  # the kernel's dev_t, not the user one
            slots = per_device[dev]
            buckets = [
                LatencyBucket(low_us=0 if s == 0 else 1 << s, high_us=(1 << (s + 1)) - 1, count=slots.get(s, 0))
                for s in range(max(slots) + 1)
            ]
            devices.append(
                DeviceLatency(
                    device=f"{major}:{minor}",
                    name=device_name(major, minor),
                    total=sum(slots.values()),
                    sum_ns=sums.get(dev, 0),
                    buckets=tuple(buckets),
                )
            )
        return BioLatency(devices=tuple(devices))


PROGRAM = BioLatencyProgram
