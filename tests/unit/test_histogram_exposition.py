"""A histogram family is written exactly as prometheus_client writes the same histogram, in both formats."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from hypermesh.agent.metrics.collectors.ebpf_biolatency import BOUNDS_S, export
from hypermesh.agent.metrics.exposition import TextWriter
from hypermesh.agent.metrics.family import histogram
from hypermesh.ebpf.programs.biolatency import BioLatency, DeviceLatency, LatencyBucket

DESC = histogram("hm_test_latency_seconds", "Latency of test things.", "seconds")
DEVICES = {
    "vda": ([(1e-05, 3.0), (0.001, 7.0), (float("inf"), 9.0)], 0.125),
    "sda": ([(1e-05, 0.0), (0.001, 0.0), (float("inf"), 0.0)], 0.0),
}


class Reference:
    def collect(self):
        family = HistogramMetricFamily(
            "hm_test_latency_seconds", "Latency of test things.", labels=["device"], unit="seconds"
        )
        for device, (buckets, total) in DEVICES.items():
            family.add_metric([device], [(str(b) if b != float("inf") else "+Inf", c) for b, c in buckets], total)
        yield family


def ours() -> list:
    family = DESC.family()
    for device, (buckets, total) in DEVICES.items():
        family.histogram((("device", device),), buckets, total, buckets[-1][1])
    return [family]


def test_histogram_matches_prometheus_client_in_both_formats():
    registry = CollectorRegistry()
    registry.register(Reference())
    assert TextWriter().render(ours()).decode() == generate_latest(registry).decode()
    assert TextWriter().render(ours(), openmetrics=True).decode() == generate_openmetrics(registry).decode()


def test_biolatency_buckets_are_cumulative_and_end_in_the_count():
    # Slots 0, 3 and 30 (past the last bound: only in +Inf), as BioLatencyProgram.read() lists them.
    counts = {0: 2, 3: 5, 30: 1}
    buckets = tuple(
        LatencyBucket(low_us=0 if s == 0 else 1 << s, high_us=(1 << (s + 1)) - 1, count=counts.get(s, 0))
        for s in range(31)
    )
    device = DeviceLatency(device="253:0", name=None, total=8, sum_ns=1_500_000_000, buckets=buckets)
    text = TextWriter().render(export("biolatency", BioLatency(devices=(device,)))).decode()
    lines = [line for line in text.splitlines() if line.startswith("hypermesh_ebpf_block_io_latency_seconds_bucket")]
    assert len(lines) == len(BOUNDS_S) + 1
    assert lines[0] == 'hypermesh_ebpf_block_io_latency_seconds_bucket{device="253:0",le="2e-06"} 2.0'  # slot 0: < 2 µs
    assert lines[2] == 'hypermesh_ebpf_block_io_latency_seconds_bucket{device="253:0",le="8e-06"} 2.0'
    assert lines[3] == 'hypermesh_ebpf_block_io_latency_seconds_bucket{device="253:0",le="1.6e-05"} 7.0'  # slot 3
    assert lines[-2].endswith(" 7.0")  # slot 30 (2**30 µs) is past the last bound
    assert lines[-1] == 'hypermesh_ebpf_block_io_latency_seconds_bucket{device="253:0",le="+Inf"} 8.0'
    assert 'hypermesh_ebpf_block_io_latency_seconds_sum{device="253:0"} 1.5' in text
    assert 'hypermesh_ebpf_block_io_latency_seconds_count{device="253:0"} 8.0' in text
