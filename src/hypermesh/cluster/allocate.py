"""A cluster allocation end to end: pick a node with room, reserve in etcd, grant on the node, confirm or undo.

See limits.py for the keys and why nothing is over-committed or lost. The node is asked with the same TLS and
credentials as every cluster command (an agent without basic auth takes writes from loopback clients only).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import random
import secrets
import threading
import time

from hypermesh.cluster.etcd import LEASE_NOT_FOUND, Etcd, EtcdError, KeyValue
from hypermesh.cluster.fanout import Client, Node, collect
from hypermesh.cluster.http1 import HttpFailure
from hypermesh.cluster.limits import PENDING_TTL_S, ClusterLimits, Prefetch
from hypermesh.cluster.membership import NODES_PREFIX, Member
from hypermesh.errors import BackendError, InvalidInput, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

    from hypermesh.cluster.http1 import Connection
    from hypermesh.cluster.limits import Holds

__all__ = ["ONE_ASSET_KINDS", "Allocator", "NodeRefused", "allocate", "node_holds", "release", "wait_confirmed"]

# Kinds a node has one asset of (Inventory.allocate takes them without an asset id).
ONE_ASSET_KINDS = ("cpu", "memory")
# An allocation is acknowledged before its confirmation only while its lease has this much left: a repair asks the
# node only after the lease ended, by when a grant acknowledged this early has long been made.
ACK_MARGIN_S = 5.0
# An Allocator names its shared lease in new reservations for this long after asking for it (the next one is asked
# for ahead, in its last eighth): an allocation that takes up to PENDING_TTL_S - ACK_MARGIN_S - LEASE_USE_S (5 s) is
# still acknowledged before its confirmation.
LEASE_USE_S = 5.0
# An Allocator re-reads the registered agents at least this often (their registrations' own TTL is 10 s).
MEMBERS_MAX_AGE_S = 3.0


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
    """One cluster allocation, as `hypermesh cluster allocate` makes it: Allocator(etcd, client, reuse=False)."""
    return Allocator(etcd, client, reuse=False).allocate(kind, amount, owner, node_id)


class _Lease:
    """A lease for pending records. Its id is ours (random, 62 bits): a reservation can name it before etcd's answer
    to the grant is read, so the grant costs no round trip of its own. ``started`` is before the grant was sent: the
    lease ends later than started + PENDING_TTL_S."""

    __slots__ = ("answer", "granted", "id", "started")

    def __init__(self, etcd: Etcd) -> None:
        self.started = time.monotonic()
        self.id = secrets.randbits(62) + 1
        self.answer = etcd.grant_start(PENDING_TTL_S, self.id)
        self.granted = False

    def wait(self) -> None:
        """Read the grant's answer (EtcdError if etcd did not grant it)."""
        if not self.granted:
            self.answer()
            self.granted = True


