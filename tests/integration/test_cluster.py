"""hypermesh cluster against real agents in their own network namespaces, registered in a real etcd.

Each agent runs on this host, so every node's profile is this host's: totals are checked against the kernel's own
files times the node count, and each node's part against that node's own answer read with another client (urllib).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.integration.cluster_support import (
    Etcd,
    Net,
    agents_in,
    cluster,
    cluster_json,
    fetch,
    registered,
    wait_until,
)

pytestmark = [pytest.mark.netns, pytest.mark.root, pytest.mark.slow]


def online_cpus() -> int:
    with open("/sys/devices/system/cpu/online") as f:
        total = 0
        for part in f.read().strip().split(","):
            low, _, high = part.partition("-")
            total += int(high or low) - int(low) + 1
        return total


def mem_total_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


def test_five_agents_are_discovered_and_their_totals_are_the_sum(tmp_path):
    with Net(5) as net:
        etcd = Etcd(tmp_path, net).start()
        try:
            with agents_in(net, etcd, 5):
                hub = net.prefix()
                wait_until(lambda: len(registered(hub, etcd.url)) == 5, 15, "5 agents registered")
                status = cluster_json(hub, "status", "--etcd", etcd.url)
                assert status["summary"]["nodes"] == status["summary"]["current"] == 5, status["summary"]
                assert [n["node_id"] for n in status["nodes"]] == [f"node-{i}" for i in range(5)]
                assert [n["url"] for n in status["nodes"]] == [f"http://{net.address(i)}:9137" for i in range(5)]
                assert all(n["status"] == "ok" and not n["stale"] for n in status["nodes"])

                profile = cluster_json(hub, "profile", "--etcd", etcd.url)
                assert profile["logical_cores"] == 5 * online_cpus()
                assert profile["memory_total_bytes"] == 5 * mem_total_bytes()
                assert profile["differs"] == [], profile["heterogeneity"]  # five agents of one host, one version
                for i, node in enumerate(profile["nodes"]):
                    own = fetch(hub, f"http://{net.address(i)}:9137/v1/profile")
                    assert node["profile"]["cpu"] == own["cpu"]
                    assert node["profile"]["memory"]["total_bytes"] == own["memory"]["total_bytes"]

                assets = cluster_json(hub, "assets", "--etcd", etcd.url)
                assert assets["summary"]["current"] == 5
                owns = [fetch(hub, f"http://{net.address(i)}:9137/v1/assets") for i in range(5)]
                for kind, figures in assets["kinds"].items():
                    mine = [a for own in owns for a in own["assets"] if a["kind"] == kind]
                    assert figures["assets"] == len(mine)
                    assert figures["capacity"] == pytest.approx(sum(a["capacity"] for a in mine))
                assert assets["kinds"]["cpu"]["capacity"] == pytest.approx(5 * online_cpus())

                text = cluster(hub, "status", "--etcd", etcd.url)
                assert text.returncode == 0, text.stderr
                assert "5 of 5 nodes current" in text.stdout
                for i in range(5):
                    assert f"node-{i}" in text.stdout
        finally:
            etcd.stop()


def test_failed_nodes_are_named_and_strict_and_quorum_say_so(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text("etcd_ttl = 3\n")
    with Net(3) as net:
        etcd = Etcd(tmp_path, net).start()
        try:
            with agents_in(net, etcd, 3, "--config", str(config)) as agents:
                hub = net.prefix()
                wait_until(lambda: len(registered(hub, etcd.url)) == 3, 15, "3 agents registered")
                nodes = [arg for i in range(3) for arg in ("--node", f"http://{net.address(i)}:9137")]
                assert cluster(hub, "status", *nodes, "--strict").returncode == 0
                for agent in agents[1:]:
                    agent.proc.send_signal(signal.SIGKILL)
                    agent.proc.wait(10)
                view = cluster_json(hub, "status", *nodes)
                summary = view["summary"]
                assert summary["current"] == 1 and summary["nodes"] == 3
                assert {f["node_id"] for f in summary["failed"]} == {f"{net.address(i)}:9137" for i in (1, 2)}
                assert {f["kind"] for f in summary["failed"]} == {"refused"}
                assert view["cpu_percent"]["mean"] is not None  # the survivor's figures, alone
                strict = cluster(hub, "status", *nodes, "--strict")
                assert strict.returncode == 1
                assert strict.stderr.strip().count("\n") == 0 and "2 of 3" in strict.stderr
                assert cluster(hub, "status", *nodes, "--quorum", "2").returncode == 1
                assert cluster(hub, "status", *nodes, "--quorum", "1").returncode == 0
                # The killed agents could not revoke their leases: they leave when the 3 s lease ends.
                killed_at = time.monotonic()
                wait_until(lambda: registered(hub, etcd.url) == ["node-0"], 3 + 4, "the killed agents leave etcd")
                assert time.monotonic() - killed_at <= 3 + 4
                # A clean stop revokes the lease at once.
                agents[0].stop()
                wait_until(lambda: registered(hub, etcd.url) == [], 2, "a stopped agent leaves etcd at once")
        finally:
            etcd.stop()


def black_hole(prefix: list[str], address: str) -> subprocess.Popen[bytes]:
    """A listener that accepts connections (the kernel completes them from its backlog) and never answers."""
    code = (
        "import socket, sys, time\n"
        f"s = socket.socket(); s.bind(({address!r}, 9137)); s.listen(64)\n"
        "print('ready', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([*prefix, sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def slow_server(prefix: list[str], address: str, delay_s: float) -> subprocess.Popen[bytes]:
    """An HTTP server that answers /healthz correctly, but only after ``delay_s``: a slow or far node.

    netem would add the delay on the link, but this kernel has no sch_netem (tc: "Specified qdisc kind is
    unknown"): the delay is made in user space instead, which is what a timeout sees either way."""
    code = (
        "import http.server, json, time\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        f"        time.sleep({delay_s})\n"
        "        body = json.dumps({'status': 'ok', 'last_sample_age_s': 0.1}).encode()\n"
        "        self.send_response(200); self.send_header('content-length', str(len(body))); self.end_headers()\n"
        "        self.wfile.write(body)\n"
        "    def log_message(self, *a): pass\n"
        f"s = http.server.ThreadingHTTPServer(({address!r}, 9137), H)\n"
        "print('ready', flush=True)\n"
        "s.serve_forever()\n"
    )
    proc = subprocess.Popen([*prefix, sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
    return proc


def test_black_hole_cut_link_and_slow_node_cost_at_most_the_timeout(tmp_path):
    with Net(4) as net:
        etcd = Etcd(tmp_path, net).start()
        helpers = []
        try:
            with agents_in(net, etcd, 2):
                hub = net.prefix()
                helpers.append(black_hole(net.prefix(2), net.address(2)))
                helpers.append(slow_server(net.prefix(3), net.address(3), 30.0))
                net.cut(1)
                nodes = [arg for i in range(4) for arg in ("--node", f"http://{net.address(i)}:9137")]
                timeout = 1.5
                started = time.monotonic()
                view = cluster_json(hub, "status", *nodes, "--timeout", str(timeout))
                elapsed = time.monotonic() - started
                kinds = {f["node_id"]: f["kind"] for f in view["summary"]["failed"]}
                assert kinds == {f"{net.address(i)}:9137": "timed out" for i in (1, 2, 3)}, view["summary"]
                assert view["summary"]["current"] == 1
                # A deadline, with seconds of margin for starting Python: three dead nodes cost one timeout, not three.
                assert elapsed < timeout + 6, elapsed
        finally:
            for proc in helpers:
                proc.kill()
                proc.wait(10)
                if proc.stdout is not None:
                    proc.stdout.close()
            etcd.stop()


def test_an_agent_comes_back_after_etcd_loses_everything(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text("etcd_ttl = 3\n")
    with Net(1) as net:
        etcd = Etcd(tmp_path, net).start()
        hub = net.prefix()
        try:
            with agents_in(net, etcd, 1, "--config", str(config)) as (agent,):
                wait_until(lambda: registered(hub, etcd.url) == ["node-0"], 15, "registered")
                etcd.stop()
                down = cluster(hub, "status", "--etcd", etcd.url)
                assert down.returncode == 1
                assert down.stderr.count("\n") == 1 and "unreachable" in down.stderr and etcd.url in down.stderr
                # Still serving while etcd is away.
                assert fetch(hub, f"http://{net.address(0)}:9137/healthz")["status"] == "ok"
                etcd.start(fresh=True)  # an empty store: the agent's lease is unknown there
                wait_until(lambda: registered(hub, etcd.url) == ["node-0"], 3 + 5, "registered again")
                assert "registering again" in agent.log() or "registered in etcd again" in agent.log()
        finally:
            etcd.stop()
