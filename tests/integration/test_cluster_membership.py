"""A real agent's registration in a real etcd on 127.0.0.1, read back with urllib (not through our etcd client)."""

from __future__ import annotations

import base64
import json
import urllib.request

import httpx
import pytest

from tests.fixtures.agent.agent_process import AgentProcess
from tests.integration.cluster_support import Etcd, wait_until

pytestmark = pytest.mark.slow

NODE = "labels-node"


def registration(etcd_url: str) -> tuple[dict, str] | None:
    """The node's record in etcd and the lease it is bound to, or None while it is not there."""
    key = base64.b64encode(f"/hypermesh/nodes/{NODE}".encode()).decode()
    request = urllib.request.Request(f"{etcd_url}/v3/kv/range", data=json.dumps({"key": key}).encode())
    with urllib.request.urlopen(request, timeout=5) as response:
        kvs = json.load(response).get("kvs", [])
    if not kvs:
        return None
    return json.loads(base64.b64decode(kvs[0]["value"])), kvs[0]["lease"]


def test_labels_that_could_not_be_written_are_written_later_under_the_same_lease(tmp_path):
    etcd = Etcd(tmp_path).start()
    try:
        with (
            AgentProcess("--etcd", etcd.url, "--node-id", NODE, "--interval", "0.5") as agent,
            httpx.Client(base_url=agent.url, timeout=10) as http,
        ):
            _, lease = wait_until(lambda: registration(etcd.url), 15, "registered")
            etcd.stop()  # the label write below fails: etcd is not there
            changed = http.put("/v1/config", json={"labels": {"rack": "r7"}})
            assert changed.status_code == 200, changed.text
            wait_until(lambda: "new labels not written yet" in agent.log(), 15, "the failed write logged")
            # Same data directory: etcd restores the lease on restart (and extends it by its TTL), so the lease
            # was never lost and must not be replaced.
            etcd.start()
            record, lease_after = wait_until(
                lambda: (found := registration(etcd.url)) and found[0]["labels"] == {"rack": "r7"} and found,
                15,
                "the new labels in etcd",
            )
            assert lease_after == lease
            log = agent.log()
            assert "etcd forgot" not in log, log
            assert "new labels written" in log, log
            assert record["url"] == agent.url
    finally:
        etcd.stop()
