"""What the agent's ``biolatency`` eBPF program exports: block I/O latency as a Prometheus histogram per device.

The program counts each request in a log2 slot of whole microseconds: slot s holds latencies of 2**s .. 2**(s+1)-1
µs (slot 0 also those under 1 µs), so every latency in it is below 2**(s+1) µs, the bucket's upper bound. The
buckets are fixed (2 µs .. 2**25 µs ≈ 33.6 s, then +Inf) so the series stay the same from one scrape to the next;
slots above the last bound count in +Inf only. The sum is the program's own, in nanoseconds.
"""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, histogram

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hypermesh.ebpf.programs.biolatency import BioLatency

__all__ = ["BOUNDS_S", "export"]

LAST_SLOT = 24
# Upper bound of slot s, in seconds: 2**(s+1) µs.
BOUNDS_S = tuple((1 << (slot + 1)) / 1e6 for slot in range(LAST_SLOT + 1))

LATENCY = histogram(
    "hypermesh_ebpf_block_io_latency_seconds",
    "Block I/O latency, issue to completion, of requests completed since the agent loaded its biolatency program.",
    "seconds",
)


def export(program: str, reading: BioLatency) -> list[Family]:
    family = LATENCY.family()
    for device in reading.devices:
        counts = [bucket.count for bucket in device.buckets]  # by slot, from 0
        cumulative, buckets = 0, []
        for slot, bound in enumerate(BOUNDS_S):
            cumulative += counts[slot] if slot < len(counts) else 0
            buckets.append((bound, float(cumulative)))
        buckets.append((float("inf"), float(device.total)))
        family.histogram((("device", device.name or device.device),), buckets, device.sum_ns / 1e9, float(device.total))
    return [family]
