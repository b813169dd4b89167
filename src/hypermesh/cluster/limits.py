"""Cluster-wide limits: a total per kind (and optionally per owner) that allocations across all nodes stay within.

Keys in etcd (values JSON):

    /hypermesh/limits/<kind>            {"amount": A}        the cluster's total for the kind
    /hypermesh/limits/<kind>/<owner>    {"amount": A}        one owner's total for the kind
    /hypermesh/usage/<kind>             {"reserved": {id: {"amount": a, "owner": o, "node_id": n, "node_url": u}}}
    /hypermesh/allocations/<id>         {id, kind, amount, owner, node_id, node_url, state, created_at}

An allocation takes two steps, the cluster's and then the node's:

1. **Reserve**: read the limits and the usage key, and in one transaction (compare the usage key's mod revision with
   the one read; retry on conflict) add the id to the usage key, naming the node that will be asked, and write the
   allocation record as ``pending`` bound to the allocator's lease (PENDING_TTL_S). Two allocators racing for the
   last room: one transaction wins, the other re-reads and is refused. Never over-committed.
2. **Grant**: ``POST /v1/allocations`` on that node (its own ledger refuses what the node has not got). A node that
   refuses hands over to the next only after the entry and the record are moved to name it (move()). No node
   grants, or one cannot be reached (the request never left): the reservation is undone in one transaction. A node
   that got the request and did not answer (timed out, a connection broken after sending) may hold the grant: the
   reservation stays, and repair settles it once its lease has ended, as for an allocator that died.
3. **Acknowledge, then confirm**: allocate() returns once the node's ledger holds the grant (durably: fsync'd), and
   the record becomes ``granted`` (no lease: it lasts until released) meanwhile, in a transaction that checks it is
   still the record written in step 1.

Why an allocator that dies at any point loses nothing acknowledged and over-commits nothing: its pending record ends
with its lease, its usage entry stays, and ``repair()`` (run by ``cluster allocations``, by ``release`` of an id
without a record, and by a reservation the entry would otherwise refuse) asks the node the entry names whether its
ledger holds the id: yes, the record is written ``granted``; no, the entry is removed; the node cannot be asked,
the entry is kept (it can only leave room unused). The answer is final because of when it is asked: only after the
lease ended, and an allocator acknowledges only while its lease has ACK_MARGIN_S (allocate.py) left, so a grant it
acknowledged was made before repair asks. An allocator that gets its grant later (a stalled process) confirms before
it answers (from its usage entry if the record is gone), and gives the grant back if the entry is gone too. An entry without a node was never sent to one.
The one case left to the operator: a POST that reaches a node only after its lease ended and after repair asked
(a request delayed more than PENDING_TTL_S) by an allocator that then dies: the node holds a grant no entry counts.
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
    Reply,
    compare_mod_revision,
    request_delete,
    request_put,
)
from hypermesh.cluster.membership import NODES_PREFIX
from hypermesh.errors import InvalidInput, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    # (node URL, allocation id) -> whether that node's ledger holds it; None when the node could not be asked.
    Holds = Callable[[str, str], bool | None]

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


def _entry(amount: float, owner: str, node_id: str | None, node_url: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"amount": amount, "owner": owner}
    if node_url is not None:
        entry["node_id"], entry["node_url"] = node_id, node_url
    return entry


def _granted(kind: str, allocation_id: str, entry: dict[str, Any]) -> dict[str, Any]:
    """The record of a grant settled from its usage entry (its pending record went with its lease)."""
    return {
        "id": allocation_id,
        "kind": kind,
        "amount": float(entry["amount"]),
        "owner": entry.get("owner"),
        "node_id": entry.get("node_id"),
        "node_url": entry.get("node_url"),
        "state": "granted",
        "created_at": time.time(),
    }


def _verdict(allocation_id: str, entry: dict[str, Any], holds: Holds | None) -> bool | None:
    """Whether an entry whose record is gone was granted: True (keep it, record it granted), False (remove it),
    None (cannot tell now: keep it). An entry naming no node was written before any node was asked."""
    url = entry.get("node_url")
    if not isinstance(url, str):
        return False
    return None if holds is None else holds(url, allocation_id)


def _fmt(value: float) -> str:
    return f"{value:.6g}"


class Prefetch:
    """A kind's limit keys and usage key, and the registered agents, as one read returned them (``read_at``: when,
    time.monotonic()). ClusterLimits.latest keeps the last one per kind with the usage key as this client last wrote
    it, so that the next reservation can start from it (a transaction finds it stale if another client wrote since)."""

    __slots__ = ("limits", "nodes", "read_at", "serializable", "usage")

    def __init__(
        self, limits: list[KeyValue], usage: KeyValue | None, nodes: list[KeyValue], serializable: bool = False
    ) -> None:
        self.limits, self.usage, self.nodes, self.serializable = limits, usage, nodes, serializable
        self.read_at = time.monotonic()


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
        # Entries the last repair() kept because their node could not be asked whether it granted them.
        self.unverified: list[str] = []
        # Per kind, the last read (read_for) with the usage key as this client last wrote it (_wrote).
        self.latest: dict[str, Prefetch] = {}

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

    def read_for(self, kind: str, serializable: bool = False) -> Prefetch:
        """What a reservation of ``kind`` reads, in one round trip: the kind's limits and its usage key (and the
        registered agents, which the allocator asks at the same time). ``serializable`` (Etcd.read_many) is safe
        for reserve_at(): its transaction compares the revisions of the usage key and of the limits it applied."""
        prefixes = [LIMITS + kind, USAGE + kind, NODES_PREFIX]
        (limit_kvs, usage_kvs, nodes), _ = self.etcd.read_many(prefixes, serializable)
        usage = next((kv for kv in usage_kvs if kv.key == USAGE + kind), None)
        read = self.latest[kind] = Prefetch(limit_kvs, usage, nodes, serializable)
        return read

    def _wrote(self, kind: str, value: bytes, revision: int) -> None:
        """A transaction of ours wrote the usage key (``value``) at ``revision``: the next reservation of the kind
        may start from it. The limits and agents it keeps from the last read are checked by that reservation's
        transaction (limits: their revisions) or by the nodes themselves (agents)."""
        latest = self.latest.get(kind)
        if latest is not None and (latest.usage is None or latest.usage.mod_revision < revision):
            latest.usage = KeyValue(USAGE + kind, value, revision, 0, 0)

    def reserve_at(
        self,
        kind: str,
        amount: float,
        owner: str,
        lease: int,
        node_id: str | None = None,
        node_url: str | None = None,
        read: Prefetch | None = None,
        holds: Holds | None = None,
    ) -> tuple[str, dict[str, Any], int]:
        """Step 1 as the allocator uses it: (id, the pending record, the revision it was written at). The node to be
        asked is named in the record and in the usage entry (repair asks it whether it granted); ``holds`` lets a
        reservation that would be refused drop abandoned entries that their node does not hold."""
        allocation_id = f"c-{uuid.uuid4().hex[:16]}"
        read = read or self.read_for(kind)
        for _ in range(MAX_ATTEMPTS):
            total = owner_limit = None
            # The limits as applied, by mod revision (0: no such key); the transaction holds only if they still are.
            applied = {LIMITS + kind: 0, f"{LIMITS}{kind}/{owner}": 0}
            for kv in read.limits:
                if kv.key in applied:
                    applied[kv.key] = kv.mod_revision
                    if kv.key == LIMITS + kind:
                        total = float(_json(kv.value).get("amount", 0.0))
                    else:
                        owner_limit = float(_json(kv.value).get("amount", 0.0))
            reserved, revision = _reserved(read.usage)
            refusal = _over(kind, reserved, amount, owner, total, owner_limit)
            if refusal is not None and read.serializable:
                read = self.read_for(kind)  # refuse only on what the leader confirms is current
                continue
            if refusal is not None:
                # Entries whose record went with its lease (an allocator that died) count only until someone
                # looks: they are looked for only when they would make the difference, not on every reservation.
                reserved = self._without_orphans(reserved, holds)
                refusal = _over(kind, reserved, amount, owner, total, owner_limit)
                if refusal is not None:
                    raise LimitExceeded(refusal)
            reserved[allocation_id] = _entry(amount, owner, node_id, node_url)
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
            usage = json.dumps({"reserved": reserved}).encode()
            done, written_at = self.etcd.txn_at(
                [compare_mod_revision(USAGE + kind, revision)]
                + [compare_mod_revision(key, mod_revision) for key, mod_revision in applied.items()],
                [
                    request_put(USAGE + kind, usage),
                    request_put(ALLOCATIONS + allocation_id, json.dumps(record).encode(), lease=lease),
                ],
                [],
            )
            if done:
                self._wrote(kind, usage, written_at)
                return allocation_id, record, written_at
            read = self.read_for(kind)  # linearizable: another allocator went first, or a limit changed
        raise EtcdError(f"cluster allocation of {kind}: {MAX_ATTEMPTS} conflicting transactions in a row; retry")

    def confirm(
        self, allocation_id: str, record: dict[str, Any] | None = None, revision: int = 0, **changes: Any
    ) -> bool:
        """Step 3: the record becomes granted, without a lease. False if the reservation is gone.

        ``record`` and ``revision`` as reserve_at() returned them spare reading the record again."""
        return self.confirm_start(allocation_id, record, revision, **changes)()

    def confirm_start(
        self, allocation_id: str, record: dict[str, Any] | None = None, revision: int = 0, **changes: Any
    ) -> Reply[bool]:
        """confirm() sent now (Etcd.start), its outcome read when called."""
        if record is None or not revision:
            kv = self.etcd.get(ALLOCATIONS + allocation_id)
            if kv is None:
                return Reply(lambda: False, lambda: True)
            record, revision = _json(kv.value), kv.mod_revision
        record = {**record, **changes, "state": "granted"}
        outcome = self.etcd.txn_start(
            [compare_mod_revision(ALLOCATIONS + allocation_id, revision)],
            [request_put(ALLOCATIONS + allocation_id, json.dumps(record).encode())],
            [],
        )
        return outcome.then(lambda done: done[0])

    def move(
        self, allocation_id: str, record: dict[str, Any], revision: int, lease: int, node_id: str, node_url: str
    ) -> tuple[dict[str, Any], int] | None:
        """Point a pending reservation at another node before asking it (the one named refused): the record and the
        usage entry name the node whose ledger may hold the grant. None when the reservation is gone (its lease)."""
        kind = str(record["kind"])
        record = {**record, "node_id": node_id, "node_url": node_url}
        for _ in range(MAX_ATTEMPTS):
            reserved, usage_revision = self._usage(kind)
            entry = reserved.get(allocation_id)
            if entry is None:
                return None
            reserved[allocation_id] = _entry(float(entry["amount"]), str(entry["owner"]), node_id, node_url)
            usage = json.dumps({"reserved": reserved}).encode()
            done, written_at = self.etcd.txn_at(
                [
                    compare_mod_revision(USAGE + kind, usage_revision),
                    compare_mod_revision(ALLOCATIONS + allocation_id, revision),
                ],
                [
                    request_put(USAGE + kind, usage),
                    request_put(ALLOCATIONS + allocation_id, json.dumps(record).encode(), lease=lease),
                ],
                [],
            )
            if done:
                self._wrote(kind, usage, written_at)
                return record, written_at
            kv = self.etcd.get(ALLOCATIONS + allocation_id)
            if kv is None or kv.mod_revision != revision:
                return None
        raise EtcdError(f"could not move reservation {allocation_id}: too many conflicting transactions; retry")

    def adopt(self, allocation_id: str, kind: str) -> bool:
        """After a confirmation that found the record changed or gone: True when the allocation is (now) recorded
        as granted, from its usage entry if its pending record went with its lease; False when the usage entry is
        gone too (it was released)."""
        for _ in range(MAX_ATTEMPTS):
            kv = self.etcd.get(ALLOCATIONS + allocation_id)
            if kv is not None:
                record = _json(kv.value)
                if record.get("state") == "granted":
                    return True
                if self.confirm(allocation_id, record, kv.mod_revision):
                    return True
                continue
            reserved, usage_revision = self._usage(kind)
            entry = reserved.get(allocation_id)
            if entry is None:
                return False
            if self._record_granted(kind, allocation_id, entry, usage_revision):
                return True
        raise EtcdError(f"could not confirm {allocation_id}: too many conflicting transactions; retry")

    def _record_granted(self, kind: str, allocation_id: str, entry: dict[str, Any], usage_revision: int) -> bool:
        """Write the granted record of a usage entry whose pending record is gone, if the entry is still there (the
        usage key unchanged) and nobody wrote the record meanwhile."""
        record = _granted(kind, allocation_id, entry)
        return self.etcd.txn(
            [compare_mod_revision(USAGE + kind, usage_revision), compare_mod_revision(ALLOCATIONS + allocation_id, 0)],
            [request_put(ALLOCATIONS + allocation_id, json.dumps(record).encode())],
            [],
        )

    def undo(self, allocation_id: str, kind: str) -> None:
        """Remove the reservation (the node refused, could not be reached, or the allocation was released)."""
        for _ in range(MAX_ATTEMPTS):
            reserved, revision = self._usage(kind)
            reserved.pop(allocation_id, None)
            usage = json.dumps({"reserved": reserved}).encode()
            done, written_at = self.etcd.txn_at(
                [compare_mod_revision(USAGE + kind, revision)],
                [request_put(USAGE + kind, usage), request_delete(ALLOCATIONS + allocation_id)],
                [],
            )
            if done:
                self._wrote(kind, usage, written_at)
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

    def repair(self, holds: Holds | None = None) -> list[str]:
        """Settle every usage entry whose allocation record is gone (its allocator died; module docstring): ask the
        node the entry names whether its ledger holds the grant: yes, the record is written granted; no, the entry
        is removed. An entry whose node could not be asked (or with ``holds`` None) is kept and listed in
        ``self.unverified``: kept, it can only leave room unused. Returns the ids settled."""
        repaired: list[str] = []
        self.unverified = []
        kvs, _ = self.etcd.get_prefix(USAGE)
        for kv in kvs:
            kind = kv.key[len(USAGE) :]
            for _ in range(MAX_ATTEMPTS):
                reserved, revision = self._usage(kind)
                orphans = self._orphans(reserved)
                verdicts = {id: _verdict(id, entry, holds) for id, entry in orphans.items()}
                settled = [id for id, verdict in verdicts.items() if verdict is not None]
                if not settled:
                    self.unverified += sorted(orphans)
                    break
                kept = {id: entry for id, entry in reserved.items() if verdicts.get(id) is not False}
                usage = json.dumps({"reserved": kept}).encode()
                puts = [request_put(USAGE + kind, usage)]
                compares = [compare_mod_revision(USAGE + kind, revision)]
                for id, verdict in verdicts.items():
                    if verdict:
                        compares.append(compare_mod_revision(ALLOCATIONS + id, 0))
                        puts.append(request_put(ALLOCATIONS + id, json.dumps(_granted(kind, id, orphans[id])).encode()))
                done, written_at = self.etcd.txn_at(compares, puts, [])
                if done:
                    self._wrote(kind, usage, written_at)
                    repaired += sorted(settled)
                    self.unverified += sorted(id for id, verdict in verdicts.items() if verdict is None)
                    break
        return repaired

    def _usage(self, kind: str) -> tuple[dict[str, dict[str, Any]], int]:
        return _reserved(self.etcd.get(USAGE + kind))

    def _orphans(self, reserved: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Entries whose allocation record is gone (with its lease)."""
        if not reserved:
            return {}
        kvs, _ = self.etcd.get_prefix(ALLOCATIONS)
        live = {kv.key[len(ALLOCATIONS) :] for kv in kvs}
        return {k: v for k, v in reserved.items() if k not in live}

    def _without_orphans(self, reserved: dict[str, dict[str, Any]], holds: Holds | None) -> dict[str, dict[str, Any]]:
        """The entries that still count: all but those whose record is gone and whose node does not hold them."""
        orphans = self._orphans(reserved)
        return {k: v for k, v in reserved.items() if k not in orphans or _verdict(k, v, holds) is not False}
