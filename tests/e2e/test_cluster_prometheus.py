"""hypermesh cluster status --source prometheus=URL: a real Prometheus scraping 3 agents (and one dead target) gives
the same totals and the same failed node as asking the agents directly."""

from __future__ import annotations

import contextlib
import json
import subprocess

import pytest

from tests.conftest import require_binary
from tests.fixtures.agent.agent_process import AgentProcess
from tests.integration.cluster_support import cluster, free_port, wait_until

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]


def prometheus_query(url: str, expr: str) -> list:
    import urllib.parse
    import urllib.request

    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=10) as r:
        return json.load(r)["data"]["result"]


def test_prometheus_gives_the_totals_and_failures_of_the_direct_fan_out(tmp_path):
    binary = require_binary("prometheus")
    dead = f"127.0.0.1:{free_port()}"
    with contextlib.ExitStack() as stack:
        agents = [stack.enter_context(AgentProcess("--interval", "0.5")) for _ in range(3)]
        targets = [a.url.removeprefix("http://") for a in agents] + [dead]
        # The targets reach Prometheus as deploy/prometheus/prometheus-cluster.yml has them: file_sd, written by us.
        sd_file = tmp_path / "agents.json"
        nodes = [arg for t in targets for arg in ("--node", f"http://{t}")]
        written = cluster([], "targets", *nodes, "--output", str(sd_file))
        assert written.returncode == 0 and "4 agents written" in written.stderr, written.stderr
        assert [g["targets"] for g in json.loads(sd_file.read_text())] == [[t] for t in targets]
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: hypermesh\n    file_sd_configs:\n"
            f"      - files: ['{sd_file}']\n        refresh_interval: 1s\n"
        )
        port = free_port()
        log = stack.enter_context((tmp_path / "prometheus.log").open("wb"))
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        stack.callback(process.wait, 15)
        stack.callback(process.terminate)
        url = f"http://127.0.0.1:{port}"

        def scraped() -> bool:
            try:
                up = prometheus_query(url, 'up{job="hypermesh"}')
                rates = prometheus_query(url, "rate(hypermesh_cpu_seconds_total[2m])")
            except OSError:
                return False
            return (
                len(up) == 4
                and all(u["metric"].get("node_id") for u in up)
                and len({r["metric"]["instance"] for r in rates}) == 3
            )

        wait_until(scraped, 45, "Prometheus scraped every target twice")
        out = cluster([], "status", "--source", f"prometheus={url}", "--json")
        assert out.returncode == 0, out.stderr
        via = json.loads(out.stdout)
        direct = json.loads(cluster([], "status", *nodes, "--json").stdout)
        for key in ("logical_cores", "memory_total_bytes"):
            assert via[key] == direct[key] > 0, key
        assert via["summary"]["nodes"] == direct["summary"]["nodes"] == 4
        assert via["summary"]["current"] == direct["summary"]["current"] == 3
        assert [f["node_id"] for f in via["summary"]["failed"]] == [dead]
        assert [f["node_id"] for f in direct["summary"]["failed"]] == [dead]
        assert "refused" in via["summary"]["failed"][0]["reason"]  # Prometheus' own scrape error, passed on
        assert via["versions"] == direct["versions"]
        for node in via["nodes"]:
            if node["error"] is None:
                assert 0.0 <= node["cpu_percent"] <= 100.0
                assert 0.0 < node["memory_percent"] < 100.0
        strict = cluster([], "status", "--source", f"prometheus={url}", "--strict")
        assert strict.returncode == 1 and "1 of 4" in strict.stderr
        assert "capacity:" in cluster([], "status", "--source", f"prometheus={url}").stdout
        wrong = cluster([], "status", "--source", f"prometheus={url}", "--job", "nope")
        assert wrong.returncode == 1 and "--job" in wrong.stderr and wrong.stderr.count("\n") == 1


def test_the_cluster_prometheus_config_is_valid():
    promtool = require_binary("promtool")
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "prometheus-cluster.yml"
    out = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
