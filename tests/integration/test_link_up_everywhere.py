"""Profile, /v1/assets and hypermesh_network_up say the same "up" for every interface, and it is what ip(8) says.

ip(8) is the independent source: its flags list carries UP (IFF_UP) and LOWER_UP (the carrier), and its operstate
is the kernel's. lo was 0 in the metrics (operstate "unknown") while the profile called it up.
"""

from __future__ import annotations

import json
import subprocess

import httpx
from prometheus_client.parser import text_string_to_metric_families as parse_text

import hypermesh
from tests.conftest import require_binary
from tests.fixtures.agent.agent_process import AgentProcess, wait_until


def ip_says_up() -> dict[str, bool]:
    require_binary("ip")
    links = json.loads(subprocess.run(["ip", "-j", "link", "show"], capture_output=True, check=True).stdout)
    out = {}
    for link in links:
        flags, state = set(link["flags"]), link.get("operstate", "UNKNOWN")
        out[link["ifname"]] = "UP" in flags and (state == "UP" or (state == "UNKNOWN" and "LOWER_UP" in flags))
    return out


def test_profile_assets_and_metrics_agree_on_up() -> None:
    before = ip_says_up()
    with AgentProcess("--interval", "1") as process, httpx.Client(base_url=process.url, timeout=10) as client:
        assert wait_until(lambda: client.get("/healthz").status_code == 200, 10)
        assets = {
            a["id"]: a["details"]["up"] for a in client.get("/v1/assets").json()["assets"] if a["kind"] == "network"
        }
        metrics = {
            s.labels["interface"]: s.value == 1.0
            for family in parse_text(client.get("/metrics").text)
            for s in family.samples
            if s.name == "hypermesh_network_up"
        }
    profile = {n.name: n.up for n in hypermesh.profile().network}
    after = ip_says_up()
    assert profile["lo"] is True and metrics["lo"] is True  # lo is no network asset: nothing to allocate there
    assert "lo" not in assets and assets
    # Other tests create links and bring them up or down meanwhile: compare those that stayed as they were.
    steady = {name for name in before.keys() & after.keys() if before[name] == after[name]}
    assert "lo" in steady
    for name in steady & profile.keys() & assets.keys() & metrics.keys():
        assert profile[name] == assets[name] == metrics[name] == after[name], name
