"""The metrics runner's outcomes (families, no data, failure), its node_read step, and the family descriptions.

No live kernel: the collectors here are made for the test, or read the recorded fixture root.
"""

from __future__ import annotations

import logging
from pathlib import Path

import prometheus_client.utils  # noqa: F401 - imported here: its import reads /proc/stat (ProcessCollector)
import pytest

from hypermesh.agent import metrics
from hypermesh.agent.guards import AgentStats
from hypermesh.agent.metrics import NODE_READ, Desc, NoData, Scrape, collect, counter, gauge
from hypermesh.agent.metrics.collectors import PressureCollector
from hypermesh.agent.programs import NOT_PROBED
from hypermesh.model import Counters
from hypermesh.platform.linux import LinuxBackend
from hypermesh.sampling.sampler import Sampler

ROOT = Path(__file__).parent.parent / "fixtures" / "agent" / "root"
VALUE = gauge("hypermesh_test_value", "A value.")


class Produces:
    def __init__(self, area: str, value: float = 1.0, reads_node_stats: bool = False) -> None:
        self.area = area
        self.value = value
        self.reads_node_stats = reads_node_stats
        self.seen: list[object] = []

    def collect(self, scrape: Scrape) -> list[metrics.Family]:
        if self.reads_node_stats:
            self.seen.append(scrape.node_stats)
        return [VALUE.value(self.value, (("area", self.area),))]


class Empty:
    """Has nothing on this host, like a cpufreq collector on a VM."""

    area = "empty"
    sources = ("pressure/cpu",)

    def collect(self, scrape: Scrape) -> list[metrics.Family]:
        raise NoData("no such device here")


class Broken:
    area = "broken"

    def collect(self, scrape: Scrape) -> list[metrics.Family]:
        raise OSError("/proc/broken: Input/output error")


def scrape(read_node_stats=None, unreadable=None) -> Scrape:
    def no_counters() -> Counters:
        raise AssertionError("no collector here reads the counters")

    return Scrape(
        no_counters, None, NOT_PROBED, AgentStats(), None, read_node_stats, (lambda: unreadable) if unreadable else None
    )


def outcome(families: list[metrics.Family], name: str) -> dict[str, float]:
    return {
        dict(labels)["collector"]: value
        for family in families
        if family.name == name
        for labels, value in family.samples
    }


def test_no_data_is_success_without_families_and_is_logged_apart_from_failures(caplog):
    caplog.set_level(logging.DEBUG, logger="hypermesh.agent")
    families, failures = collect([Produces("one"), Empty(), Broken()], scrape())
    assert outcome(families, "hypermesh_scrape_collector_success") == {"one": 1.0, "empty": 1.0, "broken": 0.0}
    assert set(outcome(families, "hypermesh_scrape_collector_duration_seconds")) == {"one", "empty", "broken"}
    assert [f.area for f in families if f.name == VALUE.name] == ["one"]
    assert failures == ["broken: OSError: /proc/broken: Input/output error"]
    no_data = [r for r in caplog.records if "no data" in r.getMessage()]
    assert [(r.levelno, r.getMessage()) for r in no_data] == [
        (logging.DEBUG, "collector empty: no data: no such device here")
    ]


def test_no_data_from_an_unreadable_source_is_a_failure():
    # "Nothing here" and "could not look" must not both say success.
    families, failures = collect(
        [Empty()], scrape(unreadable={"pressure/cpu": "/proc/pressure/cpu: Permission denied"})
    )
    assert outcome(families, "hypermesh_scrape_collector_success") == {"empty": 0.0}
    assert failures == ["empty: cannot read /proc/pressure/cpu: Permission denied"]


def test_node_stats_are_read_once_as_their_own_step_before_the_first_collector_that_reads_them():
    now = [0.0]
    reads = []
    stats = object()

    def read() -> object:
        reads.append(1)
        now[0] += 5.0  # the reading's own time
        return stats

    first, second = Produces("first", reads_node_stats=True), Produces("second", reads_node_stats=True)
    families, failures = collect([Produces("before"), first, second], scrape(read), clock=lambda: now[0])
    assert failures == [] and len(reads) == 1
    assert first.seen == [stats] and second.seen == [stats]
    durations = outcome(families, "hypermesh_scrape_collector_duration_seconds")
    assert list(durations) == ["before", NODE_READ, "first", "second"]
    assert durations == {"before": 0.0, NODE_READ: 5.0, "first": 0.0, "second": 0.0}


def test_without_a_node_stats_reader_its_collectors_have_no_data():
    families, failures = collect([Produces("node", reads_node_stats=True)], scrape())
    assert failures == []
    assert outcome(families, "hypermesh_scrape_collector_success") == {NODE_READ: 1.0, "node": 1.0}
    assert [f for f in families if f.name == VALUE.name] == []


def test_a_failed_node_read_is_not_retried_and_fails_its_collectors_with_its_reason():
    reads = []

    def read() -> object:
        reads.append(1)
        raise PermissionError("/proc/meminfo: Permission denied")

    collectors = [Produces("a", reads_node_stats=True), Produces("b", reads_node_stats=True), Produces("c")]
    families, failures = collect(collectors, scrape(read))
    assert len(reads) == 1
    assert outcome(families, "hypermesh_scrape_collector_success") == {NODE_READ: 0.0, "a": 0.0, "b": 0.0, "c": 1.0}
    assert failures[0] == "node_read: PermissionError: /proc/meminfo: Permission denied"
    assert all("/proc/meminfo: Permission denied" in f for f in failures[1:]) and len(failures) == 3


def test_a_kernel_without_psi_gives_no_pressure_and_no_failure():
    sampler = Sampler(backend=LinuxBackend(root=str(ROOT)))
    counters = sampler.counters()
    assert counters.pressure is not None  # the recorded root has PSI: remove it as an older kernel would
    without = Counters(**{**{f: getattr(counters, f) for f in counters._fields}, "pressure": None})
    with_psi, _ = collect([PressureCollector()], Scrape(lambda: counters, None, NOT_PROBED, AgentStats()))
    families, failures = collect([PressureCollector()], Scrape(lambda: without, None, NOT_PROBED, AgentStats()))
    assert failures == []
    assert outcome(families, "hypermesh_scrape_collector_success") == {"pressure": 1.0}
    assert [f.name for f in families] == [
        "hypermesh_scrape_collector_success",
        "hypermesh_scrape_collector_duration_seconds",
    ]
    assert "hypermesh_pressure_memory_waiting_seconds_total" in {f.name for f in with_psi}


def test_a_description_is_checked_once_and_emits_one_sample_families():
    with pytest.raises(ValueError, match="must end in _total"):
        counter("hypermesh_test_events", "Events.")
    with pytest.raises(ValueError, match="unknown metric type"):
        Desc("hypermesh_test_summary", "summary", "A summary.")
    family = gauge("hypermesh_test_bytes", "Bytes.", "bytes").value(3.0, (("device", "vda"),))
    assert (family.name, family.kind, family.help, family.unit) == ("hypermesh_test_bytes", "gauge", "Bytes.", "bytes")
    assert family.samples == [((("device", "vda"),), 3.0)]
    text = metrics.TextWriter().render([family]).decode()
    assert (
        text
        == '# HELP hypermesh_test_bytes Bytes.\n# TYPE hypermesh_test_bytes gauge\nhypermesh_test_bytes{device="vda"} 3.0\n'
    )
