"""A real cluster for tests: etcd (Debian's etcd-server) and agents, each agent in its own network namespace.

Layout: a hub namespace holds a bridge (10.213.0.1/24) and etcd; node namespace i gets a veth into the bridge with
10.213.0.(10+i). Cluster commands run in the hub namespace too, so nothing of this touches the host's network.
Names carry the test process's pid: tests running at the same time (other checkouts) do not collide.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import require_binary, require_root
from tests.fixtures.agent.agent_process import AgentProcess

HUB_IP = "10.213.0.1"
SUBNET = "10.213.0"
ETCD_PORT = 2379
CLI = [sys.executable, "-m", "hypermesh.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Net:
    """The hub and node namespaces; ``exec(i)`` is the prefix that runs a command in node i (None: the hub)."""

    def __init__(self, nodes: int) -> None:
        self.tag = f"hmc{os.getpid() % 100000}"
        self.hub = f"{self.tag}-hub"
        self.nodes = [f"{self.tag}-n{i}" for i in range(nodes)]

    def prefix(self, node: int | None = None) -> list[str]:
        return ["ip", "netns", "exec", self.hub if node is None else self.nodes[node]]

    def address(self, node: int) -> str:
        return f"{SUBNET}.{10 + node}"

    def veth(self, node: int) -> str:
        return f"{self.tag}v{node}"

    def __enter__(self) -> Net:
        require_root("network namespaces need root (CAP_NET_ADMIN)")
        require_binary("ip")
        ip("netns", "add", self.hub)
        try:
            ip("-n", self.hub, "link", "set", "lo", "up")
            ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            ip("-n", self.hub, "addr", "add", f"{HUB_IP}/24", "dev", "br0")
            ip("-n", self.hub, "link", "set", "br0", "up")
            for i, name in enumerate(self.nodes):
                ip("netns", "add", name)
                ip("-n", name, "link", "set", "lo", "up")
                # Created in the node's namespace, its peer moved into the hub and onto the bridge.
                ip("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", self.veth(i))
                ip("-n", name, "link", "set", self.veth(i), "netns", self.hub)
                ip("-n", name, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
                ip("-n", name, "link", "set", "eth0", "up")
                ip("-n", self.hub, "link", "set", self.veth(i), "master", "br0")
                ip("-n", self.hub, "link", "set", self.veth(i), "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def cut(self, node: int) -> None:
        """The node's cable pulled: its end of the link down."""
        ip("-n", self.nodes[node], "link", "set", "eth0", "down")

    def __exit__(self, *exc: object) -> None:
        for name in [*self.nodes, self.hub]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


class Etcd:
    """A one-member etcd with its data in ``directory``; on the hub's address when given a Net."""

    def __init__(self, directory: Path, net: Net | None = None) -> None:
        self.binary = require_binary("etcd")
        self.directory = directory
        self.prefix = net.prefix() if net is not None else []
        host = HUB_IP if net is not None else "127.0.0.1"
        self.client_port = ETCD_PORT if net is not None else free_port()
        self.peer_port = 2380 if net is not None else free_port()
        self.url = f"http://{host}:{self.client_port}"
        self.peer = f"http://{host}:{self.peer_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, fresh: bool = False) -> Etcd:
        data = self.directory / ("data-fresh" if fresh else "data")
        log = open(self.directory / "etcd.log", "ab")  # noqa: SIM115 (closed with the process)
        self.proc = subprocess.Popen(
            [*self.prefix, self.binary, "--name", "hm", "--data-dir", str(data),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", self.peer, "--initial-advertise-peer-urls", self.peer,
             "--initial-cluster", f"hm={self.peer}", "--log-level", "warn"],
            stdout=log, stderr=log,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited: {(self.directory / 'etcd.log').read_text()[-2000:]}")
            if self.run_python(f"import urllib.request; urllib.request.urlopen({self.url + '/health'!r}, timeout=1)"):
                return self
            time.sleep(0.2)
        raise RuntimeError("etcd did not become healthy within 30 s")

    def run_python(self, code: str) -> bool:
        return (
            subprocess.run([*self.prefix, sys.executable, "-c", code], capture_output=True, timeout=30).returncode == 0
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


def cluster(prefix: list[str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``hypermesh cluster ARGS`` (run under ``prefix``, e.g. in the hub namespace)."""
    return subprocess.run([*prefix, *CLI, "cluster", *args], capture_output=True, text=True, timeout=timeout)


def cluster_json(prefix: list[str], *args: str) -> dict:
    out = cluster(prefix, *args, "--json")
    assert out.returncode in (0, 1), out.stderr
    return json.loads(out.stdout)


def fetch(prefix: list[str], url: str) -> dict:
    """GET a JSON document with urllib, in the given namespace: a client independent of the fan-out's."""
    code = f"import sys, urllib.request; sys.stdout.write(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    out = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


def wait_until(check, timeout_s: float, what: str, step: float = 0.25):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"{what} not within {timeout_s} s (last: {last!r})")


@contextlib.contextmanager
def agents_in(net: Net, etcd: Etcd, count: int, *extra: str) -> Iterator[list[AgentProcess]]:
    """``count`` agents, agent i in node namespace i, registered in ``etcd`` as node-i."""
    started: list[AgentProcess] = []
    try:
        for i in range(count):
            agent = AgentProcess(
                "--listen", f"{net.address(i)}:9137", "--etcd", etcd.url, "--node-id", f"node-{i}",
                "--interval", "0.5", *(arg.replace("{i}", str(i)) for arg in extra), prefix=net.prefix(i),
            )  # fmt: skip
            started.append(agent)
            agent.start()
        yield started
    finally:
        for agent in started:
            agent.stop()


def registered(prefix: list[str], etcd_url: str) -> list[str]:
    """Node ids etcd lists now, read with urllib (not through our client)."""
    code = (
        "import base64, json, sys, urllib.request\n"
        "k = base64.b64encode(b'/hypermesh/nodes/').decode(); e = base64.b64encode(b'/hypermesh/nodes0').decode()\n"
        f"r = urllib.request.Request({etcd_url + '/v3/kv/range'!r}, data=json.dumps({{'key': k, 'range_end': e}}).encode())\n"
        "d = json.load(urllib.request.urlopen(r, timeout=5))\n"
        "print(json.dumps(sorted(base64.b64decode(kv['key']).decode()[17:] for kv in d.get('kvs', []))))\n"
    )
    out = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)
