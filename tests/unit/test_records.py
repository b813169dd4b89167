"""The ``record`` decorator: what every model class is built from (immutability, to_dict, lazy compilation)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from hypermesh.model import (
    CpuCache,
    CpuInfo,
    FilesystemStats,
    InterfaceStats,
    Record,
    record,
)
from hypermesh.model_node import CpuGuestTime, KernelStats, NetDevStats, NodePressure, NodeStats, Sockstat


def make_class() -> type:
    @record
    class Point(Record):
        x: int
        y: float = 0.5
        tags: tuple[str, ...] = ()

    return Point


def test_a_record_works_from_its_first_use_in_any_order() -> None:
    Point = make_class()
    p = Point(1)  # the first call compiles __init__ and to_dict
    assert (p.x, p.y, p.tags) == (1, 0.5, ())
    assert p.to_dict() == {"x": 1, "y": 0.5, "tags": []}
    assert Point(x=2, y=1.0) == Point(2, 1.0) != p
    assert repr(p) == "Point(x=1, y=0.5, tags=())"
    with pytest.raises(AttributeError, match="immutable"):
        p.x = 3
    with pytest.raises(TypeError):
        Point()
    Other = make_class()
    assert json.dumps(Other(5).to_dict()) == '{"x": 5, "y": 0.5, "tags": []}'  # to_dict before any __init__ call


def test_first_use_from_many_threads_at_once() -> None:
    Point = make_class()
    barrier = threading.Barrier(10)
    got: list[dict[str, object]] = []
    errors: list[BaseException] = []

    def build(n: int) -> None:
        try:
            barrier.wait()
            got.append(Point(n, float(n)).to_dict())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=build, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(d["x"] for d in got) == list(range(10))  # type: ignore[type-var]


def _build(cls: Any, **given: object) -> Any:
    """A record with the given fields and None in the others (what those hold does not matter here)."""
    return cls(**{name: given.get(name) for name in cls._fields})


def _node_stats(meminfo: dict[str, int], net_dev: dict[str, NetDevStats], softirqs: dict[str, list[int]]) -> NodeStats:
    empty: dict[str, str] = {}
    return NodeStats(
        timestamp=0.0,
        meminfo=meminfo,
        vmstat={},
        kernel=KernelStats(),
        cpu_guest=[CpuGuestTime(0, 1.0, 2.0)],  # type: ignore[arg-type]
        softirqs=softirqs,
        softnet=(),
        net_dev=net_dev,
        diskstats={},
        snmp={},
        sockstat=Sockstat(None, ()),
        pressure=NodePressure(None, None, None),
        filesystems=[FilesystemStats("/dev/vda1", "/", "ext4", 10, 5, 4, 3, 2, False, False)],
        cpuidle=[],
        cpu_frequency_hz={},
        interfaces=[_build(InterfaceStats, name="lo", error_counters={"rx_dropped": 1})],
        arp_entries={},
        uname=empty,
        os_release=empty,
    )


def test_nested_fields_cannot_be_mutated_and_json_is_unchanged() -> None:
    """Records are immutable all the way down: lists become tuples, dicts read-only views the record owns."""
    caches = [CpuCache(1, "Data", 32768, [0, 1])]  # type: ignore[arg-type]
    flags = ["fpu", "sse"]
    cpu = _build(CpuInfo, caches=caches, numa_nodes=[], core_types=[], flags=flags)
    assert type(cpu.caches) is tuple and type(cpu.caches[0].shared_cpu_list) is tuple and type(cpu.flags) is tuple
    flags.append("avx")  # the caller's list is not the record's
    caches.clear()
    assert cpu.flags == ("fpu", "sse") and len(cpu.caches) == 1
    with pytest.raises(AttributeError):
        cpu.flags.append("avx")  # type: ignore[attr-defined]

    meminfo = {"MemTotal": 1024}
    net_dev = {"eth0": _build(NetDevStats, receive_bytes=7)}
    stats = _node_stats(meminfo, net_dev, {"NET_RX": [3, 4]})
    assert stats.meminfo["MemTotal"] == 1024 and stats.net_dev["eth0"].receive_bytes == 7
    with pytest.raises(TypeError):
        stats.meminfo["MemTotal"] = 0  # type: ignore[index]
    with pytest.raises(TypeError):
        stats.net_dev["eth1"] = net_dev["eth0"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        stats.net_dev["eth0"].receive_bytes = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        stats.softirqs["NET_RX"][0] = 0  # type: ignore[index]
    with pytest.raises(TypeError):
        stats.interfaces[0].error_counters["rx_dropped"] = 0  # type: ignore[index]
    with pytest.raises(AttributeError):
        stats.cpu_guest.append(stats.cpu_guest[0])  # type: ignore[attr-defined]

    # JSON is what it was with lists and dicts inside: to_dict turns tuples back into lists.
    as_json = json.loads(json.dumps(stats.to_dict()))
    plain = stats.to_dict()
    assert type(plain["meminfo"]) is dict and type(plain["softirqs"]["NET_RX"]) is list
    assert as_json["softirqs"] == {"NET_RX": [3, 4]} and as_json["net_dev"]["eth0"]["receive_bytes"] == 7
    assert as_json["cpu_guest"] == [{"cpu": 0, "guest_seconds": 1.0, "guest_nice_seconds": 2.0}]
    assert as_json["filesystems"][0]["mountpoint"] == "/"
    assert cpu.to_dict()["caches"] == [{"level": 1, "type": "Data", "size_bytes": 32768, "shared_cpu_list": [0, 1]}]
    # Equal records hash equally, frozen containers included.
    again = _node_stats({"MemTotal": 1024}, {"eth0": _build(NetDevStats, receive_bytes=7)}, {"NET_RX": [3, 4]})
    assert again == stats and hash(again) == hash(stats)


def test_a_tuple_field_is_kept_as_is() -> None:
    """The hot path builds tuples itself: ``__init__`` keeps them rather than copying (no cost per sample)."""
    Holder = make_class()
    tags = ("a", "b")
    assert Holder(1, tags=tags).tags is tags
    cpus = (0, 1)
    assert CpuCache(1, "Data", None, cpus).shared_cpu_list is cpus
