"""Cluster-wide limits: a total per kind (and optionally per owner) that allocations across all nodes stay within.

Keys in etcd (values JSON):

    /hypermesh/limits/<kind>            {"amount": A}        the cluster's total for the kind
    /hypermesh/limits/<kind>/<owner>    {"amount": A}        one owner's total for the kind
    /hypermesh/usage/<kind>             {"reserved": {id: {"amount": a, "owner": o}}}
    /hypermesh/allocations/<id>         {id, kind, amount, owner, node_id, node_url, state, created_at}

An allocation takes two steps, the cluster's and then the node's:

1. **Reserve**: read the limits and the usage key, and in one transaction (compare the usage key's mod revision with
   the one read; retry on conflict) add the id to the usage key and write the allocation record as ``pending``
   bound to the allocator's lease. Two allocators racing for the last room: one transaction wins, the other
   re-reads and is refused. Never over-committed. allocate() reserves while it asks the nodes for room, so the
   record may name its node only when confirmed.
2. **Grant**: ``POST /v1/allocations`` on the chosen node (its own ledger refuses what the node has not got). Then
   the record becomes ``granted`` (no lease: it lasts until released) in a transaction that checks it is still
   there. If the node refuses or cannot be reached, the reservation is undone in one transaction.

An allocator that dies between the two steps leaves a pending record with a lease: when the lease ends etcd deletes
the record; ``repair()`` (and an allocation that the entry would otherwise refuse) finds the usage entry without a
record and removes it. A grant that the node made but the allocator could not confirm is checked against the node's ledger on repair.
etcd down: every write fails closed (EtcdUnavailable, exit 1); nothing is granted on a node without its reservation.
"""

from __future__ import annotations

import json
import time
import uuid

from hypermesh.cluster.etcd import (
    Etcd,
    EtcdError,
    KeyValue,
    compare_mod_revision,
    request_delete,
    request_put,
)
from hypermesh.cluster.membership import NODES_PREFIX
from hypermesh.errors import InvalidInput, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ALLOCATIONS", "LIMITS", "USAGE", "ClusterLimits", "LimitExceeded"]

LIMITS = "/hypermesh/limits/"
USAGE = "/hypermesh/usage/"
ALLOCATIONS = "/hypermesh/allocations/"
# A pending reservation outlives its allocator by this much at most: longer than a node's POST can take.
PENDING_TTL_S = 15
# Conflicting transactions are retried this many times; each conflict means another allocator made progress.
MAX_ATTEMPTS = 64


class LimitExceeded(InvalidInput):
    """Refused: the allocation would exceed a cluster-wide limit (exit 2, saying what is left)."""


