"""The agent's assets and allocation ledger: /v1/assets, /v1/allocations and the hypermesh_asset_* metrics, against the
CLI (``hypermesh assets``) on the same state directory, the ledger file itself, the kernel's cgroup counters, and
real clients: a loopback one, one in a network namespace (through a veth pair), and one with and without
basic-auth credentials.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import bcrypt
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.conftest import require, require_root
from tests.fixtures.agent.agent_process import AgentProcess, wait_until
from tests.fixtures.agent.gpu_root import AMD_DEVICE, gpu_root

MiB = 1 << 20


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hypermesh.cli.main", "assets", *args], capture_output=True, text=True, timeout=60
    )


def metric_samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out = {}
    for family in parse_text(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def ledger_ids(state_dir: Path) -> set[str]:
    """The ids in the ledger file, read with sqlite directly (read-only: no reap, no hypermesh code)."""
    db = sqlite3.connect(f"file:{state_dir / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        return {row[0] for row in db.execute("SELECT id FROM allocations")}
    finally:
        db.close()


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    with AgentProcess("--interval", "0.5", "--state-dir", str(state)) as process:
        client = httpx.Client(base_url=process.url, timeout=20)
        client.state_dir = state  # type: ignore[attr-defined]
        yield client
        for grant in client.get("/v1/allocations").json():
            client.delete(f"/v1/allocations/{grant['id']}")
        client.close()


def post(client: httpx.Client, **body: object) -> httpx.Response:
    return client.post("/v1/allocations", json=body)


def test_agent_and_cli_agree_on_assets_and_allocations(agent):
    state = str(agent.state_dir)
    made = post(agent, kind="cpu", amount="500m", owner="agent-test", id="agree-cpu")
    assert made.status_code == 201, made.text
    assert made.json()["amount"] == 0.5
    # the CLI writes, the agent reads: one ledger
    by_cli = cli("allocate", "memory", "64MiB", "--owner", "cli-test", "--id", "agree-mem", "--state-dir", state)
    assert by_cli.returncode == 0 and by_cli.stdout.strip() == "agree-mem", by_cli.stderr
    listed = cli("allocations", "--json", "--state-dir", state)
    assert listed.returncode == 0, listed.stderr
    assert agent.get("/v1/allocations").json() == json.loads(listed.stdout)
    assert {g["id"] for g in json.loads(listed.stdout)} == {"agree-cpu", "agree-mem"} == ledger_ids(agent.state_dir)

    served = agent.get("/v1/assets").json()
    printed = json.loads(cli("--json", "--state-dir", state).stdout)
    assert set(served) == set(printed) == {"timestamp", "assets", "errors", "problems"}
    # usage and health.since are readings of the moment; everything else is the same whoever asks
    stable = ("kind", "id", "unit", "capacity", "reserve", "allocated", "allocatable")

    def view(snapshot):
        return {(a["kind"], a["id"]): ([a[k] for k in stable], a["health"]["status"]) for a in snapshot["assets"]}

    assert view(served) == view(printed)
    assets = {(a["kind"], a["id"]): a for a in served["assets"]}
    # an independent source for the two capacities: the kernel's CPU mask and /proc/meminfo (or the cgroup limit)
    assert assets["cpu", "cpu"]["capacity"] == len(os.sched_getaffinity(0))
    assert assets["cpu", "cpu"]["allocated"] == 0.5
    assert assets["cpu", "cpu"]["allocatable"] == pytest.approx(len(os.sched_getaffinity(0)) - 0.5)
    assert assets["memory", "memory"]["allocated"] == 64 * MiB

    # and /metrics says the same
    text = agent.get("/metrics").text
    for name, field in (
        ("hypermesh_asset_capacity", "capacity"),
        ("hypermesh_asset_allocated", "allocated"),
        ("hypermesh_asset_allocatable", "allocatable"),
    ):
        samples = metric_samples(text, name)
        for (kind, asset_id), asset in assets.items():
            if asset[field] is None:
                continue
            key = (("asset", asset_id), ("kind", kind), ("unit", asset["unit"]))
            assert samples[key] == pytest.approx(asset[field]), (name, kind, asset_id)
    health = metric_samples(text, "hypermesh_asset_health")
    assert health[(("asset", "cpu"), ("kind", "cpu"), ("status", "ok"))] == 1.0
    assert health[(("asset", "cpu"), ("kind", "cpu"), ("status", "failed"))] == 0.0
    amounts = metric_samples(text, "hypermesh_allocation_amount")
    assert amounts == {
        (("allocation", "agree-cpu"), ("asset", "cpu"), ("kind", "cpu"), ("owner", "agent-test")): 0.5,
        (("allocation", "agree-mem"), ("asset", "memory"), ("kind", "memory"), ("owner", "cli-test")): 64.0 * MiB,
    }

    # released through the API: gone from the CLI's view and the file
    assert agent.delete("/v1/allocations/agree-cpu").status_code == 200
    assert agent.delete("/v1/allocations/agree-mem").json()["owner"] == "cli-test"
    assert agent.delete("/v1/allocations/agree-mem").status_code == 404
    assert json.loads(cli("allocations", "--json", "--state-dir", state).stdout) == []
    assert ledger_ids(agent.state_dir) == set()


def test_idempotent_by_id_and_refusals_say_what_is_left(agent):
    cores = len(os.sched_getaffinity(0))
    first = post(agent, kind="cpu", amount=1, owner="idem", id="idem-1")
    again = post(agent, kind="cpu", amount=1, owner="idem", id="idem-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    other = post(agent, kind="cpu", amount=0.25, owner="idem", id="idem-1")
    assert other.status_code == 409 and "already names another allocation" in other.json()["error"]
    refused = post(agent, kind="cpu", amount=cores, owner="greedy")
    assert refused.status_code == 409
    assert refused.json()["left"] == pytest.approx(cores - 1)
    assert f"{cores - 1:g} left of {cores:g}" in refused.json()["error"]
    assert ledger_ids(agent.state_dir) == {"idem-1"}
    assert agent.delete("/v1/allocations/idem-1").status_code == 200


@pytest.mark.parametrize(
    ("content", "headers", "status", "says"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, "not JSON"),
        (b"[1, 2]", {"content-type": "application/json"}, 422, "JSON object"),
        (b'{"kind": "cpu", "amount": 1}', {"content-type": "application/json"}, 422, "owner is required"),
        (b'{"kind": "tpu", "amount": 1, "owner": "x"}', {"content-type": "application/json"}, 422, "kind must be"),
        (b'{"kind": "cpu", "amount": "1GiB", "owner": "x"}', {"content-type": "application/json"}, 422, "bad cpu amount"),
        (b'{"kind": "cpu", "amount": -1, "owner": "x"}', {"content-type": "application/json"}, 422, "above 0"),
        (b'{"kind": "cpu", "amount": true, "owner": "x"}', {"content-type": "application/json"}, 422, "amount"),
        (b'{"kind": "cpu", "amount": 1' + b"0" * 400 + b', "owner": "x"}', {"content-type": "application/json"}, 422, "finite"),
        (b'{"kind": "cpu", "amount": 1e400, "owner": "x"}', {"content-type": "application/json"}, 422, "finite"),
        (b'{"kind": "cpu", "amount": 1, "owner": "x", "pid": 1' + b"0" * 400 + b"}", {"content-type": "application/json"}, 422, "pid"),
        (b'{"kind": "cpu", "amount": 1, "owner": "a\\u0000b"}', {"content-type": "application/json"}, 422, "printable"),
        (b'{"kind": "cpu", "amount": 1, "owner": "\\ud800"}', {"content-type": "application/json"}, 422, "printable"),
        (b'{"kind": "cpu", "amount": 1, "owner": "x", "oops": 1}', {"content-type": "application/json"}, 422, "oops"),
        (b'{"kind": "cpu", "amount": 1, "owner": "x", "pid": 0}', {"content-type": "application/json"}, 422, "pid"),
        (b'{"kind": "cpu", "amount": 1, "owner": "x", "enforce": true}', {"content-type": "application/json"}, 422, "pid"),
        (b'{"kind": "cpu", "amount": 1, "owner": "x", "asset": "nope"}', {"content-type": "application/json"}, 404, "nope"),
        (b'{"kind": "storage", "amount": "1GiB", "owner": "x"}', {"content-type": "application/json"}, 422, "--asset"),
        (b'{"kind": "cpu", "amount": 1, "owner": "x"}', {"content-type": "text/plain"}, 415, "application/json"),
        (b"[" * 100_000, {"content-type": "application/json"}, 413, "16384 bytes"),
        (b'{"kind": "cpu", "amount": 1, "owner": "x", "pid": 4194304}', {"content-type": "application/json"}, 409, "no process"),
        (b'{"kind": "cpu", "amount": 0.1, "owner": "x", "pid": 1, "enforce": true}', {"content-type": "application/json"}, 403, "init"),
    ],
)  # fmt: skip
def test_bad_requests_get_one_clear_message_and_the_server_lives_on(agent, content, headers, status, says):
    response = agent.post("/v1/allocations", content=content, headers=headers)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]
    assert agent.get("/healthz").status_code == 200
    assert agent.get("/v1/allocations").json() == []


def test_a_body_streamed_past_the_limit_is_cut_off_with_413(agent):
    def chunks():
        for _ in range(64):
            yield b" " * 1024  # no content-length: the agent counts what it reads

    response = agent.post("/v1/allocations", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_an_exited_owner_is_reaped_by_the_agents_loop(agent):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        made = post(agent, kind="memory", amount="1MiB", owner="short-lived", pid=child.pid, id="reap-me")
        assert made.status_code == 201, made.text
        assert ledger_ids(agent.state_dir) == {"reap-me"}
    finally:
        child.kill()
        child.wait()
    # Nobody reads the ledger through the agent now: only its loop can remove the row.
    assert wait_until(lambda: "reap-me" not in ledger_ids(agent.state_dir), 10)
    assert agent.get("/v1/allocations").json() == []


@pytest.mark.root
@pytest.mark.slow
def test_an_enforced_grants_cgroup_usage_is_exported(agent):
    require_root()
    from hypermesh.assets import enforce

    require(enforce.version() == 1, "this check reads cgroup v1 files (the v2 path is tests/vm)")
    # cgroup v1 leaves memory charged where it was first touched: the child fills 16 MiB only once inside its cgroup
    spin = (
        "import sys, time\nsys.stdin.readline()\nheld = bytearray(16 << 20)\n"
        "end = time.monotonic() + 60\nwhile time.monotonic() < end: pass\n"
    )
    child = subprocess.Popen([sys.executable, "-c", spin], stdin=subprocess.PIPE)
    try:
        made = post(agent, kind="cpu", amount=0.5, owner="spinner", pid=child.pid, enforce=True, id="spin-1")
        assert made.status_code == 201, made.text
        assert made.json()["enforced"] == "hypermesh/spin-1"
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.flush()
        usage_file = Path("/sys/fs/cgroup/cpuacct/hypermesh/spin-1/cpuacct.usage")
        memory_file = Path("/sys/fs/cgroup/memory/hypermesh/spin-1/memory.usage_in_bytes")
        # the spinner's CPU time in its cgroup, whatever share the (shared, loaded) machine gives it
        assert wait_until(lambda: int(usage_file.read_text()) > 50_000_000, 30)
        assert wait_until(lambda: int(memory_file.read_text()) >= 16 * MiB, 30)
        before = int(usage_file.read_text()) / 1e9
        text = agent.get("/metrics").text
        after = int(usage_file.read_text()) / 1e9
        key = (("allocation", "spin-1"), ("asset", "cpu"), ("kind", "cpu"), ("owner", "spinner"))
        exported = metric_samples(text, "hypermesh_allocation_cpu_seconds_total")[key]
        assert before > 0.05 and before <= exported <= after
        memory = metric_samples(text, "hypermesh_allocation_memory_bytes")[key]
        assert memory >= 16 * MiB and abs(memory - int(memory_file.read_text())) < 8 * MiB
        assert agent.delete("/v1/allocations/spin-1").status_code == 200
        assert not usage_file.parent.exists()  # released: the cgroup is gone
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdin is not None:
            child.stdin.close()


HASH = bcrypt.hashpw(b"allocate-me", bcrypt.gensalt(rounds=4)).decode()


def test_with_basic_auth_a_write_needs_credentials(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text(f'[basic_auth_users]\nplanner = "{HASH}"\n')
    with AgentProcess("--config", str(config), "--state-dir", str(tmp_path / "state")) as process:
        body = {"kind": "cpu", "amount": 0.5, "owner": "auth-test", "id": "auth-1"}
        url = f"{process.url}/v1/allocations"
        assert httpx.post(url, json=body, timeout=20).status_code == 401
        assert httpx.post(url, json=body, auth=("planner", "wrong"), timeout=20).status_code == 401
        assert httpx.delete(f"{url}/auth-1", timeout=20).status_code == 401
        assert ledger_ids(tmp_path / "state") == set()
        made = httpx.post(url, json=body, auth=("planner", "allocate-me"), timeout=20)
        assert made.status_code == 201, made.text
        assert ledger_ids(tmp_path / "state") == {"auth-1"}
        assert httpx.delete(f"{url}/auth-1", timeout=20).status_code == 401
        assert httpx.delete(f"{url}/auth-1", auth=("planner", "allocate-me"), timeout=20).status_code == 200
        assert ledger_ids(tmp_path / "state") == set()


class Veth:
    """A network namespace joined to this one by a veth pair: a client there is a different host to the agent."""

    def __init__(self) -> None:
        tag = os.getpid() % 10000
        self.netns = f"hm-assets-{tag}"
        self.host_if, self.peer_if = f"hma{tag}a", f"hma{tag}b"
        octet = tag % 250 + 1
        self.host_ip, self.peer_ip = f"198.19.{octet}.1", f"198.19.{octet}.2"

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    def up(self) -> None:
        self.down()
        self.ip("netns", "add", self.netns)
        self.ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if, "netns", self.netns)
        self.ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
        self.ip("link", "set", self.host_if, "up")
        self.ip("-n", self.netns, "addr", "add", f"{self.peer_ip}/24", "dev", self.peer_if)
        self.ip("-n", self.netns, "link", "set", self.peer_if, "up")

    def down(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=10, check=False)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=10, check=False)

    def request(self, method: str, url: str, body: dict[str, object] | None = None) -> tuple[int, str]:
        code = (
            "import json, sys, urllib.request, urllib.error\n"
            "method, url, body = sys.argv[1], sys.argv[2], sys.argv[3]\n"
            "data = body.encode() if body else None\n"
            "req = urllib.request.Request(url, data=data, method=method, headers={'content-type': 'application/json'})\n"
            "try:\n"
            "    r = urllib.request.urlopen(req, timeout=20); print(r.status); print(r.read().decode())\n"
            "except urllib.error.HTTPError as e:\n"
            "    print(e.code); print(e.read().decode())\n"
        )
        out = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                self.netns,
                sys.executable,
                "-c",
                code,
                method,
                url,
                json.dumps(body) if body else "",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        status, _, text = out.partition("\n")
        return int(status), text


@pytest.mark.netns
@pytest.mark.root
def test_without_auth_writes_from_beyond_loopback_get_403(tmp_path):
    require_root()
    veth = Veth()
    try:
        veth.up()
        with AgentProcess("--listen", "0.0.0.0:0", "--state-dir", str(tmp_path / "state")) as process:
            port = process.url.rsplit(":", 1)[1]
            remote = f"http://{veth.host_ip}:{port}"
            body = {"kind": "cpu", "amount": 0.5, "owner": "remote", "id": "remote-1"}
            status, text = veth.request("POST", f"{remote}/v1/allocations", body)
            assert status == 403
            error = json.loads(text)["error"]
            assert veth.peer_ip in error and "basic auth is not configured" in error and "loopback" in error
            assert ledger_ids(tmp_path / "state") == set()
            # reads stay open to it
            status, text = veth.request("GET", f"{remote}/v1/allocations")
            assert (status, json.loads(text)) == (200, [])
            # the same request from loopback is granted, and the remote client still cannot release it
            local = httpx.post(f"http://127.0.0.1:{port}/v1/allocations", json=body, timeout=20)
            assert local.status_code == 201, local.text
            status, text = veth.request("DELETE", f"{remote}/v1/allocations/remote-1")
            assert status == 403
            assert ledger_ids(tmp_path / "state") == {"remote-1"}
            assert httpx.delete(f"http://127.0.0.1:{port}/v1/allocations/remote-1", timeout=20).status_code == 200
    finally:
        veth.down()


def test_gpu_metrics_of_the_fixture_cards_through_the_agents_root(tmp_path):
    root = gpu_root(tmp_path)
    amd = AMD_DEVICE

    def read(path: Path) -> str:
        return path.read_text().strip()

    uevent = dict(line.split("=", 1) for line in read(amd / "uevent").splitlines())
    amd_labels = (
        ("gpu", "0"),
        ("pci_bus_id", uevent["PCI_SLOT_NAME"]),
        ("uuid", read(amd / "unique_id")),
        ("vendor", "amd"),
    )
    intel_labels = (("gpu", "1"), ("pci_bus_id", "0000:00:02.0"), ("uuid", "0000:00:02.0"), ("vendor", "intel"))
    with AgentProcess("--root", str(root), "--state-dir", str(tmp_path / "state")) as process:
        client = httpx.Client(base_url=process.url, timeout=20)
        # the AMD card has clients outside any allocation (fdinfo pids 4242, 5100 are not in this root's proc):
        # with its own proc, this root has none, so the grant goes through without force
        grant = client.post("/v1/allocations", json={"kind": "gpu", "amount": 0.5, "owner": "trainer",
                                                     "asset": read(amd / "unique_id")})  # fmt: skip
        assert grant.status_code == 201, grant.text
        text = client.get("/metrics").text
        assets = {(a["kind"], a["id"]): a for a in client.get("/v1/assets").json()["assets"]}
        client.close()
    assert metric_samples(text, "hypermesh_gpu_busy_ratio") == {amd_labels: int(read(amd / "gpu_busy_percent")) / 100}
    assert metric_samples(text, "hypermesh_gpu_memory_used_bytes") == {
        amd_labels: int(read(amd / "mem_info_vram_used"))
    }
    assert metric_samples(text, "hypermesh_gpu_memory_total_bytes") == {
        amd_labels: int(read(amd / "mem_info_vram_total"))
    }
    assert metric_samples(text, "hypermesh_gpu_temperature_celsius") == {
        amd_labels: int(read(amd / "hwmon/hwmon2/temp1_input")) / 1000
    }
    assert metric_samples(text, "hypermesh_gpu_power_watts") == {
        amd_labels: int(read(amd / "hwmon/hwmon2/power1_average")) / 1e6
    }
    info = {dict(k)["vendor"]: dict(k) for k in metric_samples(text, "hypermesh_gpu_info")}
    assert info["amd"]["model"] == read(amd / "product_name") and info["amd"]["driver"] == "amdgpu"
    assert info["intel"]["driver"] == "i915" and set(intel_labels) <= set(info["intel"].items())
    # the asset view of the same cards: one device each, half of the AMD one allocated
    uuid = read(amd / "unique_id")
    assert assets["gpu", uuid]["capacity"] == 1.0 and assets["gpu", uuid]["allocated"] == 0.5
    allocated = metric_samples(text, "hypermesh_asset_allocated")
    assert allocated[(("asset", uuid), ("kind", "gpu"), ("unit", "devices"))] == 0.5
    assert allocated[(("asset", "0000:00:02.0"), ("kind", "gpu"), ("unit", "devices"))] == 0.0


def test_a_host_without_gpus_exports_no_gpu_series_and_says_the_collector_worked(agent):
    """This machine has no GPU (PLATFORM-NOTES): no hypermesh_gpu_* series, and the gpu area still succeeded."""
    require(not os.path.isdir("/sys/class/drm") or not any(n.startswith("card") for n in os.listdir("/sys/class/drm")),
            "this host has a GPU")  # fmt: skip
    text = agent.get("/metrics").text
    assert "hypermesh_gpu_" not in text
    assert metric_samples(text, "hypermesh_scrape_collector_success")[(("collector", "gpu"),)] == 1.0
    assert [a for a in agent.get("/v1/assets").json()["assets"] if a["kind"] == "gpu"] == []


def test_state_dir_from_the_config_file_relative_to_it_and_a_file_refused_in_one_line(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text('state_dir = "ledger-here"\n')
    with AgentProcess("--config", str(config)) as process:
        made = httpx.post(
            f"{process.url}/v1/allocations", json={"kind": "cpu", "amount": 0.25, "owner": "cfg"}, timeout=20
        )
        assert made.status_code == 201, made.text
        assert ledger_ids(tmp_path / "ledger-here") == {made.json()["id"]}
    (tmp_path / "a-file").write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "hypermesh.cli.main", "agent", "--state-dir", str(tmp_path / "a-file")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--state-dir" in result.stderr and "not a directory" in result.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "hypermesh.cli.main", "agent", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "--state-dir DIR" in usage and "/var/lib/hypermesh" in usage


def test_concurrent_requests_never_over_commit(agent):
    from concurrent.futures import ThreadPoolExecutor

    cores = len(os.sched_getaffinity(0))
    share = cores / 8  # exactly 8 fit

    def ask(i: int) -> int:
        with httpx.Client(base_url=str(agent.base_url), timeout=60) as client:
            return post(client, kind="cpu", amount=share, owner=f"racer-{i}", id=f"race-{i}").status_code

    with ThreadPoolExecutor(20) as pool:
        statuses = sorted(pool.map(ask, range(20)))
    assert statuses == [201] * 8 + [409] * 12
    db = sqlite3.connect(f"file:{agent.state_dir / 'ledger.sqlite'}?mode=ro", uri=True)
    try:
        total = db.execute("SELECT SUM(amount) FROM allocations WHERE kind = 'cpu'").fetchone()[0]
    finally:
        db.close()
    assert total == pytest.approx(cores)
    for grant in agent.get("/v1/allocations").json():
        assert agent.delete(f"/v1/allocations/{grant['id']}").status_code == 200


def test_a_ledger_that_cannot_be_opened_leaves_the_assets_served_and_writes_503(tmp_path):
    # /proc takes no new directory, even from root: the ledger cannot be created there
    with AgentProcess("--state-dir", "/proc/hypermesh-no-ledger") as process:
        client = httpx.Client(base_url=process.url, timeout=20)
        snapshot = client.get("/v1/assets").json()
        assert {a["kind"] for a in snapshot["assets"]} >= {"cpu", "memory"}
        assert all(a["allocated"] == 0 for a in snapshot["assets"])
        listed = client.get("/v1/allocations")
        made = client.post("/v1/allocations", json={"kind": "cpu", "amount": 0.5, "owner": "x"})
        client.close()
        log = process.log()
    assert listed.status_code == made.status_code == 503
    assert "/proc/hypermesh-no-ledger" in made.json()["error"]
    assert "allocation ledger unavailable" in log and "Traceback" not in log
