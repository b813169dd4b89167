"""hypermesh cluster rollout over 5 real agents in network namespaces, one of which cannot load eBPF programs.

node-3 runs without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN (setpriv drops them from its bounding set), so a config
that adds the syscalls program leaves it unhealthy: the roll-out must update node-0..2, roll node-3 back, and leave
node-4 untouched. Every node's config is then read with another client (urllib) to check what each runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import require_binary
from tests.fixtures.agent.agent_process import AgentProcess
from tests.integration.cluster_support import Etcd, Net, cluster, registered, wait_until
from tests.integration.test_agent_security import HASH, PASSWORD

pytestmark = [pytest.mark.netns, pytest.mark.root, pytest.mark.slow]

NO_BPF = ["--inh-caps=-all", "--bounding-set=-bpf,-perfmon,-sys_admin", "--"]


def read_config(net: Net, node: int) -> dict:
    code = (
        "import base64, sys, urllib.request\n"
        "token = base64.b64encode(b'hm:' + sys.argv[2].encode()).decode()\n"
        "r = urllib.request.Request(sys.argv[1], headers={'authorization': 'Basic ' + token})\n"
        "print(urllib.request.urlopen(r, timeout=20).read().decode())\n"
    )
    url = f"http://{net.address(node)}:9137/v1/config"
    out = subprocess.run(
        [*net.prefix(), sys.executable, "-c", code, url, PASSWORD], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_rollout_stops_at_the_node_that_turns_unhealthy_and_rolls_it_back(tmp_path):
    setpriv = require_binary("setpriv")
    config = tmp_path / "agent.toml"
    config.write_text(f'[basic_auth_users]\nhm = "{HASH}"\n')
    live = tmp_path / "live.toml"
    live.write_text('interval = 0.25\nebpf = ["syscalls"]\n')
    password = tmp_path / "pw"
    password.write_text(PASSWORD)
    with Net(5) as net:
        etcd = Etcd(tmp_path, net).start()
        agents = []
        try:
            for i in range(5):
                prefix = net.prefix(i) + ([setpriv, *NO_BPF] if i == 3 else [])
                agent = AgentProcess(
                    "--listen", f"{net.address(i)}:9137", "--etcd", etcd.url, "--node-id", f"node-{i}",
                    "--interval", "0.5", "--config", str(config), "--state-dir", str(tmp_path / f"state-{i}"),
                    prefix=prefix,
                )  # fmt: skip
                agents.append(agent)
                agent.start()
            hub = net.prefix()
            wait_until(lambda: len(registered(hub, etcd.url)) == 5, 20, "5 agents registered")
            before = [read_config(net, i) for i in range(5)]
            auth = ["--user", "hm", "--password-file", str(password)]

            unauthenticated = cluster(hub, "rollout", "--config", str(live), "--etcd", etcd.url, "--json")
            assert unauthenticated.returncode == 1
            first = json.loads(unauthenticated.stdout)[0]
            assert first["outcome"] == "failed" and "401" in first["detail"]
            assert [read_config(net, i)["generation"] for i in range(5)] == [0] * 5  # nothing changed anywhere

            out = cluster(hub, "rollout", "--config", str(live), "--etcd", etcd.url, *auth, "--health-timeout", "8",
                          "--json", timeout=300)  # fmt: skip
            assert out.returncode == 1, out.stderr
            outcomes = {r["node_id"]: r["outcome"] for r in json.loads(out.stdout)}
            assert outcomes == {
                "node-0": "updated", "node-1": "updated", "node-2": "updated",
                "node-3": "rolled back", "node-4": "skipped",
            }  # fmt: skip
            detail = next(r["detail"] for r in json.loads(out.stdout) if r["node_id"] == "node-3")
            assert "syscalls not loaded" in detail and "rolled back" in detail

            now = [read_config(net, i) for i in range(5)]
            for i in range(3):
                assert (now[i]["interval"], now[i]["ebpf"]) == (0.25, ["syscalls"])
            assert (now[3]["interval"], now[3]["ebpf"]) == (0.5, [])  # back on its previous config
            assert now[3]["hash"] == before[3]["hash"] and now[3]["generation"] == 2
            assert now[4] == before[4]  # never touched
            hashes = {r["node_id"]: r["config_hash"] for r in json.loads(out.stdout)}
            assert [hashes[f"node-{i}"] for i in range(5)] == [c["hash"] for c in now]
        finally:
            for agent in agents:
                agent.stop()
            etcd.stop()