def _json(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _fmt(value: float) -> str:
    return f"{value:.6g}"


class Prefetch:
    """A kind's limit keys and usage key, and the registered agents, as one read returned them."""

    __slots__ = ("limits", "nodes", "usage")

    def __init__(self, limits: list[KeyValue], usage: KeyValue | None, nodes: list[KeyValue]) -> None:
        self.limits, self.usage, self.nodes = limits, usage, nodes


def _reserved(kv: KeyValue | None) -> tuple[dict[str, dict[str, Any]], int]:
    """The usage key's reservations and its mod revision (0: no key yet)."""
    if kv is None:
        return {}, 0
    reserved = _json(kv.value).get("reserved", {})
    return (dict(reserved) if isinstance(reserved, dict) else {}), kv.mod_revision


def _over(
    kind: str,
    reserved: dict[str, dict[str, Any]],
    amount: float,
    owner: str,
    total: float | None,
    owner_limit: float | None,
) -> str | None:
    """Why ``amount`` more would exceed a limit, or None."""
    used = sum(float(r["amount"]) for r in reserved.values())
    if total is not None and used + amount > total + 1e-9:
        return f"cluster limit for {kind}: {_fmt(total - used)} of {_fmt(total)} left, {_fmt(amount)} asked"
    owned = sum(float(r["amount"]) for r in reserved.values() if r.get("owner") == owner)
    if owner_limit is not None and owned + amount > owner_limit + 1e-9:
        return (
            f"cluster limit for {kind} of {owner}: {_fmt(owner_limit - owned)} of {_fmt(owner_limit)} left, "
            f"{_fmt(amount)} asked"
        )
    return None


class ClusterLimits:
    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd

    # ------------------------------------------------------------------------------------------- limits
    def set_limit(self, kind: str, amount: float, owner: str | None = None) -> None:
        key = LIMITS + kind + (f"/{owner}" if owner else "")
        self.etcd.put(key, json.dumps({"amount": amount, "set_at": time.time()}).encode())

    def remove_limit(self, kind: str, owner: str | None = None) -> bool:
        return self.etcd.delete(LIMITS + kind + (f"/{owner}" if owner else "")) > 0

    def limits(self) -> list[dict[str, Any]]:
        """Every limit with what is reserved against it now."""
        kvs, _ = self.etcd.get_prefix(LIMITS)
        usage = {kind: self._usage(kind)[0] for kind in {kv.key[len(LIMITS) :].split("/")[0] for kv in kvs}}
        out = []
        for kv in kvs:
            kind, _, owner = kv.key[len(LIMITS) :].partition("/")
            reserved = usage.get(kind, {})
            used = sum(float(r["amount"]) for r in reserved.values() if not owner or r.get("owner") == owner)
            amount = float(_json(kv.value).get("amount", 0.0))
            out.append({"kind": kind, "owner": owner or None, "amount": amount, "used": used, "left": amount - used})
        return out

    # ------------------------------------------------------------------------------------------- allocate
    def reserve(self, kind: str, amount: float, owner: str, node_id: str, node_url: str, lease: int) -> str:
        """Step 1: the reservation's id, or LimitExceeded saying what is left."""
        return self.reserve_at(kind, amount, owner, lease, node_id, node_url)[0]

    def read_for(self, kind: str) -> Prefetch:
        """What a reservation of ``kind`` reads, in one round trip: the kind's limits and its usage key (and the
        registered agents, which the allocator asks at the same time)."""
        (limit_kvs, usage_kvs, nodes), _ = self.etcd.read_many([LIMITS + kind, USAGE + kind, NODES_PREFIX])
        usage = next((kv for kv in usage_kvs if kv.key == USAGE + kind), None)
        return Prefetch(limit_kvs, usage, nodes)

    def reserve_at(
        self,
        kind: str,
        amount: float,
        owner: str,
        lease: int,
        node_id: str | None = None,
        node_url: str | None = None,
        read: Prefetch | None = None,
    ) -> tuple[str, dict[str, Any], int]:
        """Step 1 as the allocator uses it: (id, the pending record, the revision it was written at). The node may
        be unknown yet (the record is bound to the lease and gets its node when confirmed)."""
        allocation_id = f"c-{uuid.uuid4().hex[:16]}"
        read = read or self.read_for(kind)
        total = owner_limit = None
        for kv in read.limits:
            rest = kv.key[len(LIMITS) :]
            if rest == kind:
                total = float(_json(kv.value).get("amount", 0.0))
            elif rest == f"{kind}/{owner}":
                owner_limit = float(_json(kv.value).get("amount", 0.0))
        usage = read.usage
        for _ in range(MAX_ATTEMPTS):
            reserved, revision = _reserved(usage)
            refusal = _over(kind, reserved, amount, owner, total, owner_limit)
            if refusal is not None:
                # Entries whose record went with its lease (an allocator that died) count only until someone
                # looks: they are looked for only when they would make the difference, not on every reservation.
                reserved = self._without_orphans(reserved)
                refusal = _over(kind, reserved, amount, owner, total, owner_limit)
                if refusal is not None:
                    raise LimitExceeded(refusal)
            reserved[allocation_id] = {"amount": amount, "owner": owner}
            record = {
                "id": allocation_id,
                "kind": kind,
                "amount": amount,
                "owner": owner,
                "node_id": node_id,
                "node_url": node_url,
                "state": "pending",
                "created_at": time.time(),
            }
            done, written_at = self.etcd.txn_at(
                [compare_mod_revision(USAGE + kind, revision)],
                [
                    request_put(USAGE + kind, json.dumps({"reserved": reserved}).encode()),
                    request_put(ALLOCATIONS + allocation_id, json.dumps(record).encode(), lease=lease),
                ],
                [],
            )
            if done:
                return allocation_id, record, written_at
            usage = self.etcd.get(USAGE + kind)
        raise EtcdError(f"cluster allocation of {kind}: {MAX_ATTEMPTS} conflicting transactions in a row; retry")

    def confirm(
        self, allocation_id: str, record: dict[str, Any] | None = None, revision: int = 0, **changes: Any
    ) -> bool:
        """Step 2 done: the record becomes granted, without a lease. False if the reservation is gone.

        ``record`` and ``revision`` as reserve_at() returned them spare reading the record again."""
        if record is None or not revision:
            kv = self.etcd.get(ALLOCATIONS + allocation_id)
            if kv is None:
                return False
            record, revision = _json(kv.value), kv.mod_revision
        record = {**record, **changes, "state": "granted"}
        return self.etcd.txn(
            [compare_mod_revision(ALLOCATIONS + allocation_id, revision)],
            [request_put(ALLOCATIONS + allocation_id, json.dumps(record).encode())],
            [],
        )

    def undo(self, allocation_id: str, kind: str) -> None:
        """Remove the reservation (the node refused, could not be reached, or the allocation was released)."""
        for _ in range(MAX_ATTEMPTS):
            reserved, revision = self._usage(kind)
            reserved.pop(allocation_id, None)
            if self.etcd.txn(
                [compare_mod_revision(USAGE + kind, revision)],
                [
                    request_put(USAGE + kind, json.dumps({"reserved": reserved}).encode()),
                    request_delete(ALLOCATIONS + allocation_id),
                ],
                [],
            ):
                return
        raise EtcdError(f"could not remove reservation {allocation_id}: too many conflicting transactions; retry")

    # ------------------------------------------------------------------------------------------- reading
    def allocations(self) -> list[dict[str, Any]]:
        kvs, _ = self.etcd.get_prefix(ALLOCATIONS)
        return sorted((_json(kv.value) for kv in kvs), key=lambda r: r.get("created_at", 0.0))

    def allocation(self, allocation_id: str) -> dict[str, Any]:
        kv = self.etcd.get(ALLOCATIONS + allocation_id)
        if kv is None:
            raise NotFound(f"no cluster allocation {allocation_id!r}; see 'hypermesh cluster allocations'")
        return _json(kv.value)

    def repair(self) -> list[str]:
        """Usage entries whose allocation record is gone (their allocator died before granting) are removed.
        Returns the ids repaired."""
        repaired: list[str] = []
        kvs, _ = self.etcd.get_prefix(USAGE)
        for kv in kvs:
            kind = kv.key[len(USAGE) :]
            before = set(_json(kv.value).get("reserved", {}))
            for _ in range(MAX_ATTEMPTS):
                reserved, revision = self._usage(kind)
                kept = self._without_orphans(reserved)
                if len(kept) == len(reserved):
                    break
                if self.etcd.txn(
                    [compare_mod_revision(USAGE + kind, revision)],
                    [request_put(USAGE + kind, json.dumps({"reserved": kept}).encode())],
                    [],
                ):
                    repaired += sorted(before - set(kept))
                    break
        return repaired

    def _usage(self, kind: str) -> tuple[dict[str, dict[str, Any]], int]:
        return _reserved(self.etcd.get(USAGE + kind))

    def _without_orphans(self, reserved: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Entries whose allocation record still exists: a record gone with its lease was never granted."""
        if not reserved:
            return reserved
        kvs, _ = self.etcd.get_prefix(ALLOCATIONS)
        live = {kv.key[len(ALLOCATIONS) :] for kv in kvs}
        return {k: v for k, v in reserved.items() if k in live}