class Allocator:
    """Cluster allocations (limits.py has the protocol and why nothing is over-committed or lost).

    ``reuse=False``: each allocation on its own, as one CLI call makes it: a lease granted for it (sent before the
    read, its answer read after the reservation that names it), and the kind's limits, usage and the agents read.

    ``reuse=True`` (the default): successive allocations from one process, as a scheduler makes them, with two costs
    fewer on each after the first. The reservation starts from this client's last read of the kind, with the usage
    key as its own last transaction wrote it: the transaction compares the revisions it relied on, so a stale start
    costs one re-read (another allocator went first, a limit changed), never a wrong grant, and a refusal is
    checked against a fresh read before it is given. The agents are re-read after MEMBERS_MAX_AGE_S (a lost agent
    is also found by the grant itself: refused, the next node is asked). And the pending records share one lease,
    used for LEASE_USE_S and then replaced by one granted ahead, so no allocation waits for a grant: each is still
    acknowledged only while its lease has ACK_MARGIN_S left, as repair() requires.

    One allocation at a time (a lock): for parallel allocations, one Allocator per thread."""

    def __init__(self, etcd: Etcd, client: Client, *, reuse: bool = True) -> None:
        self.etcd, self.client, self.reuse = etcd, client, reuse
        self.limits = ClusterLimits(etcd)
        self._lock = threading.Lock()
        self._lease: _Lease | None = None
        self._next_lease: _Lease | None = None
        # Connections to the agents, kept between grants and releases with reuse (none kept without).
        self._kept: dict[tuple[str, int, bool], Connection] | None = {} if reuse else None

    def allocate(self, kind: str, amount: float, owner: str, node_id: str | None = None) -> dict[str, Any]:
        """Reserve, grant, acknowledge, confirm (limits.py): the granted record, once the node's ledger holds it.

        Which node: for a kind with one asset per node (cpu, memory) the nodes are asked in turn, in random order
        (allocations spread over the nodes), and a node whose ledger refuses (409: not enough left there) hands over
        to the next one under the same reservation: the node's ledger decides, so asking every node for its room
        first (``GET /v1/assets``) would cost a round trip to learn what the grant itself answers. For the other
        kinds the asset must be named, so the node and asset with the most room are picked from the nodes' own
        snapshots.

        Returns with the record's confirmation (one more etcd write) sent and not waited for: etcd applies it
        meanwhile, and wait_confirmed() (or the interpreter's exit) reads its answer. Near the end of its lease, it
        confirms before it returns. Why an allocator that dies before its confirmation is applied loses nothing:
        limits.py."""
        with self._lock:
            return self._allocate(kind, amount, owner, node_id)

    def _allocate(self, kind: str, amount: float, owner: str, node_id: str | None) -> dict[str, Any]:
        lease = self._lease_now()
        limits = self.limits
        try:
            # The agents, the kind's limits and usage: one round trip, not queued behind the lease's write.
            read = self._read(kind)
            members = _registered(self.etcd, read.nodes)
            if kind in ONE_ASSET_KINDS:
                candidates = _named(members, node_id) if node_id is not None else random.sample(members, len(members))
                asset = None
            else:
                member, asset = pick_node(self.client, members, kind, amount, node_id)
                candidates = [member]
            first = candidates[0]

            def reserve() -> tuple[str, dict[str, Any], int]:
                return limits.reserve_at(
                    kind, amount, owner, lease.id, first.node_id, first.url, read=read, holds=node_holds(self.client)
                )

            try:
                allocation_id, record, revision = reserve()
            except EtcdError as exc:
                if LEASE_NOT_FOUND not in str(exc):
                    raise
                if lease.granted:  # a shared lease etcd no longer has (revoked by hand, etcd's data lost): a new one
                    self._lease = self._next_lease = None
                    lease = self._lease_now()
                lease.wait()  # etcd has not applied the grant yet: wait for it, then reserve (nothing was written)
                allocation_id, record, revision = reserve()
        except BaseException as exc:
            self._drop_lease(lease, exc)
            raise
        try:
            lease.wait()
        except EtcdError:
            # Not granted (an id that exists: a 2**-62 chance, or etcd failed): the record must not live on that lease.
            self._lease = None
            limits.undo(allocation_id, kind)
            raise
        body: dict[str, Any] = {"kind": kind, "amount": amount, "owner": owner, "id": allocation_id}
        if asset is not None:
            body["asset"] = asset
        member, record, revision = _grant(
            limits, self.client, candidates, body, record, revision, lease.id, keep=self._kept
        )
        granted = {**record, "state": "granted"}
        # The lease is not revoked: the confirmed record no longer uses it, and etcd ends it within PENDING_TTL_S.
        # Revoking would be one more raft write (an fsync) on every allocation's path.
        if time.monotonic() - lease.started < PENDING_TTL_S - ACK_MARGIN_S:
            try:
                outcome = limits.confirm_start(allocation_id, record, revision)  # sent: etcd applies it meanwhile
            except EtcdError as exc:
                _failed([_unconfirmed(allocation_id, exc)])
            else:
                with _CONFIRM_LOCK:
                    _CONFIRMING.append(_Confirmation(limits, allocation_id, str(record["kind"]), outcome))
                _wait_at_exit()
            return granted
        # Late: the lease may have ended, and a repair may have asked the node before it granted and removed the entry.
        if not limits.confirm(allocation_id, record, revision) and not limits.adopt(allocation_id, kind):
            # The reservation ended (its lease) while the node granted: give the node's grant back.
            with contextlib.suppress(HttpFailure):
                self.client.send_sync(f"{member.url}/v1/allocations/{allocation_id}", "DELETE")
            raise BackendError("the reservation expired before the node's grant was confirmed; nothing was allocated")
        return granted

    def close(self) -> None:
        """Close the connections kept to the agents (the etcd client is the caller's)."""
        with self._lock:
            kept, self._kept = self._kept, {} if self.reuse else None
        for connection in (kept or {}).values():
            connection.close()

    def __enter__(self) -> Allocator:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def release(self, allocation_id: str) -> dict[str, Any]:
        """release() through this allocator's etcd client (its next reservation starts from what the release wrote)."""
        with self._lock:
            return _release(self.limits, self.client, allocation_id, self._kept)

    def _read(self, kind: str) -> Prefetch:
        latest = self.limits.latest.get(kind)
        if self.reuse and latest is not None and time.monotonic() - latest.read_at < MEMBERS_MAX_AGE_S:
            latest.serializable = True  # as of some time ago: a refusal on it is checked against a fresh read
            return latest
        return self.limits.read_for(kind, serializable=True)

    def _lease_now(self) -> _Lease:
        """The lease the next reservation names: a new one for each allocation without reuse; with reuse, the current
        one until LEASE_USE_S, then the one granted ahead of it (asked for in the last eighth of the current one's
        use: each is used for 7/8 of LEASE_USE_S at least)."""
        if not self.reuse:
            return _Lease(self.etcd)
        lease = self._lease
        if lease is None or time.monotonic() - lease.started >= LEASE_USE_S:
            lease, self._next_lease = self._next_lease or _Lease(self.etcd), None
            if time.monotonic() - lease.started >= LEASE_USE_S:  # granted ahead, then left unused too long
                lease = _Lease(self.etcd)
            self._lease = lease
        elif self._next_lease is None and time.monotonic() - lease.started >= LEASE_USE_S * 7 / 8:
            self._next_lease = _Lease(self.etcd)  # its answer is read when it is taken into use
        return lease

    def _drop_lease(self, lease: _Lease, exc: BaseException) -> None:
        """After a failure before any node was asked: a lease of its own is revoked (its pending record, if any, goes
        with it); a shared one stays for the records it carries, unless etcd said it does not have it."""
        if not self.reuse:
            _revoke_ours(self.etcd, lease)
        elif isinstance(exc, EtcdError) and (LEASE_NOT_FOUND in str(exc) or not lease.granted):
            self._lease = None


