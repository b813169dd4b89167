"""A cluster allocation end to end: pick a node with room, reserve in etcd, grant on the node, confirm or undo.

See limits.py for the keys and why nothing is over-committed or lost. The node is asked with the same TLS and
credentials as every cluster command (an agent without basic auth takes writes from loopback clients only).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import random

from hypermesh.cluster.etcd import Etcd, EtcdError, KeyValue
from hypermesh.cluster.fanout import Client, Node, collect
from hypermesh.cluster.http1 import HttpFailure
from hypermesh.cluster.limits import PENDING_TTL_S, ClusterLimits
from hypermesh.cluster.membership import NODES_PREFIX, Member
from hypermesh.errors import BackendError, InvalidInput, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ONE_ASSET_KINDS", "NodeRefused", "allocate", "release"]

# Kinds a node has one asset of (Inventory.allocate takes them without an asset id).
ONE_ASSET_KINDS = ("cpu", "memory")


class NodeRefused(InvalidInput):
    """The node's own ledger said no (not enough left there, a GPU in use): exit 2 with its reason."""


def pick_node(
    client: Client, members: list[Member], kind: str, amount: float, node_id: str | None
) -> tuple[Member, str | None]:
    """The node (and asset) to allocate on: the named one, else the asset of that kind with the most room."""
    candidates = _named(members, node_id) if node_id is not None else members
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
    """Reserve, grant, confirm (limits.py). The lease is granted while the limits are read (neither needs the
    other), so the cluster's part is two etcd round trips in a row, not three.

    Which node: for a kind with one asset per node (cpu, memory) the nodes are asked in turn, in random order
    (allocations spread over the nodes), and a node whose ledger refuses (409: not enough left there) hands over to
    the next one under the same reservation: the node's ledger decides, so asking every node for its room first
    (``GET /v1/assets``) would cost a round trip to learn what the grant itself answers. For the other kinds the
    asset must be named, so the node and asset with the most room are picked from the nodes' own snapshots."""
    limits = ClusterLimits(etcd)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hypermesh-lease") as pool:
        lease = pool.submit(etcd.grant, PENDING_TTL_S)
        try:
            read = limits.read_for(kind)  # the agents, the kind's limits and usage: one round trip
        except BaseException:
            _revoke_later(etcd, lease)
            raise
        granted_lease = lease.result()  # EtcdUnavailable: nothing was reserved
    try:
        members = _registered(etcd, read.nodes)
        if kind in ONE_ASSET_KINDS:
            candidates = _named(members, node_id) if node_id is not None else random.sample(members, len(members))
            asset = None
        else:
            member, asset = pick_node(client, members, kind, amount, node_id)
            candidates = [member]
        allocation_id, record, revision = limits.reserve_at(kind, amount, owner, granted_lease, read=read)
    except BaseException:
        with contextlib.suppress(EtcdError):
            etcd.revoke(granted_lease)
        raise
    body: dict[str, Any] = {"kind": kind, "amount": amount, "owner": owner, "id": allocation_id}
    if asset is not None:
        body["asset"] = asset
    member = _grant(limits, client, candidates, body)
    granted = {**record, "node_id": member.node_id, "node_url": member.url, "state": "granted"}
    if not limits.confirm(allocation_id, record, revision, node_id=member.node_id, node_url=member.url):
        # The reservation ended (its lease) while the node granted: give the node's grant back.
        with contextlib.suppress(HttpFailure):
            client.send_sync(f"{member.url}/v1/allocations/{allocation_id}", "DELETE")
        raise BackendError("the reservation expired before the node's grant was confirmed; nothing was allocated")
    # The lease is not revoked: the confirmed record no longer uses it, and etcd ends it within PENDING_TTL_S.
    # Revoking would be one more raft write (an fsync) on every allocation's path.
    return granted


def _grant(limits: ClusterLimits, client: Client, candidates: list[Member], body: dict[str, Any]) -> Member:
    """POST the reserved allocation to each candidate in turn until one grants it; the reservation is undone when
    none does. Only a node that refused (409) or that nothing listens on (connection refused: the request never
    reached it) hands over to the next: after a timeout or a broken answer the node may hold the grant, and a
    second node must not grant it too."""
    allocation_id, kind = str(body["id"]), str(body["kind"])
    refusals: list[str] = []
    for member in candidates:
        try:
            status, answer = client.send_sync(f"{member.url}/v1/allocations", "POST", body)
        except HttpFailure as failure:
            if failure.kind == "refused" and len(candidates) > 1:
                refusals.append(f"{member.node_id}: {failure.kind}: {failure.message}")
                continue
            limits.undo(allocation_id, kind)
            raise BackendError(
                f"node {member.node_id} ({member.url}) could not be reached: {failure.kind}: {failure.message}; "
                "nothing was allocated"
            ) from None
        if status in (200, 201):
            return member
        if status == 409:
            refusals.append(f"{member.node_id}: {_error(answer)}")
            continue
        limits.undo(allocation_id, kind)
        reason = _error(answer)
        if status in (409, 422):
            raise NodeRefused(f"node {member.node_id} refused: {reason}")
        raise BackendError(f"node {member.node_id} answered HTTP {status}: {reason}; nothing was allocated")
    limits.undo(allocation_id, kind)
    where = "any node" if len(candidates) > 1 else f"node {candidates[0].node_id}"
    raise NodeRefused(f"no {kind} asset on {where} has {body['amount']:g} allocatable ({'; '.join(refusals)})")


def _named(members: list[Member], node_id: str) -> list[Member]:
    chosen = [m for m in members if m.node_id == node_id]
    if not chosen:
        known = ", ".join(m.node_id for m in members)
        raise NotFound(f"no agent {node_id!r} is registered (registered: {known})")
    return chosen


def _revoke_later(etcd: Etcd, lease: concurrent.futures.Future[int]) -> None:
    """The read failed: the lease granted meanwhile (if it was) is not needed."""
    with contextlib.suppress(Exception):
        etcd.revoke(lease.result())


def _registered(etcd: Etcd, kvs: list[KeyValue]) -> list[Member]:
    members = [m for kv in kvs if (m := Member.from_json(kv.key.removeprefix(NODES_PREFIX), kv.value)) is not None]
    if not members:
        raise BackendError(f"no agents are registered in etcd at {etcd.url}; start them with --etcd {etcd.url}")
    return sorted(members, key=lambda m: m.node_id)


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
