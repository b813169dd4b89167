"""A cluster allocation end to end: pick a node with room, reserve in etcd, grant on the node, confirm or undo.

See limits.py for the keys and why nothing is over-committed or lost. The node is asked with the same TLS and
credentials as every cluster command (an agent without basic auth takes writes from loopback clients only).
"""

from __future__ import annotations

import contextlib
import json

import httpx

from hypermesh.cluster.etcd import Etcd, EtcdError
from hypermesh.cluster.fanout import Client, Node, collect
from hypermesh.cluster.limits import PENDING_TTL_S, ClusterLimits
from hypermesh.cluster.membership import Member, discover
from hypermesh.errors import BackendError, InvalidInput, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["NodeRefused", "allocate", "release"]


class NodeRefused(InvalidInput):
    """The node's own ledger said no (not enough left there, a GPU in use): exit 2 with its reason."""


def _members(etcd: Etcd) -> list[Member]:
    members = discover(etcd)
    if not members:
        raise BackendError(f"no agents are registered in etcd at {etcd.url}; start them with --etcd {etcd.url}")
    return members


def pick_node(
    client: Client, members: list[Member], kind: str, amount: float, node_id: str | None
) -> tuple[Member, str | None]:
    """The node (and asset) to allocate on: the named one, else the asset of that kind with the most room."""
    if node_id is not None:
        chosen = [m for m in members if m.node_id == node_id]
        if not chosen:
            known = ", ".join(m.node_id for m in members)
            raise NotFound(f"no agent {node_id!r} is registered (registered: {known})")
        candidates = chosen
    else:
        candidates = members
    rows = collect(client, [Node(m.node_id, m.url) for m in candidates], ("/v1/assets",))
    best: tuple[float, Member, str | None] | None = None
    reasons = []
    for member, (answer,) in zip(candidates, rows, strict=True):
        if not answer.ok:
            reasons.append(f"{member.node_id}: {answer.error_kind}: {answer.error}")
            continue
        assets = answer.data.get("assets", []) if isinstance(answer.data, dict) else []
        for asset in assets:
            if asset.get("kind") != kind or (asset.get("health") or {}).get("status", "ok") == "failed":
                continue
            room = float(asset.get("allocatable") or 0.0)
            if room + 1e-9 >= amount and (best is None or room > best[0]):
                best = (room, member, asset.get("id"))
    if best is None:
        where = f"node {node_id}" if node_id else "any node"
        detail = f" ({'; '.join(reasons)})" if reasons else ""
        raise NodeRefused(f"no {kind} asset on {where} has {amount:g} allocatable{detail}")
    return best[1], best[2]


def _http(client: Client) -> httpx.Client:
    return httpx.Client(verify=client.verify, timeout=client.timeout_s, trust_env=False, auth=client.auth)


def allocate(
    etcd: Etcd, client: Client, kind: str, amount: float, owner: str, node_id: str | None = None
) -> dict[str, Any]:
    limits = ClusterLimits(etcd)
    member, asset = pick_node(client, _members(etcd), kind, amount, node_id)
    lease = etcd.grant(PENDING_TTL_S)
    try:
        allocation_id = limits.reserve(kind, amount, owner, member.node_id, member.url, lease)
        body: dict[str, Any] = {"kind": kind, "amount": amount, "owner": owner, "id": allocation_id}
        if asset is not None:
            body["asset"] = asset
        try:
            with _http(client) as http:
                answer = http.post(f"{member.url}/v1/allocations", json=body)
        except httpx.HTTPError as exc:
            limits.undo(allocation_id, kind)
            raise BackendError(
                f"node {member.node_id} ({member.url}) could not be reached: {exc}; nothing was allocated"
            ) from None
        if answer.status_code not in (200, 201):
            limits.undo(allocation_id, kind)
            reason = _error(answer)
            if answer.status_code in (409, 422):
                raise NodeRefused(f"node {member.node_id} refused: {reason}")
            raise BackendError(
                f"node {member.node_id} answered HTTP {answer.status_code}: {reason}; nothing was allocated"
            )
        if not limits.confirm(allocation_id):
            # The reservation ended (its lease) while the node granted: give the node's grant back.
            with _http(client) as http:
                http.delete(f"{member.url}/v1/allocations/{allocation_id}")
            raise BackendError("the reservation expired before the node's grant was confirmed; nothing was allocated")
        return limits.allocation(allocation_id)
    finally:
        with contextlib.suppress(EtcdError):
            etcd.revoke(lease)  # the record no longer uses it once confirmed (or is gone)


def release(etcd: Etcd, client: Client, allocation_id: str) -> dict[str, Any]:
    limits = ClusterLimits(etcd)
    record = limits.allocation(allocation_id)
    try:
        with _http(client) as http:
            answer = http.delete(f"{record['node_url']}/v1/allocations/{allocation_id}")
    except httpx.HTTPError as exc:
        raise BackendError(
            f"node {record.get('node_id')} ({record.get('node_url')}) could not be reached: {exc}; "
            "the allocation is kept, retry the release"
        ) from None
    if answer.status_code not in (200, 204, 404):  # 404: the node no longer has it (its owner exited): release anyway
        raise BackendError(f"node {record.get('node_id')} answered HTTP {answer.status_code}: {_error(answer)}")
    limits.undo(allocation_id, str(record["kind"]))
    return record


def _error(answer: httpx.Response) -> str:
    try:
        data = answer.json()
    except (ValueError, json.JSONDecodeError):
        return answer.text[:200]
    if isinstance(data, dict):
        left = f" ({data['left']} left)" if "left" in data else ""
        return f"{data.get('error', '')}{left}"
    return str(data)[:200]
