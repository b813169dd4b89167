"""Cluster-wide limits through a real etcd, granted on real agents in their own network namespaces.

The agents take writes with basic auth (they are not on the allocators' loopback); allocators run in the hub
namespace as separate processes, through the library, as `hypermesh cluster allocate` does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.integration.cluster_support import Etcd, Net, agents_in, cluster, registered, wait_until
from tests.integration.test_agent_security import HASH, PASSWORD

pytestmark = [pytest.mark.netns, pytest.mark.root, pytest.mark.slow]

ALLOCATOR = """
import json, sys
from hypermesh.cluster.allocate import Allocator, allocate, wait_confirmed
from hypermesh.cluster.etcd import Etcd
from hypermesh.cluster.fanout import Client
from hypermesh.cluster.limits import LimitExceeded
etcd_url, owner, count, password, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
client = Client(timeout_s=20.0, auth=("hm", password))
# "once": each allocation as one CLI call makes it; "reuse": one Allocator for all (its last read, a shared lease)
allocator = Allocator(Etcd(etcd_url, timeout_s=20.0), client) if mode == "reuse" else None
granted = refused = 0
for _ in range(count):
    try:
        if allocator is None:
            record = allocate(Etcd(etcd_url, timeout_s=20.0), client, "cpu", 0.1, owner)
        else:
            record = allocator.allocate("cpu", 0.1, owner)
        print(json.dumps({"id": record["id"], "node": record["node_id"]}), flush=True)
        granted += 1
    except LimitExceeded:
        refused += 1
