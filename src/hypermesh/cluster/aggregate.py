"""Turn many agents' answers into one cluster view, honest about what did not arrive.

Every view lists each node once: its data, or why there is none (the fan-out's failure kind), or that what it sent is
stale. A node is stale when its last sample is older than ``STALE_INTERVALS`` of its own sampling intervals (its
sampler stopped or stalls): its numbers are listed as such and left out of every total, mean and max.
Ages come from the agent's own clock (/healthz ``last_sample_age_s``), so skew between hosts does not matter.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from hypermesh.cluster.fanout import Answer

__all__ = ["STALE_INTERVALS", "add_assets_by_kind", "assets_view", "profile_view", "sample_view", "status_view"]

STALE_INTERVALS = 3.0


def _failure(answers: Sequence[Answer]) -> dict[str, Any] | None:
    for answer in answers:
        if not answer.ok:
            return {"kind": answer.error_kind, "reason": f"{answer.path}: {answer.error}"}
    return None


def _node(answers: Sequence[Answer]) -> dict[str, Any]:
    node = answers[0].node
    return {"node_id": node.node_id, "url": node.url, "labels": dict(node.labels)}


def _freshness(health: dict[str, Any], sample: dict[str, Any] | None, interval_hint: float | None) -> dict[str, Any]:
    age = health.get("last_sample_age_s")
    interval = float(sample.get("interval_s", 0.0)) if sample else 0.0
    interval = max(interval, interval_hint or 0.0, 0.001)
    limit = STALE_INTERVALS * interval
    stale = age is None or float(age) > limit
    return {"last_sample_age_s": age, "stale": stale, "stale_after_s": round(limit, 3)}


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "max": None}
    return {"mean": round(sum(values) / len(values), 2), "max": round(max(values), 2)}


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "nodes": len(rows),
        "answered": sum(1 for r in rows if r.get("error") is None),
        "current": sum(1 for r in rows if r.get("error") is None and not r.get("stale")),
        "failed": [{"node_id": r["node_id"], **r["error"]} for r in rows if r.get("error") is not None],
        "stale": [r["node_id"] for r in rows if r.get("error") is None and r.get("stale")],
    }


def _each(
    rows: Sequence[Sequence[Answer]], fill: Callable[[dict[str, Any], Sequence[Answer]], None], **failed: Any
) -> list[dict[str, Any]]:
    """One row per node: ``fill`` completes the row of a node that answered every path; a node that did not gets
    its failure (and ``failed``'s fields)."""
    nodes = []
    for answers in rows:
        row = _node(answers)
        failure = _failure(answers)
        if failure is not None:
            row.update(error=failure, **failed)
        else:
            row["error"] = None
            fill(row, answers)
        nodes.append(row)
    return nodes


def _memory_percent(sample: dict[str, Any]) -> float | None:
    memory = sample.get("memory") or {}
    total = memory.get("total_bytes") or 0
    return round(100.0 * memory.get("used_bytes", 0) / total, 2) if total else None


def status_view(rows: Sequence[Sequence[Answer]], intervals: dict[str, float] | None = None) -> dict[str, Any]:
    """Answers to (/v1/sample, /healthz) per node -> health, versions, current utilisation."""

    def fill(row: dict[str, Any], answers: Sequence[Answer]) -> None:
        sample, health = answers[0].data, answers[1].data
        row.update(_freshness(health, sample, (intervals or {}).get(row["node_id"])))
        row.update(
            status="stale" if row["stale"] else health.get("status", "ok"),
            version=health.get("version"),
            cpu_percent=(sample.get("cpu") or {}).get("percent"),
            memory_percent=_memory_percent(sample),
            logical_cores=len((sample.get("cpu") or {}).get("per_core") or []),
            memory_total_bytes=int((sample.get("memory") or {}).get("total_bytes") or 0),
            response_s=round(max(a.elapsed_s for a in answers), 4),
        )

    nodes = _each(rows, fill, status="unreachable")
    current = [n for n in nodes if n["error"] is None and not n["stale"]]
    return {
        "summary": _summary(nodes),
        "cpu_percent": _stats([n["cpu_percent"] for n in current if n["cpu_percent"] is not None]),
        "memory_percent": _stats([n["memory_percent"] for n in current if n["memory_percent"] is not None]),
        "logical_cores": sum(n["logical_cores"] for n in current),
        "memory_total_bytes": sum(n["memory_total_bytes"] for n in current),
        "versions": sorted({str(n["version"]) for n in nodes if n.get("version")}),
        "nodes": nodes,
    }


def sample_view(rows: Sequence[Sequence[Answer]], intervals: dict[str, float] | None = None) -> dict[str, Any]:
    """Answers to (/v1/sample, /healthz) per node -> each node's sample (marked stale or not) and cluster figures."""

    def fill(row: dict[str, Any], answers: Sequence[Answer]) -> None:
        sample, health = answers[0].data, answers[1].data
        row.update(_freshness(health, sample, (intervals or {}).get(row["node_id"])), sample=sample)

    nodes = _each(rows, fill)
    current = [n["sample"] for n in nodes if n["error"] is None and not n["stale"]]

    def total(key: str, field: str) -> float:
        return round(sum(sum(item.get(field, 0.0) or 0.0 for item in s.get(key) or []) for s in current), 1)

    return {
        "summary": _summary(nodes),
        "cpu_percent": _stats(
            [s["cpu"]["percent"] for s in current if (s.get("cpu") or {}).get("percent") is not None]
        ),
        "memory_percent": _stats([p for p in (_memory_percent(s) for s in current) if p is not None]),
        "memory_used_bytes": sum(int((s.get("memory") or {}).get("used_bytes", 0)) for s in current),
        "network_rx_bytes_per_s": total("network", "rx_bytes_per_s"),
        "network_tx_bytes_per_s": total("network", "tx_bytes_per_s"),
        "disk_read_bytes_per_s": total("disks", "read_bytes_per_s"),
        "disk_write_bytes_per_s": total("disks", "write_bytes_per_s"),
        "nodes": nodes,
    }


def profile_view(rows: Sequence[Sequence[Answer]]) -> dict[str, Any]:
    """Answers to (/v1/profile, /healthz) per node -> totals and what differs between nodes."""

    def fill(row: dict[str, Any], answers: Sequence[Answer]) -> None:
        row.update(version=answers[1].data.get("version"), profile=answers[0].data)

    nodes = _each(rows, fill)
    answered = [n for n in nodes if n["error"] is None]

    def distinct(pick: Any) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for n in answered:
            for value in pick(n):
                out.setdefault(str(value), []).append(n["node_id"])
        return dict(sorted(out.items()))

    traits = {
        "cpu_model": distinct(lambda n: [(n["profile"].get("cpu") or {}).get("model")]),
        "architecture": distinct(lambda n: [(n["profile"].get("os") or {}).get("architecture")]),
        "kernel": distinct(lambda n: [(n["profile"].get("os") or {}).get("release")]),
        "gpu_model": distinct(lambda n: [g.get("model") for g in n["profile"].get("gpus") or []] or ["none"]),
        "agent_version": distinct(lambda n: [n.get("version")]),
    }
    return {
        "summary": _summary(nodes),
        "logical_cores": sum(int((n["profile"].get("cpu") or {}).get("logical_cores") or 0) for n in answered),
        "memory_total_bytes": sum(int((n["profile"].get("memory") or {}).get("total_bytes") or 0) for n in answered),
        "gpus": sum(len(n["profile"].get("gpus") or []) for n in answered),
        "heterogeneity": {name: values for name, values in traits.items()},
        "differs": sorted(name for name, values in traits.items() if len(values) > 1),
        "nodes": nodes,
    }


def add_assets_by_kind(kinds: dict[str, dict[str, Any]], node_id: str, assets: Sequence[Any]) -> None:
    """Add one node's /v1/assets list into ``kinds``: kind -> {unit, assets, capacity, allocated, allocatable}, and
    ``unhealthy`` ("node/asset: status") once one is not ok. The one per-kind sum, for a node (/v1/cluster's
    allocations) and for the cluster (``assets_view``, node after node into one ``kinds``). The unit is the first
    asset's. An entry that is not an asset (no kind; an agent of another version) is passed over."""
    for asset in assets:
        if not isinstance(asset, dict) or "kind" not in asset:
            continue
        kind = kinds.setdefault(
            asset["kind"],
            {"unit": asset.get("unit"), "assets": 0, "capacity": 0.0, "allocated": 0.0, "allocatable": 0.0},
        )
        kind["assets"] += 1
        for field in ("capacity", "allocated", "allocatable"):
            kind[field] += float(asset.get(field) or 0.0)
        health = asset.get("health")
        status = health.get("status", "ok") if isinstance(health, dict) else "ok"
        if status != "ok":
            kind.setdefault("unhealthy", []).append(f"{node_id}/{asset.get('id')}: {status}")


def assets_view(rows: Sequence[Sequence[Answer]]) -> dict[str, Any]:
    """Answers to (/v1/assets,) per node -> capacity, allocated and allocatable per kind, summed over nodes."""
    kinds: dict[str, dict[str, Any]] = {}

    def fill(row: dict[str, Any], answers: Sequence[Answer]) -> None:
        data = answers[0].data
        assets = data.get("assets") if isinstance(data, dict) else None
        if not isinstance(assets, list):
            reason = "/v1/assets: no list of assets (an agent older than this command?)"
            row.update(error={"kind": "bad answer", "reason": reason})
            return
        row.update(assets=assets)
        add_assets_by_kind(kinds, row["node_id"], assets)

    nodes = _each(rows, fill)
    return {"summary": _summary(nodes), "kinds": dict(sorted(kinds.items())), "nodes": nodes}
