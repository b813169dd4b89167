"""/v1/cluster: the cluster as this agent sees it through etcd, for the dashboard's cluster page.

Only on an agent started with ``--etcd``. Each request reads the members from etcd and asks them all (the same
fan-out and status view as ``hypermesh cluster status``, so the page and the command agree), but at most once
per ``CACHE_S``: a dozen open cluster pages cost one fan-out a second, not a dozen. Other agents are asked without
credentials; one that requires them is listed with kind "auth".
"""

from __future__ import annotations

import asyncio
import time

from hypermesh.cluster.aggregate import add_assets_by_kind, status_view
from hypermesh.cluster.etcd import Etcd, EtcdError
from hypermesh.cluster.fanout import Client, Node, collect_async
from hypermesh.cluster.membership import discover

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ClusterView"]

CACHE_S = 1.0
PATHS = ("/v1/sample", "/healthz", "/v1/assets")
NODE_TIMEOUT_S = 2.0


class ClusterView:
    def __init__(self, etcd_url: str, node_id: str) -> None:
        self.etcd = Etcd(etcd_url, timeout_s=NODE_TIMEOUT_S)
        self.node_id = node_id
        self.client = Client(timeout_s=NODE_TIMEOUT_S)
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> dict[str, Any]:
        async with self._lock:  # concurrent pages wait for the one fan-out in flight, then share it
            if self._cached is not None and time.monotonic() - self._cached[0] < CACHE_S:
                return self._cached[1]
            view = await self._read()
            self._cached = (time.monotonic(), view)
            return view

    async def _read(self) -> dict[str, Any]:
        try:
            members = await asyncio.to_thread(discover, self.etcd)
        except EtcdError as exc:
            return {"error": str(exc), "etcd": self.etcd.url, "self": self.node_id, "nodes": []}
        nodes = [Node(m.node_id, m.url, m.labels) for m in members]
        rows = await collect_async(self.client, nodes, PATHS)
        view = status_view(rows, {m.node_id: m.interval_s for m in members})
        registered = {m.node_id: m.registered_at for m in members}
        for node, answers in zip(view["nodes"], rows, strict=True):
            node["registered_at"] = registered.get(node["node_id"])
            node["last_seen"] = time.time() if node["error"] is None else None
            assets = answers[2].data if answers[2].ok and isinstance(answers[2].data, dict) else {}
            node["allocated"] = allocated_by_kind(node["node_id"], assets.get("assets") or [])
        view.update(etcd=self.etcd.url, self=self.node_id, error=None)
        return view


def allocated_by_kind(node_id: str, assets: list[Any]) -> dict[str, dict[str, Any]]:
    """kind -> {capacity, allocated, unit}, summed over a node's assets of that kind (the cluster's per-kind sum,
    of which the page shows these three)."""
    kinds: dict[str, dict[str, Any]] = {}
    add_assets_by_kind(kinds, node_id, assets)
    return {
        name: {"capacity": k["capacity"], "allocated": k["allocated"], "unit": k["unit"]} for name, k in kinds.items()
    }
