"""The cluster views' rules on answers made here: what is stale, what is summed, what a failure says."""

from __future__ import annotations

from hypermesh.cluster.aggregate import assets_view, profile_view, status_view
from hypermesh.cluster.fanout import Answer, Node


def sample(cpu: float, used: int, total: int = 1000, interval: float = 1.0) -> dict:
    return {"interval_s": interval, "cpu": {"percent": cpu}, "memory": {"used_bytes": used, "total_bytes": total}}


def answered(node_id: str, *data: object, paths=("/v1/sample", "/healthz")) -> list[Answer]:
    node = Node(node_id, f"http://{node_id}:9137")
    return [Answer(node, path, value, elapsed_s=0.01) for path, value in zip(paths, data, strict=True)]


def failed(node_id: str, kind: str, paths=("/v1/sample", "/healthz")) -> list[Answer]:
    node = Node(node_id, f"http://{node_id}:9137")
    return [Answer(node, path, None, kind, "why") for path in paths]


def test_a_node_whose_sample_is_older_than_three_intervals_is_stale_and_left_out():
    rows = [
        answered("a", sample(10.0, 100), {"status": "ok", "last_sample_age_s": 0.4, "version": "1"}),
        answered("b", sample(90.0, 900), {"status": "ok", "last_sample_age_s": 3.5, "version": "1"}),
        answered("c", sample(30.0, 300, interval=2.0), {"status": "ok", "last_sample_age_s": 5.9, "version": "1"}),
        failed("d", "timed out"),
    ]
    view = status_view(rows)
    stale = {n["node_id"]: n.get("stale") for n in view["nodes"]}
    assert stale == {"a": False, "b": True, "c": False, "d": None}  # c: 5.9 s is under 3 x its 2 s interval
    assert view["cpu_percent"] == {"mean": 20.0, "max": 30.0}  # a and c only: b is stale, d did not answer
    assert view["memory_percent"] == {"mean": 20.0, "max": 30.0}
    summary = view["summary"]
    assert (summary["nodes"], summary["answered"], summary["current"]) == (4, 3, 2)
    assert summary["stale"] == ["b"]
    assert summary["failed"] == [{"node_id": "d", "kind": "timed out", "reason": "/v1/sample: why"}]


def test_the_interval_registered_in_etcd_counts_when_longer_than_the_measured_one():
    rows = [answered("a", sample(10.0, 100, interval=1.0), {"status": "ok", "last_sample_age_s": 4.0})]
    assert status_view(rows)["nodes"][0]["stale"] is True
    assert status_view(rows, {"a": 2.0})["nodes"][0]["stale"] is False


def test_heterogeneity_names_what_differs_and_which_nodes_have_what():
    def profile(model: str, kernel: str) -> dict:
        return {"cpu": {"model": model, "logical_cores": 4}, "os": {"architecture": "x86_64", "release": kernel},
                "memory": {"total_bytes": 8}, "gpus": []}  # fmt: skip

    paths = ("/v1/profile", "/healthz")
    rows = [
        answered("a", profile("EPYC", "6.1"), {"version": "0.1.0"}, paths=paths),
        answered("b", profile("EPYC", "6.18"), {"version": "0.1.0"}, paths=paths),
        failed("c", "refused", paths=paths),
    ]
    view = profile_view(rows)
    assert view["differs"] == ["kernel"]
    assert view["heterogeneity"]["kernel"] == {"6.1": ["a"], "6.18": ["b"]}
    assert (view["logical_cores"], view["memory_total_bytes"], view["gpus"]) == (8, 16, 0)


def test_assets_are_summed_per_kind_and_unhealthy_ones_named():
    def asset(kind: str, capacity: float, allocated: float, status: str = "ok") -> dict:
        return {"kind": kind, "id": kind, "unit": "cores", "capacity": capacity, "allocated": allocated,
                "allocatable": capacity - allocated, "health": {"status": status}}  # fmt: skip

    paths = ("/v1/assets",)
    rows = [
        answered("a", {"assets": [asset("cpu", 4, 1)]}, paths=paths),
        answered("b", {"assets": [asset("cpu", 2, 0.5, "degraded")]}, paths=paths),
        answered("c", {"cpu": {}}, paths=paths),  # an older agent's /v1/assets
    ]
    view = assets_view(rows)
    cpu = view["kinds"]["cpu"]
    assert (cpu["assets"], cpu["capacity"], cpu["allocated"], cpu["allocatable"]) == (2, 6.0, 1.5, 4.5)
    assert cpu["unhealthy"] == ["b/cpu: degraded"]
    assert view["summary"]["failed"][0]["node_id"] == "c" and view["summary"]["failed"][0]["kind"] == "bad answer"


def test_a_nodes_allocations_are_the_cluster_sum_of_that_node_alone():
    """/v1/cluster's per-node allocations and `cluster assets` add up by one function: for a single node they agree,
    and entries that are not assets (an agent of another version) are passed over by both, not a crash."""
    from hypermesh.agent.cluster_view import allocated_by_kind

    assets = [
        {"kind": "cpu", "id": "cpu", "unit": "cores", "capacity": 4, "allocated": 1.5, "allocatable": 2.5},
        {"kind": "memory", "id": "memory", "unit": "bytes", "capacity": 1024, "allocated": None, "allocatable": 1024},
        {"kind": "cpu", "id": "cpu1", "unit": "cores", "capacity": 2, "allocated": 0.25, "allocatable": 1.75,
         "health": {"status": "failed"}},
        "not an asset",
        {"id": "no kind"},
    ]  # fmt: skip
    view = assets_view([answered("a", {"assets": assets}, paths=("/v1/assets",))])
    mine = allocated_by_kind("a", assets)
    assert mine == {
        "cpu": {"capacity": 6.0, "allocated": 1.75, "unit": "cores"},
        "memory": {"capacity": 1024.0, "allocated": 0.0, "unit": "bytes"},
    }
    for kind, sums in mine.items():
        assert {k: view["kinds"][kind][k] for k in sums} == sums
    assert view["kinds"]["cpu"]["assets"] == 2 and view["kinds"]["cpu"]["unhealthy"] == ["a/cpu1: failed"]
