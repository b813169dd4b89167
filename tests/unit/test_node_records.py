"""NodeStats is typed and deeply immutable, and its to_dict() holds exactly what the node collectors export.

Read from the recorded VM root (tests/fixtures/agent/root), no live kernel file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hypermesh.agent.metrics import Scrape
from hypermesh.agent.metrics.collectors.cpufreq import CpufreqCollector
from hypermesh.agent.metrics.collectors.diskstats import DiskstatsCollector
from hypermesh.agent.metrics.collectors.kernel import KernelCollector
from hypermesh.agent.metrics.collectors.netdev import NetdevCollector
from hypermesh.agent.metrics.collectors.pressure_cpu_io import PressureCpuIoCollector
from hypermesh.agent.metrics.collectors.sockstat import SockstatCollector
from hypermesh.agent.metrics.collectors.softnet import SoftnetCollector
from hypermesh.model import Record
from hypermesh.model_node import (
    CpuFrequencyHz,
    CpuGuestTime,
    DiskStats,
    KernelStats,
    NetDevStats,
    NodePressure,
    NodeStats,
    SocketStats,
    Sockstat,
    SoftnetStats,
)
from hypermesh.platform.linux import LinuxBackend

ROOT = Path(__file__).parent.parent / "fixtures" / "agent" / "root"
READ_ONLY_MAPPING = type(type.__dict__)


@pytest.fixture(scope="module")
def stats() -> NodeStats:
    return LinuxBackend(root=str(ROOT)).node_stats()


def _walk(value: Any, path: str = "stats") -> list[str]:
    """Every path inside ``value`` that holds a mutable container (a list, dict, set or bytearray)."""
    if isinstance(value, list | dict | set | bytearray):
        return [f"{path}: {type(value).__name__}"]
    if isinstance(value, Record):
        return [p for field in value._fields for p in _walk(getattr(value, field), f"{path}.{field}")]
    if isinstance(value, tuple):
        return [p for n, item in enumerate(value) for p in _walk(item, f"{path}[{n}]")]
    if isinstance(value, READ_ONLY_MAPPING):
        return [p for key, item in value.items() for p in _walk(item, f"{path}[{key!r}]")]
    return []


def test_node_stats_is_deeply_immutable(stats: NodeStats) -> None:
    # The recorded root has every part this test reaches into: it must not pass by being empty.
    assert stats.softnet and stats.net_dev and stats.diskstats and stats.sockstat.protocols and stats.snmp
    assert stats.pressure.io is not None and stats.cpu_guest and stats.interfaces and stats.softirqs
    assert _walk(stats) == []
    lo = stats.net_dev["lo"]
    for record, field in (
        (stats, "meminfo"),
        (stats.kernel, "context_switches"),
        (stats.softnet[0], "time_squeeze"),
        (lo, "receive_bytes"),
        (stats.diskstats["vda"], "io_now"),
        (stats.sockstat, "sockets_used"),
        (stats.sockstat.protocols[0], "inuse"),
        (stats.pressure, "io"),
        (stats.pressure.io, "some_avg10"),
        (stats.cpu_guest[0], "guest_seconds"),
    ):
        with pytest.raises(AttributeError, match="immutable"):
            setattr(record, field, 0)
        with pytest.raises(AttributeError):
            delattr(record, field)
    with pytest.raises(TypeError):
        stats.net_dev["eth9"] = lo  # type: ignore[index]
    with pytest.raises(TypeError):
        stats.snmp["Tcp"]["RetransSegs"] = 0  # type: ignore[index]
    with pytest.raises(TypeError):
        stats.softirqs["NET_RX"][0] = 0  # type: ignore[index]
    with pytest.raises(AttributeError):
        stats.softnet.append(stats.softnet[0])  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        stats.sockstat.protocols.append(stats.sockstat.protocols[0])  # type: ignore[attr-defined]
    # A record owns what it was given: the builder's list is not the record's.
    rows = [SoftnetStats(0, 1, 2, 3)]
    built = _with(stats, softnet=rows)
    rows.append(SoftnetStats(1, 4, 5, 6))
    assert built.softnet == (SoftnetStats(0, 1, 2, 3),)


def _with(stats: NodeStats, **changes: Any) -> NodeStats:
    return NodeStats(**{**{f: getattr(stats, f) for f in stats._fields}, **changes})


def _exported(collector: Any, stats: NodeStats) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    scrape = Scrape(lambda: None, None, None, None, read_node_stats=lambda: stats)  # type: ignore[arg-type,return-value]
    return {(f.name, labels): value for f in collector.collect(scrape) for labels, value in f.samples}


def test_to_dict_round_trips_and_holds_what_the_collectors_export(stats: NodeStats) -> None:
    plain = json.loads(json.dumps(stats.to_dict()))
    # Round trip: each part rebuilt from its JSON is the record it came from.
    assert KernelStats(**plain["kernel"]) == stats.kernel
    assert tuple(SoftnetStats(**row) for row in plain["softnet"]) == stats.softnet
    assert tuple(CpuGuestTime(**row) for row in plain["cpu_guest"]) == stats.cpu_guest
    assert {name: NetDevStats(**row) for name, row in plain["net_dev"].items()} == stats.net_dev
    assert {name: DiskStats(**row) for name, row in plain["diskstats"].items()} == stats.diskstats
    sockstat = plain["sockstat"]
    protocols = tuple(SocketStats(**row) for row in sockstat["protocols"])
    assert Sockstat(sockstat["sockets_used"], protocols) == stats.sockstat
    assert plain["snmp"] == {k: dict(v) for k, v in stats.snmp.items()}

    # What the collectors export is what to_dict says, sample for sample.
    softnet = _exported(SoftnetCollector(), stats)
    assert len(softnet) == 3 * len(plain["softnet"])
    for row in plain["softnet"]:
        cpu = (("cpu", str(row["cpu"])),)
        assert softnet["hypermesh_softnet_processed_total", cpu] == row["processed"]
        assert softnet["hypermesh_softnet_dropped_total", cpu] == row["dropped"]
        assert softnet["hypermesh_softnet_times_squeezed_total", cpu] == row["time_squeeze"]
    netdev = _exported(NetdevCollector(), stats)
    for name, row in plain["net_dev"].items():
        label = (("interface", name),)
        assert netdev["hypermesh_network_receive_fifo_total", label] == row["receive_fifo"]
        assert netdev["hypermesh_network_transmit_collisions_total", label] == row["transmit_collisions"]
        assert netdev["hypermesh_network_transmit_carrier_total", label] == row["transmit_carrier"]
    diskstats = _exported(DiskstatsCollector(), stats)
    for name, row in plain["diskstats"].items():
        label = (("device", name),)
        assert diskstats["hypermesh_disk_io_now", label] == row["io_now"]
        assert diskstats["hypermesh_disk_io_time_weighted_seconds_total", label] == row["io_time_weighted_seconds"]
        if row["flush_requests"] is not None:
            assert diskstats["hypermesh_disk_flush_requests_total", label] == row["flush_requests"]
    kernel = _exported(KernelCollector(), stats)
    assert kernel["hypermesh_context_switches_total", ()] == plain["kernel"]["context_switches"]
    assert kernel["hypermesh_forks_total", ()] == plain["kernel"]["forks"]
    assert kernel["hypermesh_file_handles_maximum", ()] == plain["kernel"]["file_handles_maximum"]
    for row in plain["cpu_guest"]:
        label = (("cpu", str(row["cpu"])), ("mode", "nice"))
        assert kernel["hypermesh_cpu_guest_seconds_total", label] == row["guest_nice_seconds"]
    sockets = _exported(SockstatCollector(), stats)
    assert sockets["hypermesh_sockstat_sockets_used", ()] == sockstat["sockets_used"]
    tcp = next(row for row in sockstat["protocols"] if row["protocol"] == "TCP")
    assert sockets["hypermesh_sockstat_tcp_time_wait", ()] == tcp["tw"]
    assert sockets["hypermesh_sockstat_memory_bytes", (("protocol", "TCP"),)] == tcp["memory_bytes"]
    for row in sockstat["protocols"]:
        if row["inuse"] is not None:
            assert sockets["hypermesh_sockstat_inuse", (("protocol", row["protocol"]),)] == row["inuse"]
    pressure = _exported(PressureCpuIoCollector(), stats)
    io = plain["pressure"]["io"]
    assert pressure["hypermesh_pressure_io_stalled_seconds_total", ()] == io["full_total_seconds"]
    assert pressure["hypermesh_pressure_io_avg10_ratio", (("kind", "some"),)] == io["some_avg10"] / 100


def test_cpufreq_exports_each_record_field() -> None:
    stats = LinuxBackend(root=str(ROOT)).node_stats()
    rows = (CpuFrequencyHz(0, 2.4e9, 4e8, 4.2e9), CpuFrequencyHz(3, 8e8, 4e8, 4.2e9))
    exported = _exported(CpufreqCollector(), _with(stats, cpu_frequency_hz=rows))
    for row in json.loads(json.dumps([r.to_dict() for r in rows])):
        cpu = (("cpu", str(row["cpu"])),)
        assert exported["hypermesh_cpu_frequency_hertz", cpu] == row["scaling_cur_freq"]
        assert exported["hypermesh_cpu_frequency_min_hertz", cpu] == row["cpuinfo_min_freq"]
        assert exported["hypermesh_cpu_frequency_max_hertz", cpu] == row["cpuinfo_max_freq"]


def test_the_portable_shape_leaves_what_psutil_lacks_as_none() -> None:
    """The portable backend fills only some columns: the collectors skip the None ones rather than export 0."""
    stats = LinuxBackend(root=str(ROOT)).node_stats()
    row = NetDevStats(1, 2, 3, 4, None, None, None, None, 5, 6, 7, 8, None, None, None, None)
    exported = _exported(NetdevCollector(), _with(stats, net_dev={"en0": row}, pressure=NodePressure(None, None, None)))
    assert exported == {}
