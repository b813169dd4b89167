"""Agent figures: /metrics scrape latency and CPU per scrape, RSS, idle CPU at 1 s and 100 Hz sampling.

Debian's prometheus-node-exporter (default collectors minus systemd, which fails without a system bus)
is measured in the same run over the same kind of keep-alive HTTP connection; ratios are ours / its.
Client-side latency is request sent -> whole body read; CPU per scrape is the server process's
utime+stime (all threads) over the scrapes divided by their number.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
SCRAPES = 300  # per target, in 3 interleaved rounds

# node_exporter 1.5's CPU per scrape on the machine issue 5 measured (its reference figure).
REFERENCE_NODE_EXPORTER_CPU_PER_SCRAPE_MS = 3.2


FIXTURE_ROOT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "agent" / "root"


def synthetic_root(dst: Path, cpus: int = 32, disks: int = 12, interfaces: int = 20) -> Path:
    """A bigger machine made from the recorded 2-CPU fixture: ``cpus`` CPUs, ``disks`` disks, more NICs.

    The live VM is the comparison that counts (the agent now exports more samples than node_exporter there);
    this root shows how the cost grows with a bigger machine (--root).
    """
    root = dst / "root"
    shutil.copytree(FIXTURE_ROOT, root)
    proc, cpu_dir = root / "proc", root / "sys" / "devices" / "system" / "cpu"
    stat = (proc / "stat").read_text().splitlines()
    cpu0 = next(line for line in stat if line.startswith("cpu0 ")).split()[1:]
    per_cpu = [f"cpu{n} " + " ".join(str(int(v) + n) for v in cpu0) for n in range(cpus)]
    rest = [line for line in stat if not (line.startswith("cpu") and line[3].isdigit())]
    (proc / "stat").write_text("\n".join([rest[0], *per_cpu, *rest[1:]]) + "\n")
    for n in range(2, cpus):
        shutil.copytree(cpu_dir / "cpu0", cpu_dir / f"cpu{n}")
    for name in ("online", "possible"):
        (cpu_dir / name).write_text(f"0-{cpus - 1}\n")
    diskstats = (proc / "diskstats").read_text().splitlines()
    vda = next(line for line in diskstats if line.split()[2] == "vda")
    for n in range(1, disks):
        name = f"vd{chr(ord('a') + n)}"
        diskstats.append(vda.replace(" vda ", f" {name} ").replace("  253       0", f"  253     {n * 16:3d}"))
        shutil.copytree(root / "sys" / "block" / "vda", root / "sys" / "block" / name)
    (proc / "diskstats").write_text("\n".join(diskstats) + "\n")
    netdev = (proc / "net" / "dev").read_text().splitlines()
    eth0 = next(line for line in netdev if line.strip().startswith("eth0:"))
    for n in range(1, interfaces):
        netdev.append(eth0.replace("eth0:", f"eth{n}:"))
        shutil.copytree(root / "sys" / "class" / "net" / "eth0", root / "sys" / "class" / "net" / f"eth{n}")
    (proc / "net" / "dev").write_text("\n".join(netdev) + "\n")
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _wait_http(port: int, path: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port}{path} within {timeout}s")


def _start_agent(interval: str, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hypermesh.cli.main", "agent", "--listen", f"127.0.0.1:{port}", "--interval", interval,
         *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_http(port, "/healthz")
    return proc, port


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class Target:
    def __init__(self, name: str, pid: int, port: int, accept: str | None) -> None:
        self.name = name
        self.pid = pid
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.headers = {"Accept": accept} if accept else {}
        self.latencies_ms: list[float] = []
        self.cpu_s = 0.0
        self.samples = 0
        self.bytes = 0

    def scrape(self) -> bytes:
        self.conn.request("GET", "/metrics", headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{self.name}: HTTP {response.status}")
        return body

    def measure(self, count: int) -> None:
        clock = time.perf_counter
        try:  # untimed: reconnects if the server closed the idle keep-alive connection meanwhile
            self.scrape()
        except (http.client.RemoteDisconnected, ConnectionError):
            self.conn.close()
            self.scrape()
        cpu_before = _cpu_seconds(self.pid)
        for _ in range(count):
            start = clock()
            self.scrape()
            self.latencies_ms.append((clock() - start) * 1000)
        self.cpu_s += _cpu_seconds(self.pid) - cpu_before

    def figures(self) -> dict[str, float]:
        values = sorted(self.latencies_ms)
        body = self.scrape().decode()
        samples = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
        return {
            "scrape_median_ms": round(statistics.median(values), 3),
            "scrape_p95_ms": round(values[int(0.95 * len(values))], 3),
            "cpu_per_scrape_ms": round(self.cpu_s * 1000 / len(values), 3),
            "samples": samples,
            "body_bytes": len(body),
            "rss_mb": _rss_mb(self.pid),
        }


def _idle_cpu_percent(pid: int, seconds: float) -> float:
    before = _cpu_seconds(pid)
    time.sleep(seconds)
    return round((_cpu_seconds(pid) - before) / seconds * 100, 2)


def _ratio(ours: dict[str, float], peer: dict[str, float], key: str) -> float:
    return round(ours[key] / peer[key], 3)


def run() -> dict[str, object]:
    exporter_bin = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"
    exporter_port = _free_port()
    exporter = subprocess.Popen(
        [exporter_bin, "--no-collector.systemd", f"--web.listen-address=127.0.0.1:{exporter_port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    scratch = tempfile.TemporaryDirectory(prefix="hypermesh-bench-")
    agent, agent_port = _start_agent("1")
    big, big_port = _start_agent("1", "--root", str(synthetic_root(Path(scratch.name))))
    out: dict[str, object] = {}
    try:
        _wait_http(exporter_port, "/metrics")
        targets = [
            Target("node_exporter", exporter.pid, exporter_port, None),
            Target("agent_text", agent.pid, agent_port, None),
            Target("agent_openmetrics", agent.pid, agent_port, PROMETHEUS_ACCEPT),
            Target("agent_text_32cpu_root", big.pid, big_port, None),
            Target("agent_openmetrics_32cpu_root", big.pid, big_port, PROMETHEUS_ACCEPT),
        ]
        for target in targets:  # warm up: caches, first allocations, Go's first GC
            for _ in range(50):
                target.scrape()
        for _ in range(3):  # interleaved rounds, so a noisy moment hits every target alike
            for target in targets:
                target.measure(SCRAPES // 3)
        figures = {target.name: target.figures() for target in targets}
        out.update(figures)
        node = figures["node_exporter"]
        for name in ("agent_text", "agent_openmetrics", "agent_text_32cpu_root", "agent_openmetrics_32cpu_root"):
            out[f"ratio_scrape_median_{name}_vs_node_exporter"] = _ratio(figures[name], node, "scrape_median_ms")
            out[f"ratio_cpu_per_scrape_{name}_vs_node_exporter"] = _ratio(figures[name], node, "cpu_per_scrape_ms")
        # Issue 5: at least as many samples as node_exporter, on this very machine (the live root), same run.
        out["samples_per_scrape"] = {
            "node_exporter": node["samples"],
            "agent_live": figures["agent_text"]["samples"],
            "agent_32cpu_root": figures["agent_text_32cpu_root"]["samples"],
        }
        out["ratio_samples_agent_live_vs_node_exporter"] = _ratio(figures["agent_text"], node, "samples")
        out["samples_live_at_least_node_exporter"] = figures["agent_text"]["samples"] >= node["samples"]
        out["samples_32cpu_root_at_least_node_exporter"] = (
            figures["agent_text_32cpu_root"]["samples"] >= node["samples"]
        )
        out["agent_rss_mb"] = _rss_mb(agent.pid)
        out["node_exporter_rss_mb"] = _rss_mb(exporter.pid)
        for target in targets:
            target.conn.close()
        _stop(big)
        time.sleep(1.0)
        out["agent_cpu_percent_at_1s_interval"] = _idle_cpu_percent(agent.pid, 10.0)
    finally:
        _stop(agent)
        _stop(big)
        _stop(exporter)
        scratch.cleanup()

    fast, _ = _start_agent("0.01")
    try:
        time.sleep(2.0)
        out["agent_cpu_percent_at_100hz"] = _idle_cpu_percent(fast.pid, 10.0)
        out["agent_rss_mb_at_100hz"] = _rss_mb(fast.pid)
    finally:
        _stop(fast)
    out["goals"] = {
        "scrape_median_and_cpu_ratio_max": 0.5,
        "agent_rss_mb_max": 50,
        "cpu_percent_at_1s_max": 1.0,
        "cpu_percent_at_100hz_max": 5.0,
    }
    live = ("agent_text", "agent_openmetrics")
    out["goal_met"] = {
        "scrape_median_le_half_node_exporter": all(
            out[f"ratio_scrape_median_{n}_vs_node_exporter"] <= 0.5 for n in live
        ),
        "cpu_per_scrape_le_half_node_exporter": all(
            out[f"ratio_cpu_per_scrape_{n}_vs_node_exporter"] <= 0.5 for n in live
        ),
        "samples_at_least_node_exporter": out["samples_live_at_least_node_exporter"],
        "rss_le_50mb": max(out["agent_rss_mb"], out["agent_rss_mb_at_100hz"]) <= 50,
        "cpu_at_1s_le_1pct": out["agent_cpu_percent_at_1s_interval"] <= 1.0,
        "cpu_at_100hz_le_5pct": out["agent_cpu_percent_at_100hz"] <= 5.0,
    }
    # The issue measured node_exporter at 3.2 ms of CPU per scrape; how much slower it is here, in the same run,
    # scales the agent's absolute CPU goals to that machine.
    slowdown = node["cpu_per_scrape_ms"] / REFERENCE_NODE_EXPORTER_CPU_PER_SCRAPE_MS
    out["machine_slowdown_vs_issue_reference"] = round(slowdown, 2)
    out["goal_met_scaled_to_reference"] = {
        "cpu_at_1s_le_1pct": out["agent_cpu_percent_at_1s_interval"] / slowdown <= 1.0,
        "cpu_at_100hz_le_5pct": out["agent_cpu_percent_at_100hz"] / slowdown <= 5.0,
    }
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