def _revoke_ours(etcd: Etcd, lease: _Lease) -> None:
    """Revoke the lease if the grant was ours (never one that existed before: someone else's)."""
    with contextlib.suppress(EtcdError):
        lease.wait()
        etcd.revoke(lease.id)


class _Confirmation:
    """A confirmation sent and not yet read."""

    __slots__ = ("allocation_id", "kind", "limits", "outcome")

    def __init__(self, limits: ClusterLimits, allocation_id: str, kind: str, outcome: Callable[[], bool]) -> None:
        self.limits, self.allocation_id, self.kind, self.outcome = limits, allocation_id, kind, outcome

    def answered(self) -> bool:
        ready = getattr(self.outcome, "ready", None)
        return ready is None or bool(ready())

    def finish(self) -> str | None:
        """None when the record is granted (or the allocation was released meanwhile); else what went wrong."""
        try:
            if not self.outcome():
                self.limits.adopt(self.allocation_id, self.kind)  # False: released meanwhile, nothing to confirm
        except EtcdError as exc:
            return _unconfirmed(self.allocation_id, exc)
        return None


# Confirmations sent and not yet read, and what could not be confirmed: shared by every allocator of the process
# (wait_confirmed() reads them all), so changed under _CONFIRM_LOCK.
_CONFIRMING: list[_Confirmation] = []
_CONFIRM_FAILURES: list[str] = []
_CONFIRM_LOCK = threading.Lock()
_AT_EXIT: list[bool] = []


def _unconfirmed(allocation_id: str, exc: Exception) -> str:
    return (
        f"allocation {allocation_id} is granted but etcd did not record it as confirmed ({exc}); its reservation "
        "holds, and 'hypermesh cluster allocations' confirms it from the node's ledger"
    )


def _settle_answered() -> None:
    """Finish the confirmations etcd has answered (their connections go back to the pool), without waiting for any."""
    with _CONFIRM_LOCK:
        answered = [c for c in _CONFIRMING if c.answered()]
        _CONFIRMING[:] = [c for c in _CONFIRMING if c not in answered]
    _failed(problem for c in answered if (problem := c.finish()) is not None)


def _failed(problems: Iterable[str]) -> None:
    found = list(problems)
    if found:
        with _CONFIRM_LOCK:
            _CONFIRM_FAILURES.extend(found)


def wait_confirmed() -> list[str]:
    """Read the answers to the confirmations allocate() sent, settling any that did not hold (limits.adopt());
    returns what could not be confirmed (each granted, reserved, and left to repair). Runs at interpreter exit too:
    a process that ends normally has read them."""
    with _CONFIRM_LOCK:
        pending, _CONFIRMING[:] = list(_CONFIRMING), []
    failures = [problem for c in pending if (problem := c.finish()) is not None]
    with _CONFIRM_LOCK:
        failures, _CONFIRM_FAILURES[:] = list(_CONFIRM_FAILURES) + failures, []
    return failures


def _wait_at_exit() -> None:
    if not _AT_EXIT:
        _AT_EXIT.append(True)
        atexit.register(_report_at_exit)


