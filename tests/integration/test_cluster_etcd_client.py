"""The etcd client's kept-alive connections and one-round-trip reads, against a real etcd on 127.0.0.1.

Every figure our client reads is checked against etcd's gateway read with urllib (a client independent of ours).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import urllib.request

import pytest

from hypermesh.cluster.etcd import LEASE_NOT_FOUND, Etcd, EtcdError, EtcdUnavailable, compare_mod_revision, request_put
from tests.integration.cluster_support import Etcd as EtcdServer


def urllib_range(url: str, key: str) -> dict:
    body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
    with urllib.request.urlopen(urllib.request.Request(url + "/v3/kv/range", data=body), timeout=10) as answer:
        return json.loads(answer.read())


def test_reads_writes_and_a_restarted_etcd_on_kept_alive_connections(tmp_path):
    server = EtcdServer(tmp_path).start()
    try:
        etcd = Etcd(server.url)
        for i in range(3):
            etcd.put(f"/t/a/{i}", f"v{i}".encode())
        etcd.put("/t/b/0", b"w")
        done, revision = etcd.txn_at([compare_mod_revision("/t/c", 0)], [request_put("/t/c", b"x")], [])
        assert done
        # The transaction's revision is the written key's mod revision, as etcd itself reports it.
        assert int(urllib_range(server.url, "/t/c")["kvs"][0]["mod_revision"]) == revision
        (a, b, none), read_at = etcd.read_many(["/t/a/", "/t/b/", "/t/none/"])
        assert [(kv.key, kv.value) for kv in a] == [(f"/t/a/{i}", f"v{i}".encode()) for i in range(3)]
        assert [kv.key for kv in b] == ["/t/b/0"] and none == []
        assert read_at == revision == etcd.get_prefix("/t/")[1]
        assert len(etcd._idle) == 1  # one connection served every call in turn

        server.stop()  # the kept-alive connection dies with it
        with pytest.raises(EtcdUnavailable) as down:
            etcd.get("/t/c")
        assert server.url in str(down.value) and "\n" not in str(down.value)
        server.start()
        kv = etcd.get("/t/c")  # a fresh connection after the dead one
        assert kv is not None and kv.value == b"x" and kv.mod_revision == revision
        server.stop()
        server.start()  # etcd restarted while our connection sat idle: the call is asked again, not failed
        assert len(etcd._idle) == 1
        kv = etcd.get("/t/c")
        assert kv is not None and kv.value == b"x"
        etcd.close()
    finally:
        server.stop()


def test_requests_started_together_are_each_answered_on_their_own_connection(tmp_path):
    server = EtcdServer(tmp_path).start()
    try:
        etcd = Etcd(server.url)
        lease_answer = etcd.grant_start(30)  # sent; not read yet
        written = etcd.txn_start([compare_mod_revision("/s/k", 0)], [request_put("/s/k", b"v")], [])
        (read,), _ = etcd.read_many(["/s/"], serializable=True)  # a third connection, while two are in flight
        lease = lease_answer()
        done, revision = written()
        assert done and lease > 0
        # etcd applied the write whether or not its answer had been read; urllib sees it at that revision.
        kv = urllib_range(server.url, "/s/k")["kvs"][0]
        assert base64.b64decode(kv["value"]) == b"v" and int(kv["mod_revision"]) == revision
        # etcd knows the lease granted while the other requests were served (TTL as asked, minus the time since).
        body = json.dumps({"ID": str(lease)}).encode()
        with urllib.request.urlopen(urllib.request.Request(server.url + "/v3/lease/timetolive", data=body)) as a:
            assert 0 < int(json.loads(a.read())["TTL"]) <= 30
        assert [kv.key for kv in read] in ([], ["/s/k"])  # serializable: at most as new as the store
        assert len(etcd._idle) == 3  # each connection went back to the pool once its answer was read
        etcd.close()
    finally:
        server.stop()


def test_a_write_naming_a_lease_not_yet_granted_is_refused_whole(tmp_path):
    """allocate() names its own lease id in the reservation before reading the grant's answer: a transaction etcd
    applies before the grant must be refused with LEASE_NOT_FOUND and write nothing (then it is sent again)."""
    server = EtcdServer(tmp_path).start()
    try:
        etcd = Etcd(server.url)
        refused = 0
        for i in range(60):
            lease = 1_000_000 + i
            granted = etcd.grant_start(30, lease)
            txn = (
                [compare_mod_revision(f"/l/{i}/a", 0)],
                [request_put(f"/l/{i}/a", b"1"), request_put(f"/l/{i}/b", b"2", lease)],
            )
            try:
                assert etcd.txn(*txn, [])
            except EtcdError as exc:
                assert LEASE_NOT_FOUND in str(exc)
                refused += 1
                assert "kvs" not in urllib_range(server.url, f"/l/{i}/a")  # nothing of it was written
                assert granted() == lease
                assert etcd.txn(*txn, [])  # the same transaction, once the grant is applied
            assert granted() == lease == granted()  # read once; asked again, the same answer
            kv = urllib_range(server.url, f"/l/{i}/b")["kvs"][0]
            assert int(kv["lease"]) == lease
        with pytest.raises(EtcdError, match="lease already exists"):
            etcd.grant_start(30, 1_000_000)()
        etcd.close()
        print(f"{refused} of 60 transactions reached etcd before their lease")
    finally:
        server.stop()


def test_a_started_request_is_ready_only_once_etcd_has_answered(tmp_path):
    """Reply.ready() (an Allocator settles the confirmations that are answered without waiting for any): while etcd
    is stopped (SIGSTOP) nothing is ready; once it runs again, ready() turns true and reading does not wait."""
    server = EtcdServer(tmp_path).start()
    try:
        etcd = Etcd(server.url)
        etcd.put("/r/warm", b"1")  # a kept-alive connection first: the request below is written without waiting
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            written = etcd.txn_start([compare_mod_revision("/r/k", 0)], [request_put("/r/k", b"v")], [])
            time.sleep(0.5)
            assert not written.ready()  # etcd cannot have answered
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 10
        while not written.ready():
            assert time.monotonic() < deadline, "etcd did not answer within 10 s of SIGCONT"
            time.sleep(0.01)
        done, revision = written()
        assert done and int(urllib_range(server.url, "/r/k")["kvs"][0]["mod_revision"]) == revision
        assert written.ready() and written() == (True, revision)  # read once; the same answer again
        etcd.close()
    finally:
        server.stop()
