"""The whole /metrics output against a recorded procfs/sysfs root, and the fast writer against prometheus_client.

The golden file is regenerated with ``HYPERMESH_UPDATE_GOLDEN=1 pytest tests/integration/test_agent_metrics.py``;
review its diff like code: every changed line is a changed metric.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from hypermesh.agent import metrics
from hypermesh.agent.guards import AgentStats
from hypermesh.agent.programs import EbpfStatus
from hypermesh.model_node import NodeStats
from hypermesh.platform.linux import LinuxBackend
from hypermesh.sampling.sampler import Sampler
from tests.conftest import require_binary
from tests.fixtures.agent.reference_registry import ClientRegistry

FIXTURES = Path(__file__).parent.parent / "fixtures" / "agent"
ROOT = FIXTURES / "root"
GOLDEN = FIXTURES / "metrics.golden.prom"
DOCS = Path(__file__).parent.parent.parent / "docs" / "metrics.md"


class RecordedProbe:
    """The eBPF probe of the golden root: only what /metrics exports of a ProbeReport, its yes/no answers by name."""

    def feature_flags(self) -> dict[str, bool]:
        return {"bpf_syscall": True, "btf": True, "program_types.xdp": True, "tracepoint": True, "kprobe": False}


EBPF_STATUS = EbpfStatus(available=True, reason=None, probe=RecordedProbe())  # type: ignore[arg-type]
STATS = AgentStats(samples=42, in_flight=1, rejected_in_flight=3, rejected_timeout=0)


def fixed_time(read: Callable[[], NodeStats]) -> Callable[[], NodeStats]:
    """The node stats of a recorded root with the clock reading pinned (the only value not from its files)."""

    def read_pinned() -> NodeStats:
        stats = read()
        return NodeStats(**{**{f: getattr(stats, f) for f in stats._fields}, "timestamp": 1795600000.0})

    return read_pinned


def fixture_families() -> list[metrics.Family]:
    backend = LinuxBackend(root=str(ROOT))
    sampler = Sampler(backend=backend)
    scrape = metrics.Scrape(
        sampler.counters, backend.profile(), EBPF_STATUS, STATS, read_node_stats=fixed_time(sampler.node_stats)
    )
    families, failures = metrics.collect(metrics.default_collectors("0.0.0-golden"), scrape, clock=lambda: 0.0)
    assert failures == []
    return families


def test_metrics_of_the_fixture_root_match_the_golden_file():
    text = metrics.TextWriter().render(fixture_families()).decode()
    if os.environ.get("HYPERMESH_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_golden_values_come_from_the_fixture_files():
    """Independent reading of the recorded files: the golden numbers are the kernel's, converted to base units."""
    text = GOLDEN.read_text()
    stat = (ROOT / "proc" / "stat").read_text().splitlines()
    cpu0 = next(line for line in stat if line.startswith("cpu0 ")).split()
    ticks = os.sysconf("SC_CLK_TCK")
    assert f'hypermesh_cpu_seconds_total{{cpu="0",mode="user"}} {int(cpu0[1]) / ticks!r}\n' in text
    meminfo = dict(line.split(":", 1) for line in (ROOT / "proc" / "meminfo").read_text().splitlines())
    total = int(meminfo["MemTotal"].split()[0]) * 1024
    assert re.search(r"^hypermesh_memory_total_bytes (\S+)$", text, re.M).group(1) == _go(total)
    netdev = (ROOT / "proc" / "net" / "dev").read_text()
    lo = next(line for line in netdev.splitlines() if line.strip().startswith("lo:")).split(":")[1].split()
    assert f'hypermesh_network_receive_bytes_total{{interface="lo"}} {_go(int(lo[0]))}\n' in text
    assert f'hypermesh_network_transmit_packets_total{{interface="lo"}} {_go(int(lo[9]))}\n' in text
    diskstats = (ROOT / "proc" / "diskstats").read_text()
    vda = next(line.split() for line in diskstats.splitlines() if line.split()[2] == "vda")
    assert f'hypermesh_disk_read_bytes_total{{device="vda"}} {_go(int(vda[5]) * 512)}\n' in text
    load1 = float((ROOT / "proc" / "loadavg").read_text().split()[0])
    assert f"hypermesh_load1 {load1!r}\n" in text
    # Node stats: each from its own recorded file, read here without the agent's parsers.
    assert f"hypermesh_meminfo_active_anon_bytes {_go(int(meminfo['Active(anon)'].split()[0]) * 1024)}\n" in text
    assert f"hypermesh_meminfo_huge_pages {_go(int(meminfo['HugePages_Total']))}\n" in text
    vmstat = dict(line.split() for line in (ROOT / "proc" / "vmstat").read_text().splitlines())
    assert f"hypermesh_vmstat_pgmajfault_total {_go(int(vmstat['pgmajfault']))}\n" in text
    snmp = [
        line.split() for line in (ROOT / "proc" / "net" / "snmp").read_text().splitlines() if line.startswith("Tcp:")
    ]
    retrans = int(snmp[1][snmp[0].index("RetransSegs")])
    assert f'hypermesh_netstat_tcp_total{{field="RetransSegs"}} {_go(retrans)}\n' in text
    frsize, blocks, *_ = json.loads((ROOT / "statvfs.json").read_text())["/"]
    fs_labels = 'device="/dev/vda",fstype="ext4",mountpoint="/"'
    assert f"hypermesh_filesystem_size_bytes{{{fs_labels}}} {_go(frsize * blocks)}\n" in text
    vda_fields = vda[3:]
    assert f'hypermesh_disk_flush_requests_total{{device="vda"}} {_go(int(vda_fields[15]))}\n' in text
    assert f'hypermesh_disk_io_time_weighted_seconds_total{{device="vda"}} {_go(int(vda_fields[10]) / 1000)}\n' in text
    idle = (ROOT / "sys/devices/system/cpu/cpu1/cpuidle/state1/time").read_text()
    assert f'hypermesh_cpu_idle_state_seconds_total{{cpu="1",state="haltpoll idle"}} {_go(int(idle) / 1e6)}\n' in text
    assert 'hypermesh_scrape_collector_success{collector="cpu"} 1.0\n' in text
    assert 'hypermesh_ebpf_feature_supported{feature="program_types.xdp"} 1.0\n' in text