def _report_at_exit() -> None:
    for problem in wait_confirmed():
        logging.getLogger("hypermesh.cluster").warning("%s", problem)


def node_holds(client: Client) -> Holds:
    """What repair asks a node: does its ledger hold this allocation id (None: the node could not be asked)."""

    def holds(node_url: str, allocation_id: str) -> bool | None:
        ((answer,),) = collect(client, [Node(node_url, node_url)], ("/v1/allocations",))
        data = answer.data
        if not answer.ok:
            return None
        grants = data.get("allocations") if isinstance(data, dict) else data
        if not isinstance(grants, list):
            return None
        return any(isinstance(g, dict) and g.get("id") == allocation_id for g in grants)

    return holds


def _grant(
    limits: ClusterLimits,
    client: Client,
    candidates: list[Member],
    body: dict[str, Any],
    record: dict[str, Any],
    revision: int,
    lease: int,
    keep: dict[tuple[str, int, bool], Connection] | None = None,
) -> tuple[Member, dict[str, Any], int]:
    """POST the reserved allocation to each candidate in turn until one grants it: (that node, the record naming
    it, the record's revision). The reservation names the node asked, and is moved before the next one is asked.
    It is undone when no node grants. Only a node that refused (409) or that nothing listens on (connection
    refused: the request never reached it) hands over to the next: after a timeout or a broken answer the node may
    hold the grant, so a second node must not grant it too, and the reservation stays for repair to settle."""
    allocation_id, kind = str(body["id"]), str(body["kind"])
    refusals: list[str] = []
    for n, member in enumerate(candidates):
        if n:
            moved = limits.move(allocation_id, record, revision, lease, member.node_id, member.url)
            if moved is None:
                raise BackendError("the reservation expired while nodes refused it; nothing was allocated")
            record, revision = moved
        try:
            # While the node works: read the confirmations etcd has answered (their connections go back to the pool).
            status, answer = client.send_sync(
                f"{member.url}/v1/allocations", "POST", body, keep=keep, while_waiting=_settle_answered
            )
        except HttpFailure as failure:
            where = f"node {member.node_id} ({member.url})"
            if failure.sent:
                # The request may have reached the node (no answer in time, a connection broken after it was
                # sent): the node may hold the grant, so the reservation stays, naming the node. Its lease ends
                # and repair asks the node (limits.py): granted, it is recorded; not, the room comes back.
                raise BackendError(
                    f"{where} did not answer: {failure.kind}: {failure.message}; allocation {allocation_id} may "
                    f"have been granted there, so it stays reserved: 'hypermesh cluster allocations' asks the node "
                    f"and settles it once {PENDING_TTL_S:g} s have passed"
                ) from None
            if failure.kind == "refused" and len(candidates) > 1:
                refusals.append(f"{member.node_id}: {failure.kind}: {failure.message}")
                continue
            limits.undo(allocation_id, kind)
            raise BackendError(
                f"{where} could not be reached: {failure.kind}: {failure.message}; nothing was allocated"
            ) from None
        if status in (200, 201):
            return member, record, revision
        if status == 409:
            refusals.append(f"{member.node_id}: {_error(answer)}")
            continue
        limits.undo(allocation_id, kind)
        reason = _error(answer)
        if status == 422:
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


def _registered(etcd: Etcd, kvs: list[KeyValue]) -> list[Member]:
    members = [m for kv in kvs if (m := Member.from_json(kv.key.removeprefix(NODES_PREFIX), kv.value)) is not None]
    if not members:
        raise BackendError(f"no agents are registered in etcd at {etcd.url}; start them with --etcd {etcd.url}")
    return sorted(members, key=lambda m: m.node_id)


def release(etcd: Etcd, client: Client, allocation_id: str) -> dict[str, Any]:
    """Release a cluster allocation: the node's grant, then the reservation. Returns its record."""
    return _release(ClusterLimits(etcd), client, allocation_id)


def _release(
    limits: ClusterLimits,
    client: Client,
    allocation_id: str,
    keep: dict[tuple[str, int, bool], Connection] | None = None,
) -> dict[str, Any]:
    try:
        record = limits.allocation(allocation_id)
    except NotFound:
        # Acknowledged, and its allocator died before confirming: the record went with the lease, the usage entry
        # names the node. Settle it first (repair), then release what it became.
        if allocation_id not in limits.repair(node_holds(client)):
            raise
        record = limits.allocation(allocation_id)
    try:
        status, answer = client.send_sync(f"{record['node_url']}/v1/allocations/{allocation_id}", "DELETE", keep=keep)
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
