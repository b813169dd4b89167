"""The agent's HTTP API, served by real uvicorn on 127.0.0.1, checked against the kernel's own files."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.conftest import require_binary
from tests.fixtures.agent.agent_process import AgentProcess, wait_until
from tests.kernel_facts import online_cpus

USER_HZ = os.sysconf("SC_CLK_TCK")
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
DATA_PATHS = ["/metrics", "/v1/profile", "/v1/sample", "/v1/samples", "/v1/assets", "/v1/ebpf", "/healthz"]


@pytest.fixture(scope="module")
def agent():
    with AgentProcess("--interval", "0.2") as process:
        client = httpx.Client(base_url=process.url, timeout=10)
        assert wait_until(lambda: client.get("/healthz").json()["samples_taken"] >= 3, 10)
        yield client
        client.close()


def proc_stat_cpu_seconds() -> dict[tuple[str, str], float]:
    modes = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    out = {}
    with open("/proc/stat") as file:
        for line in file:
            if line.startswith("cpu") and line[3].isdigit():
                fields = line.split()
                cpu = fields[0][3:]
                for mode, value in zip(modes, fields[1:9], strict=True):
                    out[(cpu, mode)] = int(value) / USER_HZ
    return out


def meminfo_bytes(key: str) -> int:
    with open("/proc/meminfo") as file:
        for line in file:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def read_file(path: str) -> str:
    with open(path) as file:
        return file.read()


def samples_by_name(text: str) -> dict[str, list]:
    out: dict[str, list] = {}
    for family in parse_text(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def test_metrics_cpu_seconds_lie_between_two_reads_of_proc_stat(agent):
    before = proc_stat_cpu_seconds()
    response = agent.get("/metrics")
    after = proc_stat_cpu_seconds()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    series = samples_by_name(response.text)["hypermesh_cpu_seconds_total"]
    assert {(s.labels["cpu"], s.labels["mode"]) for s in series} == set(before)
    for s in series:
        key = (s.labels["cpu"], s.labels["mode"])
        assert before[key] - 1e-6 <= s.value <= after[key] + 1e-6, key


def test_metrics_memory_and_network_match_the_kernel(agent):
    rx_before = int(read_file("/sys/class/net/lo/statistics/rx_bytes"))
    text = agent.get("/metrics").text
    rx_after = int(read_file("/sys/class/net/lo/statistics/rx_bytes"))
    by_name = samples_by_name(text)
    assert by_name["hypermesh_memory_total_bytes"][0].value == meminfo_bytes("MemTotal")
    lo = [s for s in by_name["hypermesh_network_receive_bytes_total"] if s.labels["interface"] == "lo"]
    assert len(lo) == 1
    assert rx_before <= lo[0].value <= rx_after
    # Every collector that can work on this machine did; each reported a duration.
    success = {s.labels["collector"]: s.value for s in by_name["hypermesh_scrape_collector_success"]}
    from hypermesh.agent.metrics import NODE_READ, default_collectors

    assert set(success) == {c.area for c in default_collectors("x")} | {NODE_READ}
    assert all(v == 1.0 for v in success.values()), success
    durations = by_name["hypermesh_scrape_collector_duration_seconds"]
    assert len(durations) == len(success)
    assert all(0 <= s.value < 5 for s in durations)


def test_metrics_follow_prometheus_conventions(agent):
    families = list(parse_text(agent.get("/metrics").text))
    assert len(families) > 20
    for family in families:
        assert family.documentation, f"{family.name} has no help text"
        assert family.name.startswith("hypermesh_")
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples), family.name
    names = {s.name for f in families for s in f.samples}
    # Counters are exported as counters, not pre-computed rates.
    assert not any(n.endswith(("_per_s", "_per_second", "_percent")) for n in names)


def test_promtool_check_metrics_finds_nothing(agent):
    promtool = require_binary("promtool")
    scrape = agent.get("/metrics").text
    result = subprocess.run([promtool, "check", "metrics"], input=scrape, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""


def test_openmetrics_when_the_scraper_asks_for_it(agent):
    response = agent.get("/metrics", headers={"accept": PROMETHEUS_ACCEPT})
    assert response.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert response.text.endswith("# EOF\n")
    families = {f.name: f for f in parse_openmetrics(response.text)}
    assert families["hypermesh_cpu_seconds"].type == "counter"
    assert families["hypermesh_cpu_seconds"].unit == "seconds"
    # And plain text when asked for text only.
    plain = agent.get("/metrics", headers={"accept": "text/plain;version=0.0.4"})
    assert plain.headers["content-type"].startswith("text/plain")


def test_openmetrics_output_parses_whole_and_promtool_only_repeats_its_known_counter_complaint(agent):
    # promtool 2.42 checks OpenMetrics with the text-format linter: it looks for HELP under a counter's sample name
    # (..._total) while OpenMetrics puts it under the family name, so it says "no help text" for every counter. It
    # says the same of prometheus_client's own OpenMetrics output: a promtool limitation, not ours. Whatever this
    # promtool says of a reference counter (its wording, or nothing at all in a version that fixed it) is the only
    # thing it may say of ours, counter by counter.
    promtool = require_binary("promtool")
    text = agent.get("/metrics", headers={"accept": PROMETHEUS_ACCEPT}).text
    families = list(parse_openmetrics(text))  # prometheus_client's strict OpenMetrics parser: the whole scrape
    assert len(families) > 100
    assert all(family.documentation for family in families)
    counters = [family.name for family in families if family.type == "counter"]
    assert counters

    def complaints(exposition: str) -> set[str]:
        result = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True)
        return set((result.stdout + result.stderr).strip().splitlines())

    from prometheus_client import CollectorRegistry, Counter
    from prometheus_client.openmetrics.exposition import generate_latest

    registry = CollectorRegistry()
    Counter("hm_reference_requests", "Requests served.", registry=registry).inc()
    reference = complaints(generate_latest(registry).decode())
    assert all("hm_reference_requests" in line for line in reference), reference  # about the counter, nothing else
    # Per sample the counter exposes: prometheus_client adds a _created sample, ours has only _total.
    exposed = {sample.name for family in families for sample in family.samples}
    expected = {
        line.replace("hm_reference_requests", name)
        for name in counters
        for line in reference
        if line.split()[0].replace("hm_reference_requests", name) in exposed
    }
    assert any(line.endswith("_total no help text") for line in expected) or not reference
    assert complaints(text) == expected


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        ("application/openmetrics-text;Q=0.1,text/plain;q=0.5", False),  # parameter names are case-insensitive
        ("text/plain;q=0.1, application/openmetrics-text;q=0.9", True),
        ("application/openmetrics-text;q=0", False),
        ("application/openmetrics-text;q=nan,text/plain;q=0.5", False),
        ("application/openmetrics-text;q=7,text/plain;q=0.5", False),  # not a weight: ignored
        ("Application/OpenMetrics-Text", True),
        ("*/*", False),
        ("", False),
    ],
)
def test_the_format_follows_the_accept_header_weights(agent, accept, openmetrics):
    response = agent.get("/metrics", headers={"accept": accept})
    assert response.headers["content-type"].startswith("application/openmetrics-text" if openmetrics else "text/plain")


def test_sample_is_a_fresh_rate_record(agent):
    sample = agent.get("/v1/sample").json()
    assert set(sample) == {"timestamp", "interval_s", "cpu", "memory", "disks", "network", "load"}
    assert abs(sample["timestamp"] - time.time()) < 5
    assert 0.1 < sample["interval_s"] < 1.0
    assert len(sample["cpu"]["per_core"]) == len(online_cpus())
    assert 0 <= sample["cpu"]["percent"] <= 100
    assert sample["memory"]["total_bytes"] == meminfo_bytes("MemTotal")
    loadavg = [float(v) for v in read_file("/proc/loadavg").split()[:3]]
    assert abs(sample["load"]["avg15"] - loadavg[2]) < 1.0


def test_samples_since_returns_only_newer_samples_in_order(agent):
    history = agent.get("/v1/samples").json()
    stamps = [s["timestamp"] for s in history["samples"]]
    assert history["interval_s"] == 0.2
    assert len(stamps) >= 3
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    middle = stamps[len(stamps) // 2]
    newer = agent.get("/v1/samples", params={"since": middle}).json()["samples"]
    assert newer and all(s["timestamp"] > middle for s in newer)
    assert len(agent.get("/v1/samples", params={"since": 0, "limit": 1}).json()["samples"]) == 1
    assert agent.get("/v1/samples", params={"since": time.time() + 3600}).json()["samples"] == []


def test_profile_assets_and_ebpf_describe_this_machine(agent):
    profile = agent.get("/v1/profile").json()
    assert profile["os"]["hostname"] == socket.gethostname()
    assert profile["cpu"]["logical_cores"] == len(online_cpus())
    # /v1/assets is the assets layer's snapshot (tests/integration/test_agent_assets.py compares it with the CLI's)
    assets = {(a["kind"], a["id"]): a for a in agent.get("/v1/assets").json()["assets"]}
    assert assets["cpu", "cpu"]["capacity"] == len(os.sched_getaffinity(0))
    limit = profile["limits"]["memory_limit_bytes"]
    total = meminfo_bytes("MemTotal")
    assert assets["memory", "memory"]["capacity"] == (total if limit is None else min(total, limit))
    ebpf = agent.get("/v1/ebpf").json()
    assert set(ebpf) >= {"available", "reason", "probe"}
    assert ebpf["available"] or ebpf["reason"]


@pytest.mark.ebpf
@pytest.mark.root
def test_ebpf_status_agrees_with_bpftools_own_probe(agent):
    # bpftool loads a minimal program of each type as the same user as the agent: an independent verdict.
    bpftool = require_binary("bpftool")
    probe = subprocess.run([bpftool, "-j", "feature", "probe", "kernel"], capture_output=True, text=True, timeout=60)
    have = json.loads(probe.stdout)["program_types"]
    ebpf = agent.get("/v1/ebpf").json()
    features = {f["name"]: f["supported"] for f in ebpf["probe"]["features"]}
    assert features["tracepoint"] is have["have_tracepoint_prog_type"]
    assert features["xdp_generic"] is have["have_xdp_prog_type"]
    assert ebpf["available"] is (have["have_tracepoint_prog_type"] or have["have_xdp_prog_type"])


def test_stream_pushes_each_new_sample(agent):
    stamps = []
    with agent.stream("GET", "/v1/stream") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                stamps.append(json.loads(line[6:])["timestamp"])
            if len(stamps) == 3:
                break
    assert stamps == sorted(stamps) and len(set(stamps)) == 3


@pytest.mark.parametrize("path", DATA_PATHS)
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_data_endpoints_answer_get_and_head_only(agent, path, method):
    assert agent.request(method, path).status_code == 405


@pytest.mark.parametrize("path", DATA_PATHS)
def test_head_has_headers_and_no_body(agent, path):
    response = agent.head(path)
    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize(
    "query",
    [
        "since=abc",
        "since=nan",
        "since=inf",
        "limit=0",
        "limit=x",
        "limit=100000",
        "color=blue",
        # Python's float()/int() take these; no client means them.
        "since=1_000",
        "since=%20%205",
        "since=5%20",
        "limit=1_0",
        "limit=%2010",
        "since=%C2%B2",
        "after=-1",
        "after=1_0",
        "after=1.5",
        # Given twice: one of them would be used silently.
        "since=0&since=1",
        "limit=1&limit=2",
        "after=0&after=1",
    ],
)
def test_bad_query_values_get_400_with_a_reason(agent, query):
    response = agent.get(f"/v1/samples?{query}")
    assert response.status_code == 400
    assert response.json()["error"]


def test_oversized_headers_get_4xx_not_a_hang(agent):
    response = agent.get("/v1/sample", headers={"x-filler": "a" * 64 * 1024})
    assert 400 <= response.status_code < 500


def test_unknown_path_is_404(agent):
    assert agent.get("/v2/nothing").status_code == 404


def test_an_unmatched_api_path_answers_json(agent):
    """Schemathesis found DELETE /v1/allocations/{id} with a newline in the id answering a text/plain 404: a path
    parameter stops at a newline, so no route matched. Under /v1/ every answer is JSON, that 404 included."""
    for method, path in (("DELETE", "/v1/allocations/a%0Ab"), ("GET", "/v1/no-such-thing")):
        response = agent.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.headers["content-type"] == "application/json", (method, path)
        assert "openapi.json" in response.json()["error"]


def test_openapi_lists_every_endpoint(agent):
    schema = agent.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    assert set(schema["paths"]) >= set(DATA_PATHS)
    # docs/agent.md says it describes them all, the stream and the page included.
    assert {"/v1/stream", "/", "/openapi.json"} <= set(schema["paths"])
    assert "text/event-stream" in schema["paths"]["/v1/stream"]["get"]["responses"]["200"]["content"]
    assert "text/html" in schema["paths"]["/"]["get"]["responses"]["200"]["content"]
    # Both formats /metrics speaks, and the refusals every endpoint can answer (docs/agent.md).
    assert set(schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {
        "text/plain",
        "application/openmetrics-text",
    }
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            expected = {"405", "431", "503"} | (set() if path == "/healthz" else {"401"})
            assert expected <= set(responses), (path, method)
            assert {"200", "201"} & set(responses), (path, method)
            for response in responses.values():
                if "$ref" in response:
                    name = response["$ref"].rsplit("/", 1)[1]
                    assert schema["components"]["responses"][name]["description"]
    # the ledger's writes (docs/assets.md, "The agent")
    assert set(schema["paths"]["/v1/allocations"]) == {"get", "post"}
    assert set(schema["paths"]["/v1/allocations/{id}"]) == {"delete"}


def test_what_openapi_says_each_refusal_looks_like_is_what_the_agent_answers(agent):
    assert agent.post("/v1/sample").status_code == 405
    assert agent.get("/v1/sample", headers={"x-filler": "a" * 17 * 1024}).status_code == 431
    response = agent.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].split(";")[0] == "application/openmetrics-text"


def test_dashboard_page_and_its_files_are_served_locally(agent):
    page = agent.get("/")
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert asset in page.text
        assert agent.get(asset).status_code == 200
    # No third-party origin anywhere: the dashboard must work without internet.
    for body in (page.text, agent.get("/static/app.js").text, agent.get("/static/style.css").text):
        assert "http://" not in body and "https://" not in body


def test_history_is_a_bounded_ring_buffer():
    # 1 s of history at 0.1 s: at most 11 samples kept, the newest ones, however long the agent runs.
    with AgentProcess("--interval", "0.1", "--history", "1") as process, httpx.Client(timeout=10) as client:
        assert wait_until(lambda: client.get(f"{process.url}/healthz").json()["samples_taken"] >= 25, 15)
        samples = client.get(f"{process.url}/v1/samples").json()["samples"]
        taken = client.get(f"{process.url}/healthz").json()["samples_taken"]
    assert 2 <= len(samples) <= 11
    assert taken >= 25
    assert time.time() - samples[-1]["timestamp"] < 2


def test_head_of_the_stream_ends_at_once_and_frees_the_connection_and_the_stream_slot():
    # A HEAD of /v1/stream used to start a real stream whose body the server dropped: the client could not reuse
    # its keep-alive connection (the next request hung) and, once it had sent one, the server never noticed it
    # leave, so each such HEAD held one of the --max-streams slots for good.
    with AgentProcess("--interval", "0.2", "--max-streams", "1") as process:
        with httpx.Client(base_url=process.url, timeout=3) as client:
            head = client.head("/v1/stream")
            assert head.status_code == 200
            assert head.headers["content-type"].startswith("text/event-stream")
            assert head.content == b""
            assert client.get("/healthz").status_code == 200  # same keep-alive connection, answered at once

        def the_stream_slot_is_free() -> bool:
            with httpx.Client(base_url=process.url, timeout=3) as client, client.stream("GET", "/v1/stream") as stream:
                return stream.status_code == 200 and next(stream.iter_lines()).startswith("data: ")

        assert wait_until(the_stream_slot_is_free, 5)


CLOCK_SHIM = os.path.join(os.path.dirname(__file__), "..", "fixtures", "agent", "clock_offset.c")


def test_the_stream_goes_on_when_the_wall_clock_steps_back(tmp_path):
    # The stream used to wait for a sample with a later Unix time than the last one sent: after the clock stepped
    # back (NTP, a resumed VM) every open dashboard froze until the clock had caught up, an hour for an hour.
    cc = require_binary("cc")
    shim = tmp_path / "clock_offset.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(shim), CLOCK_SHIM, "-ldl"], check=True, timeout=60)
    offset = tmp_path / "offset"
    offset.write_text("0")
    env = {"LD_PRELOAD": str(shim), "HM_CLOCK_OFFSET_FILE": str(offset)}
    with AgentProcess("--interval", "0.2", env=env) as process, httpx.Client(timeout=5) as client:
        stamps: list[float] = []
        ids: list[int] = []
        with client.stream("GET", f"{process.url}/v1/stream") as response:
            for line in response.iter_lines():
                if line.startswith("id: "):
                    ids.append(int(line[4:]))
                if not line.startswith("data: "):
                    continue
                stamps.append(json.loads(line[6:])["timestamp"])
                if len(stamps) == 3:
                    offset.write_text("3600")  # the clock steps back an hour
                if len(stamps) == 8:
                    break
        # The samples after the step arrived (a read timeout above otherwise), an hour earlier by the clock.
        assert stamps[-1] < stamps[2] - 3000
        assert ids == sorted(ids) and len(set(ids)) == len(ids)  # each event carries its sequence number
        assert client.get(f"{process.url}/healthz").json()["status"] == "ok"
        # A poller (the page's fallback) follows the sequence numbers too: since=<a time before the step> finds
        # nothing for an hour, after=<the last id seen> finds the new samples.
        before_step = stamps[2]
        time.sleep(0.6)
        assert client.get(f"{process.url}/v1/samples?since={before_step}").json()["samples"] == []
        polled = client.get(f"{process.url}/v1/samples?after={ids[-1]}").json()
        assert len(polled["samples"]) >= 2
        assert polled["sequence"] >= ids[-1] + len(polled["samples"])
        assert all(sample["timestamp"] < before_step - 3000 for sample in polled["samples"])


DOCS = Path(__file__).parent.parent.parent / "docs" / "metrics.md"
# Where docs/metrics.md says when a metric is missing: its row or its section names the condition.
CONDITIONAL = re.compile(r"\babsent\b|With `--ebpf", re.I)


def documented_metrics() -> dict[str, bool]:
    """{metric name: conditional?} from the tables of docs/metrics.md."""
    documented: dict[str, bool] = {}
    section = ""
    for line in DOCS.read_text().splitlines():
        if line.startswith("## "):
            section = line
        row = re.match(r"^\| `(hypermesh_[a-z0-9_]+)` \|", line)
        if row:
            documented[row.group(1)] = bool(CONDITIONAL.search(section) or CONDITIONAL.search(line))
    return documented


def test_every_documented_metric_is_exported_here_unless_conditional(agent):
    # The other direction (every exported metric is documented) is test_agent_metrics.py's.
    documented = documented_metrics()
    assert len(documented) > 200
    response = agent.get("/metrics")
    exported = {family.name for family in parse_text(response.text)}
    # prometheus_client's parser names counters without _total.
    exported |= {f"{name}_total" for name in exported}
    missing = sorted(name for name, conditional in documented.items() if not conditional and name not in exported)
    assert missing == [], "documented as always there, not exported on this machine"
    undocumented = sorted(
        family.name + ("_total" if family.type == "counter" else "")
        for family in parse_text(response.text)
        if family.name + ("_total" if family.type == "counter" else "") not in documented
    )
    assert undocumented == [], "exported on this machine, missing from docs/metrics.md"
