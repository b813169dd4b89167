"""A cluster allocation end to end: pick a node with room, reserve in etcd, grant on the node, confirm or undo.

See limits.py for the keys and why nothing is over-committed or lost. The node is asked with the same TLS and
credentials as every cluster command (an agent without basic auth takes writes from loopback clients only).
"""

from __future__ import annotations

import concurrent.futures
import contextlib

from hypermesh.cluster.etcd import Etcd, EtcdError, KeyValue
from hypermesh.cluster.fanout import Client, Node, collect
from hypermesh.cluster.http1 import HttpFailure
from hypermesh.cluster.limits import PENDING_TTL_S, ClusterLimits, Prefetch
from hypermesh.cluster.membership import NODES_PREFIX, Member
from hypermesh.errors import BackendError, InvalidInput, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["NodeRefused", "allocate", "release"]


class NodeRefused(InvalidInput):
    """The node's own ledger said no (not enough left there, a GPU in use): exit 2 with its reason."""


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


def allocate(
    etcd: Etcd, client: Client, kind: str, amount: float, owner: str, node_id: str | None = None
) -> dict[str, Any]:
    """Pick, reserve, grant, confirm. The lease and the reservation are made while the nodes are asked for room
    (neither depends on which node): an allocation waits for etcd's writes once each, not one after another."""
    limits = ClusterLimits(etcd)
    read = limits.read_for(kind)  # the agents, the kind's limits and usage: one round trip
    members = _registered(etcd, read.nodes)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hypermesh-reserve") as pool:
        reservation = pool.submit(_reserve, etcd, limits, kind, amount, owner, read)
        try:
            member, asset = pick_node(client, members, kind, amount, node_id)
        except BaseException:
            _abandon(limits, kind, reservation)
            raise
        allocation_id, record, revision = reservation.result()  # LimitExceeded / EtcdError: nothing was granted
    body: dict[str, Any] = {"kind": kind, "amount": amount, "owner": owner, "id": allocation_id}
    if asset is not None:
        body["asset"] = asset
    try:
        status, answer = client.send_sync(f"{member.url}/v1/allocations", "POST", body)
    except HttpFailure as failure:
        limits.undo(allocation_id, kind)
        raise BackendError(
            f"node {member.node_id} ({member.url}) could not be reached: {failure.kind}: {failure.message}; "
            "nothing was allocated"
        ) from None
    if status not in (200, 201):
        limits.undo(allocation_id, kind)
        reason = _error(answer)
        if status in (409, 422):
            raise NodeRefused(f"node {member.node_id} refused: {reason}")
        raise BackendError(f"node {member.node_id} answered HTTP {status}: {reason}; nothing was allocated")
    granted = {**record, "node_id": member.node_id, "node_url": member.url, "state": "granted"}
    if not limits.confirm(allocation_id, record, revision, node_id=member.node_id, node_url=member.url):
        # The reservation ended (its lease) while the node granted: give the node's grant back.
        with contextlib.suppress(HttpFailure):
            client.send_sync(f"{member.url}/v1/allocations/{allocation_id}", "DELETE")
        raise BackendError("the reservation expired before the node's grant was confirmed; nothing was allocated")
    # The lease is not revoked: the confirmed record no longer uses it, and etcd ends it within PENDING_TTL_S.
    # Revoking would be one more raft write (an fsync) on every allocation's path.
    return granted


def _registered(etcd: Etcd, kvs: list[KeyValue]) -> list[Member]:
    members = [m for kv in kvs if (m := Member.from_json(kv.key.removeprefix(NODES_PREFIX), kv.value)) is not None]
    if not members:
        raise BackendError(f"no agents are registered in etcd at {etcd.url}; start them with --etcd {etcd.url}")
    return sorted(members, key=lambda m: m.node_id)


def _reserve(
    etcd: Etcd, limits: ClusterLimits, kind: str, amount: float, owner: str, read: Prefetch
) -> tuple[str, dict[str, Any], int]:
    lease = etcd.grant(PENDING_TTL_S)
    try:
        return limits.reserve_at(kind, amount, owner, lease, read=read)
    except BaseException:
        with contextlib.suppress(EtcdError):
            etcd.revoke(lease)
        raise


def _abandon(limits: ClusterLimits, kind: str, reservation: concurrent.futures.Future[Any]) -> None:
    """No node was picked: undo the reservation made meanwhile (if it was made)."""
    try:
        allocation_id = reservation.result()[0]
    except Exception:
        return
    with contextlib.suppress(EtcdError):
        limits.undo(allocation_id, kind)


def release(etcd: Etcd, client: Client, allocation_id: str) -> dict[str, Any]:
    limits = ClusterLimits(etcd)
    record = limits.allocation(allocation_id)
    try:
        status, answer = client.send_sync(f"{record['node_url']}/v1/allocations/{allocation_id}", "DELETE")
    except HttpFailure as failure:
        raise BackendError(
            f"node {record.get('node_id')} ({record.get('node_url')}) could not be reached: {failure.message}; "
            "the allocation is kept, retry the release"
        ) from None
    if status not in (200, 204, 404):  # 404: the node no longer has it (its owner exited): release anyway
        raise BackendError(f"node {record.get('node_id')} answered HTTP {status}: {_error(answer)}")
    limits.undo(allocation_id, str(record["kind"]))
    return record


def _error(answer: Any) -> str:
    if isinstance(answer, dict):
        left = f" ({answer['left']} left)" if "left" in answer else ""
        return f"{answer.get('error', '')}{left}"
    return str(answer or "")[:200]
