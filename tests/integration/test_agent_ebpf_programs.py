"""Every built-in eBPF program runs in the agent at once: XDP counts match the datagrams a test sends through a veth
pair, the biolatency histogram is a well-formed Prometheus histogram that counts the test's own writes, exec events
reach /metrics and the /v1/events stream, and a program that cannot load leaves the others running."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import require_binary
from tests.fixtures.agent.agent_process import AgentProcess
from tests.integration.ebpf_support import completed_requests, our_kernel_programs, require_ebpf

pytestmark = [pytest.mark.ebpf, pytest.mark.root, pytest.mark.netns, pytest.mark.slow]

DATAGRAMS = 37
EXECS = 3


def samples(url: str) -> list[tuple[str, dict[str, str], float]]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def value(url: str, name: str, **labels: str) -> float:
    found = [v for n, ls, v in samples(url) if n == name and all(ls.get(k) == w for k, w in labels.items())]
    return sum(found)


class Veth:
    def __init__(self) -> None:
        tag = os.getpid() % 10000
        self.netns, self.host_if, self.peer_if = f"hm-agx-{tag}", f"hmg{tag}a", f"hmg{tag}b"
        octet = tag % 250 + 1
        self.host_ip, self.peer_ip = f"198.19.{octet}.1", f"198.19.{octet}.2"

    def up(self) -> None:
        self.down()
        run = ["ip"]
        for args in (
            ["netns", "add", self.netns],
            ["link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if, "netns", self.netns],
            ["addr", "add", f"{self.host_ip}/24", "dev", self.host_if],
            ["link", "set", self.host_if, "up"],
            ["-n", self.netns, "addr", "add", f"{self.peer_ip}/24", "dev", self.peer_if],
            ["-n", self.netns, "link", "set", self.peer_if, "up"],
        ):
            subprocess.run([*run, *args], check=True, capture_output=True, timeout=10)

    def down(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=10, check=False)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=10, check=False)

    def send_udp(self, count: int) -> None:
        code = (
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for _ in range({count}): s.sendto(b'x' * 64, ({self.host_ip!r}, 9))\n"
        )
        subprocess.run(["ip", "netns", "exec", self.netns, "python3", "-c", code], check=True, timeout=30)


@pytest.fixture
def veth():
    require_ebpf()
    require_binary("ip")
    pair = Veth()
    pair.up()
    try:
        yield pair
    finally:
        pair.down()


def block_device_of(path: str) -> tuple[int, int]:
    """The whole disk under ``path`` (a partition's parent), as the block tracepoints name it."""
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    sysfs = os.path.realpath(f"/sys/dev/block/{major}:{minor}")
    if os.path.exists(os.path.join(sysfs, "partition")):
        with open(os.path.join(os.path.dirname(sysfs), "dev")) as f:
            major, minor = map(int, f.read().split(":"))
    return major, minor


def test_every_builtin_runs_in_the_agent_and_a_broken_one_leaves_the_rest(veth, tmp_path, block_device_dir):
    require_ebpf()
    bpftool_before = our_kernel_programs()
    # A real block device: the checkout's may be an overlay (a container, make test-fresh), tmp a tmpfs.
    directory = str(block_device_dir)
    major, minor = block_device_of(directory)
    require_binary("true")
    # A program of our own name, so the exec events and counts of this test are told apart from the machine's.
    marker = f"hmexec{os.getpid() % 100000}"
    exe = tmp_path / marker
    shutil.copy("/bin/true", exe)

    args = ["--interval", "0.5", "--ebpf", "syscalls", "--ebpf", "biolatency", "--ebpf", "execsnoop"]
    args += ["--ebpf", f"xdp:{veth.host_if}", "--ebpf", "xdp:hm-no-such-if", "--ebpf", f"tc:{veth.host_if}"]
    with AgentProcess(*args) as agent:
        status = httpx.get(f"{agent.url}/v1/ebpf", timeout=10).json()["programs"]
        for name in ("syscalls", "biolatency", "execsnoop", f"xdp:{veth.host_if}", f"tc:{veth.host_if}"):
            assert status[name]["loaded"], (name, status[name]["error"])
        broken = status["xdp:hm-no-such-if"]
        assert broken["loaded"] is False and "hm-no-such-if" in broken["error"] and veth.host_if in broken["error"]
        assert value(agent.url, "hypermesh_ebpf_program_success", program="xdp:hm-no-such-if") == 0.0
        assert value(agent.url, "hypermesh_ebpf_program_success", program=f"xdp:{veth.host_if}") == 1.0
        assert value(agent.url, "hypermesh_ebpf_program_loaded", program="execsnoop") == 1.0
        assert 'hypermesh_scrape_collector_success{collector="ebpf"} 1.0' in httpx.get(f"{agent.url}/metrics").text

        # /v1/events, read while the test executes its marker program.
        received: list[str] = []
        opened = threading.Event()

        def listen() -> None:
            with httpx.stream("GET", f"{agent.url}/v1/events", timeout=20) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                opened.set()
                for line in response.iter_lines():
                    if line.startswith("data: ") and marker in line:
                        received.append(line)
                        if len(received) == EXECS:
                            return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        assert opened.wait(10)

        disk = f"{major}:{minor}"
        name = os.path.basename(os.path.realpath(f"/sys/dev/block/{disk}"))
        # The kernel's count brackets the program's: read before the reading at the start, after it at the end.
        # Readings are cached for a second: after this sleep the next one is taken now.
        time.sleep(1.1)
        io_before = completed_requests(major, minor)
        udp_before = value(agent.url, "hypermesh_ebpf_xdp_packets_total", interface=veth.host_if, protocol="ipv4_udp")
        tc_labels = {"interface": veth.host_if, "direction": "ingress", "protocol": "ipv4_udp"}
        tc_before = value(agent.url, "hypermesh_ebpf_tc_packets_total", **tc_labels)
        count_before = value(agent.url, "hypermesh_ebpf_block_io_latency_seconds_count", device=name)

        veth.send_udp(DATAGRAMS)
        for _ in range(EXECS):
            subprocess.run([str(exe), "--marker"], check=True, timeout=10)
        with tempfile.NamedTemporaryFile(dir=directory) as f:
            for _ in range(6):
                os.write(f.fileno(), os.urandom(128 * 1024))
                os.fsync(f.fileno())
        listener.join(15)
        time.sleep(1.2)  # readings are cached for a second

        got = samples(agent.url)
        io_after = completed_requests(major, minor)
        udp = value(agent.url, "hypermesh_ebpf_xdp_packets_total", interface=veth.host_if, protocol="ipv4_udp")
        assert udp - udp_before == DATAGRAMS  # every datagram, and nothing else of UDP on a fresh veth
        assert value(agent.url, "hypermesh_ebpf_tc_packets_total", **tc_labels) - tc_before == DATAGRAMS

        assert len(received) == EXECS, received
        assert all(f'"filename":"{exe}"' in line and f'"comm":"{marker}"' in line for line in received)
        assert value(agent.url, "hypermesh_ebpf_execs_total", comm=marker) == EXECS

        buckets = sorted(
            ((float(ls["le"]), v) for n, ls, v in got if n.endswith("_seconds_bucket") and ls["device"] == name),
        )
        count = next(
            v for n, ls, v in got if n == "hypermesh_ebpf_block_io_latency_seconds_count" and ls["device"] == name
        )
        total = next(
            v for n, ls, v in got if n == "hypermesh_ebpf_block_io_latency_seconds_sum" and ls["device"] == name
        )
        assert buckets[-1] == (float("inf"), count)
        assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets)), "buckets must be cumulative"
        # At least one request per fsync of the test, never more than the kernel itself completed meanwhile.
        assert 6 <= count - count_before <= io_after - io_before
        # The sum (the program's own, in ns) lies between what the buckets' bounds allow: a request in the bucket
        # up to 2**(s+1) µs took at least 2**s µs, the previous bucket's bound.
        lower = upper = 0.0
        previous_bound, previous_count = 0.0, 0.0
        for bound, cumulative in buckets:
            in_bucket = cumulative - previous_count
            if in_bucket:
                lower += in_bucket * previous_bound
                upper += in_bucket * bound
            previous_bound, previous_count = bound, cumulative
        assert total > 0 and lower <= total <= upper

        # Every family these programs add is in docs/metrics.md, with its type.
        from tests.integration.test_agent_api import documented_metrics

        documented = documented_metrics()
        text = httpx.get(f"{agent.url}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            name = family.name + ("_total" if family.type == "counter" else "")
            assert name in documented, f"{name} is exported with every program, missing from docs/metrics.md"

    # The kernel frees a program once its last link and fd are gone, which for a tcx link can be a moment after
    # the agent's exit (an RCU grace period): wait for it, a bounded few seconds.
    deadline = time.monotonic() + 5
    while our_kernel_programs() - bpftool_before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert our_kernel_programs() - bpftool_before == set(), "the agent left programs loaded"


def test_events_need_credentials_like_the_other_streams(tmp_path):
    import bcrypt

    require_ebpf()
    hashed = bcrypt.hashpw(b"events-password", bcrypt.gensalt(rounds=4)).decode()
    config = tmp_path / "agent.toml"
    config.write_text(f'[basic_auth_users]\nwatcher = "{hashed}"\n')
    with AgentProcess("--interval", "0.5", "--config", str(config), "--ebpf", "execsnoop") as agent:
        assert httpx.get(f"{agent.url}/v1/events", timeout=10).status_code == 401
        wrong = httpx.get(f"{agent.url}/v1/events", auth=("watcher", "nope"), timeout=10)
        assert wrong.status_code == 401
        with httpx.stream("GET", f"{agent.url}/v1/events", auth=("watcher", "events-password"), timeout=10) as ok:
            assert ok.status_code == 200
            assert ok.headers["content-type"].startswith("text/event-stream")


def test_a_client_that_falls_behind_loses_events_not_memory():
    import asyncio

    from hypermesh.agent.exec_feed import QUEUE, Subscriber

    async def flood() -> Subscriber:
        subscriber = Subscriber(asyncio.get_running_loop())
        for index in range(QUEUE + 44):
            subscriber.offer(b'{"pid":%d}' % index)
        return subscriber

    subscriber = asyncio.run(flood())
    assert subscriber.queue.qsize() == QUEUE
    assert subscriber.dropped == 44
    assert subscriber.queue.get_nowait() == b'{"pid":0}'  # the oldest kept; the newest are the ones dropped


def test_events_need_execsnoop_and_count_as_a_stream(tmp_path):
    with AgentProcess("--interval", "0.5", "--max-streams", "1") as agent:
        response = httpx.get(f"{agent.url}/v1/events", timeout=10)
        assert response.status_code == 404
        assert "--ebpf execsnoop" in response.json()["error"]
    require_ebpf()
    with AgentProcess("--interval", "0.5", "--max-streams", "1", "--ebpf", "execsnoop") as agent:
        with httpx.stream("GET", f"{agent.url}/v1/stream", timeout=10) as first:
            assert first.status_code == 200
            # The one stream slot is taken by /v1/stream: the events stream shares its cap.
            second = httpx.get(f"{agent.url}/v1/events", timeout=10)
            assert second.status_code == 503
        # The slot is free again once the first client leaves.
        for _ in range(50):
            with httpx.stream("GET", f"{agent.url}/v1/events", timeout=10) as third:
                if third.status_code == 200:
                    break
            time.sleep(0.1)
        assert third.status_code == 200


def test_the_agent_refuses_a_misspelt_program_in_one_line():
    from tests.integration.ebpf_support import run_cli

    for spelling, words in (("xdp", "xdp:INTERFACE"), ("syscalls:eth0", "takes no argument"), ("tcp", "choose from")):
        result = run_cli("agent", "--listen", "127.0.0.1:0", "--ebpf", spelling, timeout=30)
        assert result.returncode == 2, result.stderr
        assert words in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