def _go(value: float) -> str:
    from prometheus_client.utils import floatToGoString

    return floatToGoString(value)


def test_fast_writer_is_byte_identical_to_prometheus_client():
    families = fixture_families()
    registry = ClientRegistry([c.area for c in metrics.default_collectors("x")])
    registry.load(families)
    reference = registry.render_text()
    writer = metrics.TextWriter()
    assert writer.render(families) == reference
    assert writer.render(families) == reference  # second time from the cache
    reference_om = registry.render_openmetrics()
    assert writer.render(families, openmetrics=True) == reference_om
    assert writer.render(families, openmetrics=True) == reference_om


def test_fast_writer_escapes_and_formats_like_prometheus_client():
    family = metrics.Family("hypermesh_test_value", "gauge", 'help with \\ backslash\nand "quotes"')
    family.add(1.0, device='a"b')
    family.add(-2.5, device="back\\slash")
    family.add(float("nan"), device="new\nline")
    family.add(float("inf"), device="inf")
    family.add(float("-inf"), device="-inf")
    family.add(2**64 - 1, device="u64")
    family.add(1e-7, device="tiny")
    family.add(123456789.0, device="big")
    counter = metrics.Family("hypermesh_test_events_total", "counter", "Events.")
    counter.add(7, a="1", b="2")
    registry = ClientRegistry(["test"])
    registry.load([family, counter])
    assert metrics.TextWriter().render([family, counter]) == registry.render_text()
    assert metrics.TextWriter().render([family, counter], openmetrics=True) == registry.render_openmetrics()


def test_openmetrics_output_parses_with_units_and_eof():
    text = metrics.TextWriter().render(fixture_families(), openmetrics=True).decode()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(text)}
    assert families["hypermesh_disk_read_bytes"].type == "counter"
    assert families["hypermesh_disk_read_bytes"].unit == "bytes"
    assert families["hypermesh_memory_total_bytes"].unit == "bytes"


def normalized(text: str) -> str:
    """Drop what differs between two scrapes of the same root: timings, the agent's own counters, the live
    eBPF probe (not part of the fixture), the version label, and the assets: the running agent reads them live
    (the CPUs it is bound to, its own ledger), the golden scrape has no asset reader."""
    volatile = (
        "hypermesh_scrape_collector_duration_seconds",
        "hypermesh_agent_",
        "hypermesh_ebpf_",
        "hypermesh_time_",
        "hypermesh_asset_",
        "hypermesh_allocation_",
        "hypermesh_gpu_",
    )
    lines = [line for line in text.splitlines() if not any(v in line for v in volatile)]
    return re.sub(r'version="[^"]*"', 'version="V"', "\n".join(lines))


def test_the_running_agent_serves_the_golden_metrics_of_a_fixture_root():
    import httpx

    from tests.fixtures.agent.agent_process import AgentProcess

    with AgentProcess("--root", str(ROOT), "--interval", "0.5") as agent:
        served = httpx.get(f"{agent.url}/metrics", timeout=10).text
    assert normalized(served) == normalized(GOLDEN.read_text())
    assert "hypermesh_cpu_seconds_total" in normalized(served)


def test_promtool_accepts_the_golden_file():
    promtool = require_binary("promtool")
    result = subprocess.run(
        [promtool, "check", "metrics"], input=GOLDEN.read_text(), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_a_failing_collector_is_reported_and_does_not_spoil_the_scrape():
    class Broken:
        area = "broken"

        def collect(self, scrape):
            raise OSError("/proc/broken: No such file or directory")

    backend = LinuxBackend(root=str(ROOT))
    scrape = metrics.Scrape(Sampler(backend=backend).counters, None, EBPF_STATUS, STATS)
    families, failures = metrics.collect([metrics.CpuCollector(), Broken(), metrics.AssetsCollector("x")], scrape)
    text = metrics.TextWriter().render(families).decode()
    assert 'hypermesh_scrape_collector_success{collector="cpu"} 1.0' in text
    assert 'hypermesh_scrape_collector_success{collector="broken"} 0.0' in text
    # No profile: the assets collector fails too, and says why.
    assert 'hypermesh_scrape_collector_success{collector="assets"} 0.0' in text
    assert len(failures) == 2 and "No such file" in failures[0]
    assert "hypermesh_cpu_seconds_total" in text


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        ("", False),
        ("*/*", False),
        ("text/plain;version=0.0.4", False),
        ("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", True),
        ("text/plain;q=1,application/openmetrics-text;q=0.5", False),
        ("application/openmetrics-text;q=0", False),
        ("application/openmetrics-text; version=0.0.1", True),
    ],
)
def test_content_negotiation(accept, openmetrics):
    assert metrics.wants_openmetrics(accept) is openmetrics


def test_docs_list_every_metric_with_its_type():
    docs = DOCS.read_text()
    families = fixture_families()
    names = {(f.name, f.kind) for f in families}
    for name, kind in names:
        row = re.search(rf"^\| `{re.escape(name)}` \| (\w+) \|", docs, re.M)
        assert row, f"{name} is missing from docs/metrics.md"
        assert row.group(1) == kind, f"{name}: docs say {row.group(1)}, the agent exports {kind}"