print(json.dumps({"granted": granted, "refused": refused, "unconfirmed": wait_confirmed()}), flush=True)
"""


def node_ledgers(net: Net, count: int) -> list[dict]:
    """Every node's own ledger, read with urllib in the hub namespace (not through our client)."""
    code = (
        "import base64, json, sys, urllib.request\n"
        "token = base64.b64encode(b'hm:' + sys.argv[2].encode()).decode()\n"
        "r = urllib.request.Request(sys.argv[1], headers={'authorization': 'Basic ' + token})\n"
        "print(urllib.request.urlopen(r, timeout=20).read().decode())\n"
    )
    out = []
    for i in range(count):
        url = f"http://{net.address(i)}:9137/v1/allocations"
        run = subprocess.run(
            [*net.prefix(), sys.executable, "-c", code, url, PASSWORD], capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        data = json.loads(run.stdout)
        out += data["allocations"] if isinstance(data, dict) else data
    return out


@pytest.fixture
def auth_config(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text(f'etcd_ttl = 5\n\n[basic_auth_users]\nhm = "{HASH}"\n')
    return config


def limit_list(hub: list[str], etcd: Etcd) -> dict:
    out = cluster(hub, "limit", "list", "--etcd", etcd.url, "--json")
    assert out.returncode == 0, out.stderr
    return {(r["kind"], r["owner"]): r for r in json.loads(out.stdout)}


def test_five_concurrent_allocators_never_exceed_the_limit_and_match_the_ledgers(tmp_path, auth_config):
    with Net(3) as net:
        etcd = Etcd(tmp_path, net).start()
        try:
            with agents_in(net, etcd, 3, "--config", str(auth_config), "--state-dir", str(tmp_path / "state-{i}")):
                hub = net.prefix()
                wait_until(lambda: len(registered(hub, etcd.url)) == 3, 20, "3 agents registered")
                assert cluster(hub, "limit", "set", "cpu", "4", "--etcd", etcd.url).returncode == 0
                # Allocators of both kinds race: the reusing ones start from reads the others' writes made stale.
                allocators = [
                    subprocess.Popen(
                        [
                            *hub,
                            sys.executable,
                            "-c",
                            ALLOCATOR,
                            etcd.url,
                            f"p{k}",
                            "40",
                            PASSWORD,
                            "reuse" if k % 2 else "once",
                        ],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                    for k in range(5)
                ]
                outputs = [p.communicate(timeout=600) for p in allocators]
                ids, totals = [], {"granted": 0, "refused": 0}
                for (stdout, stderr), proc in zip(outputs, allocators, strict=True):
                    assert proc.returncode == 0, stderr
                    lines = [json.loads(line) for line in stdout.splitlines()]
                    ids += [line["id"] for line in lines if "id" in line]
                    for key in totals:
                        totals[key] += lines[-1][key]
                    assert lines[-1]["unconfirmed"] == []
                # 200 asked for 0.1 core each against a limit of 4 cores: exactly 40 granted, the rest refused.
                assert totals == {"granted": 40, "refused": 160}
                assert len(set(ids)) == 40
                ledgers = node_ledgers(net, 3)
                assert sorted(a["id"] for a in ledgers) == sorted(ids)  # every grant is on a node, nothing else is
                assert sum(a["amount"] for a in ledgers) == pytest.approx(4.0)
                limit = limit_list(hub, etcd)[("cpu", None)]
                assert limit["used"] == pytest.approx(4.0) and limit["left"] == pytest.approx(0.0)
                listed = json.loads(cluster(hub, "allocations", "--etcd", etcd.url, "--json").stdout)
                assert sorted(a["id"] for a in listed["allocations"]) == sorted(ids)
                assert {a["state"] for a in listed["allocations"]} == {"granted"}

                # A release gives the room back, on the node and in the cluster.
                (tmp_path / "pw").write_text(PASSWORD)
                auth = ["--user", "hm", "--password-file", str(tmp_path / "pw")]
                released = cluster(hub, "release", ids[0], "--etcd", etcd.url, *auth)
                assert released.returncode == 0, released.stderr
                assert ids[0] not in {a["id"] for a in node_ledgers(net, 3)}
                assert limit_list(hub, etcd)[("cpu", None)]["left"] == pytest.approx(0.1)
        finally:
            etcd.stop()


KILLED_BETWEEN_STEPS = """
import os, signal, sys
from hypermesh.cluster.etcd import Etcd
from hypermesh.cluster.limits import ClusterLimits
etcd = Etcd(sys.argv[1])
lease = etcd.grant(2)
allocation_id = ClusterLimits(etcd).reserve("cpu", 1.0, "crashy", "node-0", sys.argv[2], lease)
print(allocation_id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # after the reservation, before the node's grant
"""


def killed_itself(hub: list[str], script: str, *args: str) -> str:
    """Run an allocator script in the hub namespace that SIGKILLs itself at a chosen step: what it printed."""
    crash = subprocess.run([*hub, sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60)
    assert crash.returncode == -signal.SIGKILL, crash.stderr
    return crash.stdout


@contextlib.contextmanager
def _one_node_with_auth(tmp_path, auth_config, cpu_limit: str) -> Iterator[tuple[Net, Etcd, list[str], list[str]]]:
    """etcd and one agent with basic auth in a namespace, a cluster-wide cpu limit set: (net, etcd, the namespace's
    command prefix, the credential options of a cluster command)."""
    password = tmp_path / "pw"
    password.write_text(PASSWORD)
    with Net(1) as net:
        etcd = Etcd(tmp_path, net).start()
        try:
            with agents_in(net, etcd, 1, "--config", str(auth_config), "--state-dir", str(tmp_path / "state")):
                hub = net.prefix()
                wait_until(lambda: registered(hub, etcd.url) == ["node-0"], 20, "registered")
                assert cluster(hub, "limit", "set", "cpu", cpu_limit, "--etcd", etcd.url).returncode == 0
                yield net, etcd, hub, ["--user", "hm", "--password-file", str(password)]
        finally:
            etcd.stop()


def test_an_allocator_killed_between_the_steps_is_repaired_and_etcd_down_fails_closed(tmp_path, auth_config):
    with _one_node_with_auth(tmp_path, auth_config, "1.5") as (net, etcd, hub, auth):
        abandoned = killed_itself(hub, KILLED_BETWEEN_STEPS, etcd.url, f"http://{net.address(0)}:9137").strip()
        assert limit_list(hub, etcd)[("cpu", None)]["used"] == pytest.approx(1.0)  # held while its lease lasts
        time.sleep(2 + 1.5)  # the 2 s lease ends; etcd deletes the pending record
        # The node is asked whether it granted it (it did not): the entry goes.
        listed = json.loads(cluster(hub, "allocations", "--etcd", etcd.url, "--json", *auth).stdout)
        assert listed["repaired"] == [abandoned] and listed["allocations"] == []
        assert limit_list(hub, etcd)[("cpu", None)]["used"] == pytest.approx(0.0)
        assert node_ledgers(net, 1) == []  # the node never granted it

        granted = cluster(hub, "allocate", "cpu", "1", "--owner", "a", "--etcd", etcd.url, *auth)
        assert granted.returncode == 0, granted.stderr
        over = cluster(hub, "allocate", "cpu", "1", "--owner", "b", "--etcd", etcd.url, *auth)
        assert over.returncode == 2 and "0.5 of 1.5 left" in over.stderr and over.stderr.count("\n") == 1

        etcd.stop()
        down = cluster(hub, "allocate", "cpu", "0.25", "--owner", "c", "--etcd", etcd.url, *auth)
        assert down.returncode == 1 and "unreachable" in down.stderr and down.stderr.count("\n") == 1
        assert len(node_ledgers(net, 1)) == 1  # fail closed: nothing granted without etcd
        etcd.start()  # the same data: limits and usage as they were
        assert limit_list(hub, etcd)[("cpu", None)]["used"] == pytest.approx(1.0)
        again = cluster(hub, "allocate", "cpu", "0.5", "--owner", "c", "--etcd", etcd.url, *auth)
        assert again.returncode == 0, again.stderr
        assert sum(a["amount"] for a in node_ledgers(net, 1)) == pytest.approx(1.5)

        # The node's own room: 3 cores is more than any node has, whatever the limit.
        assert cluster(hub, "limit", "set", "cpu", "100", "--etcd", etcd.url).returncode == 0
        big = cluster(hub, "allocate", "cpu", "3", "--owner", "d", "--etcd", etcd.url, *auth)
        assert big.returncode == 2 and "allocatable" in big.stderr
        assert limit_list(hub, etcd)[("cpu", None)]["used"] == pytest.approx(1.5)  # nothing reserved


ACKNOWLEDGED_THEN_KILLED = """
import json, os, signal, sys
import hypermesh.cluster.allocate as allocation
from hypermesh.cluster.etcd import Etcd
from hypermesh.cluster.fanout import Client
from hypermesh.cluster.limits import ClusterLimits
# A 2 s lease (acknowledged while 1 s of it is left) so the test waits seconds, not PENDING_TTL_S.
allocation.PENDING_TTL_S, allocation.ACK_MARGIN_S = 2, 1.0
# Its confirmation never reaches etcd (the worst case of a process killed while the request is on its way).
ClusterLimits.confirm_start = lambda *args, **kwargs: (lambda: True)
record = allocation.allocate(Etcd(sys.argv[1]), Client(timeout_s=20.0, auth=("hm", sys.argv[2])), "cpu", 0.5, "acked")
print(json.dumps(record), flush=True)  # acknowledged: the node's ledger holds it
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_an_allocation_acknowledged_before_its_confirmation_survives_its_allocator(tmp_path, auth_config):
    with _one_node_with_auth(tmp_path, auth_config, "1") as (net, etcd, hub, auth):
        acked = json.loads(killed_itself(hub, ACKNOWLEDGED_THEN_KILLED, etcd.url, PASSWORD))
        assert acked["state"] == "granted" and acked["node_id"] == "node-0"
        assert [a["id"] for a in node_ledgers(net, 1)] == [acked["id"]]
        time.sleep(2 + 1.5)  # the lease ends: etcd deletes the pending record; the usage entry stays
        assert limit_list(hub, etcd)[("cpu", None)]["used"] == pytest.approx(0.5)

        # Nobody can tell without asking the node: the reservation is kept, never dropped.
        blind = cluster(hub, "allocations", "--etcd", etcd.url, "--json")
        listed = json.loads(blind.stdout)
        assert listed["repaired"] == [] and listed["unverified"] == [acked["id"]]
        assert limit_list(hub, etcd)[("cpu", None)]["used"] == pytest.approx(0.5)
        over = cluster(hub, "allocate", "cpu", "0.75", "--owner", "b", "--etcd", etcd.url, *auth)
        assert over.returncode == 2 and "0.5 of 1 left" in over.stderr  # still counted: never over-committed

        # Asked, the node's ledger holds it: the record is written granted, as it was acknowledged.
        listed = json.loads(cluster(hub, "allocations", "--etcd", etcd.url, "--json", *auth).stdout)
        assert listed["repaired"] == [acked["id"]] and listed["unverified"] == []
        (record,) = listed["allocations"]
        assert (record["id"], record["state"], record["node_id"]) == (acked["id"], "granted", "node-0")
        assert record["amount"] == 0.5 and record["owner"] == "acked"
        assert limit_list(hub, etcd)[("cpu", None)]["used"] == pytest.approx(0.5)

        released = cluster(hub, "release", acked["id"], "--etcd", etcd.url, *auth)
        assert released.returncode == 0, released.stderr
        assert node_ledgers(net, 1) == []
        assert limit_list(hub, etcd)[("cpu", None)]["used"] == pytest.approx(0.0)


REUSING_ALLOCATOR = """
import json, sys, time
import hypermesh.cluster.allocate as allocation
from hypermesh.cluster.etcd import Etcd
from hypermesh.cluster.fanout import Client
from hypermesh.cluster.limits import ClusterLimits, LimitExceeded
# Leases of 2 s, each used for 0.4 s: a run of 1.5 s goes through several.
allocation.PENDING_TTL_S, allocation.ACK_MARGIN_S, allocation.LEASE_USE_S = 2, 0.5, 0.4
calls = {"grant": 0, "read": 0}
def counted(name, real):
    def call(*args, **kwargs):
        calls[name] += 1
        return real(*args, **kwargs)
    return call
Etcd.grant_start = counted("grant", Etcd.grant_start)
ClusterLimits.read_for = counted("read", ClusterLimits.read_for)
etcd_url, password = sys.argv[1], sys.argv[2]
client = Client(timeout_s=20.0, auth=("hm", password))
allocator = allocation.Allocator(Etcd(etcd_url), client)
other = ClusterLimits(Etcd(etcd_url))  # another client, writing behind the allocator's back
ids, refused, started = [], [], time.monotonic()
for i in range(30):
    if i == 10:  # another allocator takes 0.25: the reusing one's last read is stale
        ids.append(allocation.allocate(Etcd(etcd_url), client, "cpu", 0.25, "other")["id"])
    if i == 20:
        other.set_limit("cpu", 0.25 + 0.05 * (len(ids) - 1))  # exactly what is held: the next one must be refused
    if i == 21:
        other.set_limit("cpu", 100)  # room again: the allocator's last read (a refusal) is stale
    try:
        ids.append(allocator.allocate("cpu", 0.05, "reuser")["id"])
    except LimitExceeded as exc:
        refused.append((i, str(exc)))
    time.sleep(0.05)
print(json.dumps({"ids": ids, "refused": refused, "calls": calls, "seconds": time.monotonic() - started,
                  "unconfirmed": allocation.wait_confirmed()}), flush=True)
"""


def test_an_allocator_reused_shares_leases_and_its_reads_and_is_never_misled_by_them(tmp_path, auth_config):
    """A scheduler's Allocator: 30 allocations through leases replaced every 0.4 s and reads re-used, while another
    client allocates and changes the limit behind its back. Everything acknowledged is granted on the node and
    confirmed in etcd; the limit is applied as it stands at each transaction."""
    with _one_node_with_auth(tmp_path, auth_config, "100") as (net, etcd, hub, auth):
        run = subprocess.run(
            [*hub, sys.executable, "-c", REUSING_ALLOCATOR, etcd.url, PASSWORD],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        assert out["unconfirmed"] == []
        # Refused exactly once: the allocation after the limit was lowered to what was held, on a fresh read.
        assert [i for i, _ in out["refused"]] == [20] and "cluster limit for cpu" in out["refused"][0][1]
        assert len(out["ids"]) == 30  # 29 of its own and the other's
        ledger = node_ledgers(net, 1)
        assert sorted(a["id"] for a in ledger) == sorted(out["ids"])
        assert sum(a["amount"] for a in ledger) == pytest.approx(0.25 + 29 * 0.05)
        listed = json.loads(cluster(hub, "allocations", "--etcd", etcd.url, "--json", *auth).stdout)
        assert sorted(a["id"] for a in listed["allocations"]) == sorted(out["ids"])
        assert {a["state"] for a in listed["allocations"]} == {"granted"} and listed["repaired"] == []
        assert limit_list(hub, etcd)[("cpu", None)]["used"] == pytest.approx(0.25 + 29 * 0.05)
        # Leases: one per 0.35-0.4 s (each used 7/8 of LEASE_USE_S at least), far fewer than allocations; reads: one per 3 s (MEMBERS_MAX_AGE_S) and one
        # after each stale start (the other's write, two limit changes). The other allocator's own: one of each.
        calls, seconds = out["calls"], out["seconds"]
        assert 2 <= calls["grant"] - 1 <= seconds / 0.35 + 2, calls
        assert 3 <= calls["read"] - 1 <= 1 + seconds // 3 + 3, calls


SHARED_LEASE_KILLED = """
import json, os, signal, sys
import hypermesh.cluster.allocate as allocation
from hypermesh.cluster.etcd import Etcd
from hypermesh.cluster.fanout import Client
from hypermesh.cluster.limits import ClusterLimits
allocation.PENDING_TTL_S, allocation.ACK_MARGIN_S = 2, 1.0
ClusterLimits.confirm_start = lambda *args, **kwargs: (lambda: True)  # no confirmation ever reaches etcd
real_grant, reserved = allocation._grant, []
def grant(limits, client, candidates, body, *rest, **named):
    reserved.append(body["id"])
    if len(reserved) == 3:  # the third reservation is made, on the same lease: killed before its node is asked
        print(json.dumps({"abandoned": body["id"]}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_grant(limits, client, candidates, body, *rest, **named)
allocation._grant = grant
allocator = allocation.Allocator(Etcd(sys.argv[1]), Client(timeout_s=20.0, auth=("hm", sys.argv[2])))
for _ in range(3):
    print(json.dumps(allocator.allocate("cpu", 0.25, "shared")), flush=True)
"""


def test_an_allocator_killed_with_acknowledged_grants_on_its_shared_lease_loses_none(tmp_path, auth_config):
    """Two allocations acknowledged (their confirmations lost) and a third reserved on the same lease, then SIGKILL:
    once the lease ends, repair keeps the two the node holds and drops the one it never saw."""
    with _one_node_with_auth(tmp_path, auth_config, "1") as (net, etcd, hub, auth):
        output = killed_itself(hub, SHARED_LEASE_KILLED, etcd.url, PASSWORD)
        *acked, abandoned = [json.loads(line) for line in output.splitlines()]
        acked_ids = sorted(a["id"] for a in acked)
        assert len(acked_ids) == 2 and {a["state"] for a in acked} == {"granted"}
        assert sorted(a["id"] for a in node_ledgers(net, 1)) == acked_ids
        assert limit_list(hub, etcd)[("cpu", None)]["used"] == pytest.approx(0.75)  # all three, while the lease lasts
        time.sleep(2 + 1.5)  # the lease ends: the three pending records go with it, the usage entries stay
        listed = json.loads(cluster(hub, "allocations", "--etcd", etcd.url, "--json", *auth).stdout)
        assert sorted(listed["repaired"]) == sorted([*acked_ids, abandoned["abandoned"]])
        assert sorted(a["id"] for a in listed["allocations"]) == acked_ids
        assert {a["state"] for a in listed["allocations"]} == {"granted"}
        assert limit_list(hub, etcd)[("cpu", None)]["used"] == pytest.approx(0.5)


def test_a_node_without_room_hands_the_reservation_to_the_next(tmp_path, auth_config):
    password = tmp_path / "pw"
    password.write_text(PASSWORD)
    auth = ["--user", "hm", "--password-file", str(password)]
    cores = len(os.sched_getaffinity(0))  # what each agent offers: the same host's CPUs (test_agent_assets)
    with Net(2) as net:
        etcd = Etcd(tmp_path, net).start()
        try:
            state = str(tmp_path / "state-{i}")
            with agents_in(net, etcd, 2, "--config", str(auth_config), "--state-dir", state):
                hub = net.prefix()
                wait_until(lambda: registered(hub, etcd.url) == ["node-0", "node-1"], 20, "registered")
                assert cluster(hub, "limit", "set", "cpu", "100", "--etcd", etcd.url).returncode == 0
                fill = cluster(hub, "allocate", "cpu", f"{cores - 0.1:g}", "--owner", "fill", "--node", "node-0",
                               "--etcd", etcd.url, *auth)  # fmt: skip
                assert fill.returncode == 0, fill.stderr
                # A quarter of a node each: node-0 has 0.1 left, so every one lands on node-1 whichever node the
                # random order asks first (each time node-0 is asked first, its 409 hands over).
                quarter = cores / 4
                placed = []
                for k in range(4):
                    out = cluster(hub, "allocate", "cpu", f"{quarter:g}", "--owner", f"q{k}", "--etcd", etcd.url,
                                  "--json", *auth)  # fmt: skip
                    assert out.returncode == 0, out.stderr
                    placed.append(json.loads(out.stdout)["node_id"])
                assert placed == ["node-1"] * 4
                # Both nodes full: both refuse, the reservation is undone, the answer names both.
                full = cluster(hub, "allocate", "cpu", f"{quarter:g}", "--owner", "q9", "--etcd", etcd.url, *auth)
                assert full.returncode == 2 and full.stderr.count("\n") == 1, full.stderr
                assert "no cpu asset on any node" in full.stderr
                assert "node-0:" in full.stderr and "node-1:" in full.stderr
                used = limit_list(hub, etcd)[("cpu", None)]["used"]
                assert used == pytest.approx(cores - 0.1 + cores)
                ledgers = node_ledgers(net, 2)
                assert sum(a["amount"] for a in ledgers) == pytest.approx(used)
                listed = json.loads(cluster(hub, "allocations", "--etcd", etcd.url, "--json", *auth).stdout)
                assert sorted(a["id"] for a in listed["allocations"]) == sorted(a["id"] for a in ledgers)
                assert {a["state"] for a in listed["allocations"]} == {"granted"}
        finally:
            etcd.stop()


def test_a_limit_changed_after_the_read_is_the_one_applied(tmp_path):
    """The allocator's read may be serializable (possibly behind the cluster): its transaction compares the revisions
    of the limits it applied, so a limit lowered after the read is seen; a refusal is re-checked on a fresh read."""
    from hypermesh.cluster.etcd import Etcd as EtcdClient
    from hypermesh.cluster.limits import ClusterLimits, LimitExceeded

    server = Etcd(tmp_path).start()
    try:
        etcd = EtcdClient(server.url)
        limits = ClusterLimits(etcd)
        limits.set_limit("memory", 10)
        stale = limits.read_for("memory", serializable=True)
        limits.set_limit("memory", 4)  # after the read
        with pytest.raises(LimitExceeded, match="4 of 4 left, 6 asked"):
            limits.reserve_at("memory", 6, "a", etcd.grant(10), "n", "http://127.0.0.1:1", read=stale)
        assert [r["used"] for r in limits.limits()] == [0.0]
        limits.set_limit("memory", 2, owner="a")  # an owner's limit that did not exist when read
        stale = limits.read_for("memory", serializable=True)
        limits.set_limit("memory", 3, owner="a")
        limits.set_limit("memory", 20)
        limits.reserve_at("memory", 3, "a", etcd.grant(10), "n", "http://127.0.0.1:1", read=stale)  # 3 applies
        limits.set_limit("memory", 10)
        stale_refusal = limits.read_for("memory", serializable=True)  # 3 of 10 used: 14 more would be refused
        limits.set_limit("memory", 30)  # room again after a read that would refuse
        limits.reserve_at("memory", 14, "b", etcd.grant(10), "n", "http://127.0.0.1:1", read=stale_refusal)
        assert {(r["owner"], r["used"]) for r in limits.limits()} == {(None, 17.0), ("a", 3.0)}
        etcd.close()
    finally:
        server.stop()


def test_a_node_that_takes_the_request_and_answers_too_late_keeps_its_reservation(tmp_path, monkeypatch):
    """The node is reached through a proxy that holds the allocation's POST until the allocator has timed out, then
    passes it on: the node grants it late. The reservation must stay (undoing it let the node hold a grant that no
    limit counted); once its lease has ended, repair asks the node and records the grant."""
    import re
    import urllib.error
    import urllib.request

    import hypermesh.cluster.allocate as allocation
    from hypermesh.cluster.etcd import Etcd as EtcdClient
    from hypermesh.cluster.fanout import Client
    from hypermesh.cluster.limits import ClusterLimits
    from hypermesh.cluster.membership import NODES_PREFIX
    from hypermesh.errors import BackendError
    from tests.fixtures.agent.agent_process import AgentProcess
    from tests.integration.test_cluster_fanout import RawServer

    def ledger(url: str) -> list[dict]:
        with urllib.request.urlopen(url + "/v1/allocations", timeout=10) as answer:
            return json.loads(answer.read())

    def late(conn) -> None:
        request = proxy.read_request(conn)
        head, _, body = request.partition(b"\r\n\r\n")
        method, path, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        if method == "POST":
            time.sleep(2.0)  # the allocator gives up after 1 s
        forwarded = urllib.request.Request(agent.url + path, data=body or None, method=method,
                                           headers={"content-type": "application/json"})  # fmt: skip
        try:
            with urllib.request.urlopen(forwarded, timeout=10) as answer:
                status, data = answer.status, answer.read()
        except urllib.error.HTTPError as refused:
            status, data = refused.code, refused.read()
        with contextlib.suppress(OSError):
            conn.sendall(
                b"HTTP/1.1 %d -\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (status, len(data), data)
            )

    monkeypatch.setattr(allocation, "PENDING_TTL_S", 2)  # a 2 s lease: repair may ask the node 2 s on
    server = Etcd(tmp_path).start()
    proxy = RawServer(late)
    try:
        with AgentProcess("--interval", "0.5", "--state-dir", str(tmp_path / "state")) as agent:
            etcd = EtcdClient(server.url)
            etcd.put(NODES_PREFIX + "slow-0", json.dumps({"url": proxy.url}).encode())
            limits = ClusterLimits(etcd)
            limits.set_limit("cpu", 1)
            client = Client(timeout_s=1.0)
            with pytest.raises(BackendError) as stalled:
                allocation.allocate(etcd, client, "cpu", 0.5, "stalled", node_id="slow-0")
            message = str(stalled.value)
            found = re.search(r"allocation (c-[0-9a-f]+) may have been granted there", message)
            assert found and "did not answer: timed out" in message and "\n" not in message, message
            allocation_id = found[1]
            assert [r["used"] for r in limits.limits()] == [0.5]  # still reserved
            wait_until(lambda: [g["id"] for g in ledger(agent.url)] == [allocation_id], 20, "the node's late grant")
            time.sleep(2 + 1.5)  # the lease ends: the pending record goes, the usage entry names the node
            assert limits.repair(allocation.node_holds(Client(timeout_s=10.0))) == [allocation_id]
            (record,) = limits.allocations()
            assert (record["id"], record["state"], record["node_id"]) == (allocation_id, "granted", "slow-0")
            held = sum(g["amount"] for g in ledger(agent.url))
            assert [r["used"] for r in limits.limits()] == [pytest.approx(held)] == [pytest.approx(0.5)]
            etcd.close()
    finally:
        proxy.close()
        server.stop()
