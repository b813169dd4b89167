"""hypermesh cluster on loopback: TLS and auth failures named, bad input as one line, nodes files."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from tests.fixtures.agent.agent_process import AgentProcess
from tests.integration.cluster_support import CLI, cluster
from tests.integration.test_agent_security import HASH, PASSWORD, self_signed


def test_auth_and_tls_failures_are_named_and_credentials_pass(tmp_path):
    cert, key = self_signed(tmp_path, "agent", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[tls_server_config]\ncert_file = "{cert}"\nkey_file = "{key}"\n\n[basic_auth_users]\nprometheus = "{HASH}"\n'
    )
    with AgentProcess("--config", str(config), "--interval", "0.5") as agent:
        secret = tmp_path / "password"
        secret.write_text(PASSWORD + "\n")
        no_ca = cluster([], "status", "--node", agent.url, "--json")
        assert json.loads(no_ca.stdout)["summary"]["failed"][0]["kind"] == "tls"
        no_auth = cluster([], "status", "--node", agent.url, "--cacert", str(cert), "--json")
        assert json.loads(no_auth.stdout)["summary"]["failed"][0]["kind"] == "auth"
        ok = cluster(
            [], "status", "--node", agent.url, "--cacert", str(cert), "--user", "prometheus",
            "--password-file", str(secret), "--json", "--strict",
        )  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        view = json.loads(ok.stdout)
        assert view["summary"]["current"] == 1 and view["nodes"][0]["version"]
        assert PASSWORD not in ok.stdout + ok.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "no agents given"),
        (("--etcd", "http://127.0.0.1:1", "--node", "http://127.0.0.1:2"), "not several"),
        (("--node", "ftp://x"), "not an agent URL"),
        (("--node", "http://127.0.0.1:99999"), "bad port"),
        (("--nodes", "/nonexistent/agents.txt"), "cannot read"),
        (("--etcd", "127.0.0.1:2379"), "not an etcd client URL"),
        (("--node", "http://127.0.0.1:2", "--user", "u"), "needs a password"),
        (("--node", "http://127.0.0.1:2", "--quorum", "0"), "1 or more"),
    ],
)
def test_bad_cluster_input_is_one_line_and_exit_2(args, says):
    env = {k: v for k, v in os.environ.items() if k != "HYPERMESH_PASSWORD"}
    out = subprocess.run([*CLI, "cluster", "status", *args], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2, out
    assert out.stderr.count("\n") == 1 and says in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_an_agent_on_every_address_needs_an_advertised_url():
    out = subprocess.run(
        [*CLI, "agent", "--listen", "0.0.0.0:0", "--etcd", "http://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "--advertise" in out.stderr


def test_a_nodes_file_lists_agents_by_id(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nodes = tmp_path / "agents.txt"
    nodes.write_text(f"# our agents\nweb-1 http://127.0.0.1:{port}\n\n")
    view = json.loads(cluster([], "status", "--nodes", str(nodes), "--json").stdout)
    assert [n["node_id"] for n in view["nodes"]] == ["web-1"]
    assert view["summary"]["failed"][0]["kind"] == "refused"


def test_limit_input_is_checked_in_one_line():
    for args, says in (
        (("limit", "set", "cpu", "lots", "--etcd", "http://127.0.0.1:1"), "bad cpu amount"),
        (("limit", "set", "disks", "1", "--etcd", "http://127.0.0.1:1"), "unknown asset kind"),
        (("allocate", "cpu", "1", "--etcd", "http://127.0.0.1:1"), "--owner"),
        (("limit", "list"), "--etcd"),
    ):
        out = subprocess.run([*CLI, "cluster", *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and says in out.stderr, out.stderr
