"""Membership through etcd: an agent registers under a key bound to a lease; a cluster command lists the keys.

An agent started with ``--etcd`` puts ``/hypermesh/nodes/<node id>`` = {url, labels, version, interval_s, ...} with a
lease of ``ttl_s`` (default 10 s) and renews it every third of that. A stopped agent revokes its lease, so it leaves
at once; a killed or partitioned one leaves when the lease ends, within ``ttl_s``. If etcd forgets the lease (it was
down for longer than the TTL, or restored from a snapshot) the next renewal sees TTL 0 and registers afresh. New
labels that could not be written (etcd unreachable at that moment) are written by the next renewal, under the same
lease: the lease itself was not lost.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse

from hypermesh.cluster.etcd import Etcd, EtcdError
from hypermesh.errors import InvalidInput

__all__ = [
    "DEFAULT_TTL_S",
    "NODES_PREFIX",
    "Member",
    "Registration",
    "check_agent_url",
    "check_node_id",
    "discover",
]

NODES_PREFIX = "/hypermesh/nodes/"
DEFAULT_TTL_S = 10
# A node id is a key segment and a label value: what hostnames and Kubernetes node names use.
NODE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")
MAX_NODE_ID = 128

log = logging.getLogger("hypermesh.agent")


def check_node_id(node_id: str, where: str = "--node-id") -> str:
    if not node_id or len(node_id) > MAX_NODE_ID or not set(node_id) <= NODE_ID_CHARS:
        raise InvalidInput(
            f"{where}: {node_id[:40]!r} is not a node id; use 1-{MAX_NODE_ID} letters, digits, '-', '.' or '_'"
        )
    return node_id


def check_agent_url(url: str, where: str = "--node") -> str:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path not in ("", "/"):
        raise InvalidInput(f"{where}: {url!r} is not an agent URL; give one like http://10.0.0.5:9137")
    try:
        parsed.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        raise InvalidInput(f"{where}: {url!r} has a bad port; give one like http://10.0.0.5:9137") from None
    return url.rstrip("/")


class Member:
    """One registered agent, as discovery reads it."""

    __slots__ = ("interval_s", "labels", "node_id", "registered_at", "url", "version")

    def __init__(
        self, node_id: str, url: str, version: str, interval_s: float, labels: dict[str, str], registered_at: float
    ) -> None:
        self.node_id, self.url, self.version = node_id, url, version
        self.interval_s, self.labels, self.registered_at = interval_s, labels, registered_at

    def to_dict(self) -> dict[str, object]:
        return {
            "node_id": self.node_id,
            "url": self.url,
            "version": self.version,
            "interval_s": self.interval_s,
            "labels": dict(self.labels),
            "registered_at": self.registered_at,
        }

    @classmethod
    def from_json(cls, node_id: str, raw: bytes) -> Member | None:
        try:
            data = json.loads(raw)
            return cls(
                node_id,
                str(data["url"]),
                str(data.get("version", "")),
                float(data.get("interval_s", 1.0)),
                {str(k): str(v) for k, v in dict(data.get("labels", {})).items()},
                float(data.get("registered_at", 0.0)),
            )
        except (ValueError, KeyError, TypeError):
            return None  # not one of ours (or a newer format): discovery lists what it can read


def discover(etcd: Etcd) -> list[Member]:
    """Every agent registered now, by node id."""
    kvs, _ = etcd.get_prefix(NODES_PREFIX)
    members = []
    for kv in kvs:
        member = Member.from_json(kv.key.removeprefix(NODES_PREFIX), kv.value)
        if member is not None:
            members.append(member)
    return sorted(members, key=lambda m: m.node_id)


class Registration:
    """Keeps this agent registered while it runs: a daemon thread granting, writing and renewing its lease."""

    def __init__(self, etcd: Etcd, member: Member, ttl_s: int = DEFAULT_TTL_S) -> None:
        self.etcd = etcd
        self.member = member
        self.ttl_s = ttl_s
        self.key = NODES_PREFIX + member.node_id
        self.lease = 0
        # New labels or interval that update() could not write; the lease thread writes them under the same lease.
        self.unwritten = False
        self.registered = threading.Event()
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hypermesh-etcd", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Leave the cluster now (revoke the lease) rather than when the lease would end."""
        self._stop.set()
        self._thread.join(timeout=self.etcd.timeout_s + 1.0)
        if self.lease:
            try:
                self.etcd.revoke(self.lease)
            except EtcdError as exc:
                log.warning("could not leave the cluster at once (%s); the lease ends in %d s", exc, self.ttl_s)
            self.lease = 0

    def update(self, labels: dict[str, str], interval_s: float) -> None:
        """New labels or interval (a live config change): written under the current lease now."""
        self.member.labels, self.member.interval_s = dict(labels), interval_s
        if self.lease:
            try:
                self._write()
            except EtcdError as exc:
                log.warning("cluster membership: new labels not written yet (%s); the next renewal retries", exc)
                self.unwritten = True

    def _write(self) -> None:
        self.etcd.put(self.key, json.dumps(self.member.to_dict()).encode(), lease=self.lease)

    def _register(self) -> None:
        self.lease = self.etcd.grant(self.ttl_s)
        self.member.registered_at = time.time()
        self.unwritten = False  # the write below carries the newest labels
        self._write()
        self.registered.set()

    def _run(self) -> None:
        # Renewed at a third of the TTL, as etcd's own clients do: two renewals may fail before the key goes.
        period = self.ttl_s / 3.0
        while not self._stop.is_set():
            try:
                if not self.lease:
                    self._register()
                elif self.etcd.keepalive(self.lease) == 0:
                    log.warning("etcd forgot this agent's lease; registering again as %s", self.member.node_id)
                    self._register()
                elif self.unwritten:
                    self.unwritten = False  # before the write: an update() racing with it sets it again
                    try:
                        self._write()
                    except EtcdError:
                        self.unwritten = True
                        raise
                    log.info("cluster membership: new labels written (the earlier attempt had failed)")
                if self.last_error is not None:
                    log.info("registered in etcd again as %s", self.member.node_id)
                self.last_error = None
            except EtcdError as exc:
                if str(exc) != self.last_error:  # once per change, not every few seconds while etcd is down
                    log.warning("cluster membership: %s; retrying every %.1f s", exc, period)
                self.last_error = str(exc)
                self.registered.clear()
            self._stop.wait(period)
