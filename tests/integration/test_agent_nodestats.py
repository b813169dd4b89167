"""The agent's node metrics (meminfo, SNMP, filesystems, ...) on the live kernel, checked against the kernel's files
read independently here, and the sample count against a live node_exporter scrape in the same minute."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families as parse_text

from tests.conftest import require, require_binary, require_root
from tests.fixtures.agent.agent_process import AgentProcess, wait_until
from tests.world_readable import hypermesh_for_others

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"


@pytest.fixture(scope="module")
def agent():
    with AgentProcess("--interval", "1") as process:
        client = httpx.Client(base_url=process.url, timeout=10)
        assert wait_until(lambda: client.get("/healthz").status_code == 200, 10)
        yield client
        client.close()


def scrape(client: httpx.Client) -> dict[str, list]:
    response = client.get("/metrics")
    assert response.status_code == 200
    out: dict[str, list] = {}
    for family in parse_text(response.text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def one(by_name: dict[str, list], name: str, **labels: str) -> float:
    matches = [s.value for s in by_name[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


def meminfo() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as file:
        for line in file:
            key, rest = line.split(":", 1)
            value, *unit = rest.split()
            out[key] = int(value) * (1024 if unit == ["kB"] else 1)
    return out


def snmp(protocol: str) -> dict[str, int]:
    with open("/proc/net/snmp") as file:
        lines = [line.split() for line in file if line.startswith(protocol + ":")]
    return dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))


def stat_value(key: str) -> int:
    with open("/proc/stat") as file:
        for line in file:
            if line.startswith(key + " "):
                return int(line.split()[1])
    raise KeyError(key)


def test_every_collector_succeeds_on_this_machine(agent):
    by_name = scrape(agent)
    failed = {s.labels["collector"] for s in by_name["hypermesh_scrape_collector_success"] if s.value != 1.0}
    assert failed == set()


def test_meminfo_fields_match_proc_meminfo(agent):
    before = meminfo()
    by_name = scrape(agent)
    after = meminfo()
    # Constant fields must be exact; moving ones between two independent reads.
    assert one(by_name, "hypermesh_meminfo_mem_total_bytes") == before["MemTotal"] == after["MemTotal"]
    assert one(by_name, "hypermesh_meminfo_huge_pages") == before["HugePages_Total"]
    assert one(by_name, "hypermesh_meminfo_hugepagesize_bytes") == before["Hugepagesize"]
    assert one(by_name, "hypermesh_meminfo_swap_total_bytes") == before["SwapTotal"]
    assert one(by_name, "hypermesh_meminfo_vmalloc_total_bytes") == before["VmallocTotal"]
    exported = {name for name in by_name if name.startswith("hypermesh_meminfo_")}
    assert len(exported) == len(before)  # every field, one metric each
    low, high = sorted((before["Active(anon)"], after["Active(anon)"]))
    assert low - 64 * 2**20 <= one(by_name, "hypermesh_meminfo_active_anon_bytes") <= high + 64 * 2**20


def test_filesystem_sizes_match_statvfs_and_df(agent):
    by_name = scrape(agent)
    st = os.statvfs("/")
    assert one(by_name, "hypermesh_filesystem_size_bytes", mountpoint="/") == st.f_blocks * st.f_frsize
    assert one(by_name, "hypermesh_filesystem_files", mountpoint="/") == st.f_files
    assert one(by_name, "hypermesh_filesystem_readonly", mountpoint="/") == 0.0
    assert one(by_name, "hypermesh_filesystem_device_error", mountpoint="/") == 0.0
    df = subprocess.run(["df", "-B1", "--output=size,avail", "/"], capture_output=True, text=True, check=True)
    size, avail = map(int, df.stdout.splitlines()[1].split())
    assert one(by_name, "hypermesh_filesystem_size_bytes", mountpoint="/") == size
    # Free space moves with whatever else writes to the disk: within 256 MiB of df's a moment later.
    assert abs(one(by_name, "hypermesh_filesystem_avail_bytes", mountpoint="/") - avail) < 256 * 2**20
    mountpoints = {s.labels["mountpoint"] for s in by_name["hypermesh_filesystem_size_bytes"]}
    assert not any(m.startswith(("/proc", "/sys", "/dev", "/run")) for m in mountpoints), mountpoints


def test_udp_counters_rise_by_at_least_the_datagrams_sent_to_loopback(agent):
    count = 200
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        before = scrape(agent)
        kernel_before = snmp("Udp")
        for _ in range(count):
            sender.sendto(b"x" * 64, receiver.getsockname())
        received = 0
        receiver.settimeout(2.0)
        while received < count:
            receiver.recv(128)
            received += 1
        after = scrape(agent)
        kernel_after = snmp("Udp")
    finally:
        sender.close()
        receiver.close()
    for field in ("InDatagrams", "OutDatagrams"):
        ours = one(after, "hypermesh_netstat_udp_total", field=field) - one(
            before, "hypermesh_netstat_udp_total", field=field
        )
        assert ours >= count, field
        # The agent's own reads lie between this test's reads of /proc/net/snmp.
        assert kernel_before[field] <= one(before, "hypermesh_netstat_udp_total", field=field)
        assert one(after, "hypermesh_netstat_udp_total", field=field) <= kernel_after[field]


def test_forks_counter_rises_by_at_least_the_processes_spawned(agent):
    count = 20
    before = one(scrape(agent), "hypermesh_forks_total")
    kernel_before = stat_value("processes")
    for _ in range(count):
        subprocess.run(["/bin/true"], check=True)
    after = one(scrape(agent), "hypermesh_forks_total")
    assert kernel_before <= before + count  # both read the same counter, ours first
    assert after - before >= count
    assert after <= stat_value("processes")


def test_kernel_identity_interfaces_and_counters_match_their_files(agent):
    by_name = scrape(agent)
    uname = os.uname()
    info = by_name["hypermesh_uname_info"][0].labels
    assert (info["release"], info["machine"], info["nodename"]) == (uname.release, uname.machine, uname.nodename)
    with open("/sys/class/net/lo/mtu") as file:
        assert one(by_name, "hypermesh_network_mtu_bytes", interface="lo") == int(file.read())
    with open("/proc/stat") as file:
        btime = next(int(line.split()[1]) for line in file if line.startswith("btime "))
    assert one(by_name, "hypermesh_boot_time_seconds") == btime
    assert abs(one(by_name, "hypermesh_time_seconds") - time.time()) < 5
    with open("/proc/sys/fs/file-nr") as file:
        maximum = int(file.read().split()[2])
    assert one(by_name, "hypermesh_file_handles_maximum") == maximum
    with open("/proc/softirqs") as file:
        rows = {line.split(":")[0].strip(): line.split(":")[1].split() for line in file.readlines()[1:]}
    timer0 = int(rows["TIMER"][0])
    assert 0 < one(by_name, "hypermesh_softirqs_total", cpu="0", type="TIMER") <= timer0


def test_sampler_hot_path_does_not_read_the_node_stats_files():
    from hypermesh.platform.linux import LinuxBackend
    from hypermesh.sampling.sampler import Sampler

    def open_paths() -> set[str]:
        out = set()
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            # /proc/net is a link to /proc/self/net: its files show as /proc/<pid>/net/...
            out.add(re.sub(r"^/proc/\d+/net/", "/proc/net/", target))
        return out

    node_files = {"/proc/vmstat", "/proc/net/snmp", "/proc/net/netstat", "/proc/softirqs"}
    # procfs names the target of /proc/self/... with the pid; the global files keep their path.
    with Sampler(min_interval=0.01, backend=LinuxBackend()) as sampler:
        sampler.sample()
        sampler.counters()
        assert not node_files & open_paths()
        stats = sampler.node_stats()
        assert stats.vmstat["pgfault"] > 0
        assert {"/proc/vmstat", "/proc/net/snmp"} <= open_paths()


def test_live_scrape_has_at_least_node_exporters_samples(agent):
    require(os.path.exists(NODE_EXPORTER), "Debian prometheus-node-exporter (scripts/deps.sh prom)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exporter = subprocess.Popen(
        [NODE_EXPORTER, "--no-collector.systemd", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"

        def up() -> bool:
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(up, 10), "node_exporter did not answer within 10 s"
        theirs = httpx.get(url, timeout=10).text
        ours = agent.get("/metrics").text
    finally:
        exporter.terminate()
        exporter.wait(timeout=10)

    def samples(text: str) -> int:
        return sum(1 for line in text.splitlines() if line and not line.startswith("#"))

    assert samples(ours) >= samples(theirs), (samples(ours), samples(theirs))
    assert promtool_clean(ours)


def promtool_clean(text: str) -> bool:
    promtool = require_binary("promtool")
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr
    return True


INTERFACE_CHURN = """
import json, subprocess
from hypermesh.platform.linux.nodestats import NodeStatsReader

def sh(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

def hm0(reader):
    return next(i for i in reader.read().interfaces if i.name == "hm0")

def sysfs(name):
    with open(f"/sys/class/net/hm0/{name}") as file:
        return file.read().strip()

reader = NodeStatsReader("/proc", "/sys", "/", live=True)
sh("link", "add", "hm0", "type", "veth", "peer", "name", "hm1")
sh("link", "set", "hm0", "mtu", "1400")
first = hm0(reader)
sh("link", "del", "hm0")
sh("link", "add", "hm0", "type", "veth", "peer", "name", "hm2")
sh("link", "set", "hm0", "mtu", "1300", "txqueuelen", "77")
second = hm0(reader)
print(json.dumps({
    "first": [first.mtu, first.address],
    "second": [second.mtu, second.tx_queue_length, second.address, second.operstate, second.carrier_changes],
    "kernel": [int(sysfs("mtu")), int(sysfs("tx_queue_len")), sysfs("address"), sysfs("operstate"),
               int(sysfs("carrier_changes"))],
}))
"""


@pytest.mark.netns
@pytest.mark.root
def test_an_interface_deleted_and_created_again_under_its_name_is_read_afresh():
    # The reader keeps sysfs attribute files open; a kept fd of a deleted interface answers ENODEV for good, so a
    # veth or tun re-created under the same name lost its address, operstate, MTU and queue length until restart.
    require_root("needs root for a network namespace")
    ip = require_binary("ip")
    namespace = f"hm-churn-{os.getpid()}"
    subprocess.run([ip, "netns", "add", namespace], check=True, timeout=30)
    try:
        result = subprocess.run(
            [ip, "netns", "exec", namespace, sys.executable, "-c", INTERFACE_CHURN],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        seen = json.loads(result.stdout)
    finally:
        subprocess.run([ip, "netns", "del", namespace], timeout=30)
    assert seen["first"][0] == 1400
    assert seen["second"] == seen["kernel"]
    assert seen["second"][:2] == [1300, 77] and seen["second"][2]


HUNG_MOUNT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "agent", "hung_mount.py")


def hung_mount_prefix(mountpoint: str) -> list[str]:
    """A command prefix that runs the rest under private mount and PID namespaces with a FUSE mount at
    ``mountpoint`` whose statfs never answers (fixtures/agent/hung_mount.py), listed in /proc/1/mountinfo there."""
    require_root("needs root for mount and PID namespaces")
    require(os.path.exists("/dev/fuse"), "needs FUSE (/dev/fuse) to simulate a hung mount")
    unshare = require_binary("unshare")
    return [unshare, "--mount", "--pid", "--fork", "--mount-proc", "--propagation", "private",
            sys.executable, HUNG_MOUNT, mountpoint, "--"]  # fmt: skip


def release_hung_mount(pid: int) -> None:
    """Stop the hung mount's owner, the child of ``pid`` (unshare) that runs as PID 1 of the namespaces: it closes
    /dev/fuse first, which unblocks every call stuck in the mount, then stops the command."""
    with open(f"/proc/{pid}/task/{pid}/children") as file:
        children = file.read().split()
    for child in children:
        os.kill(int(child), signal.SIGTERM)


@pytest.mark.root
def test_a_hung_network_mount_is_a_device_error_and_does_not_hang_the_agent(tmp_path, block_device_dir):
    # A hard NFS mount of a dead server blocks statvfs in the kernel for good. The scrape used to call it on the
    # event loop: one scrape froze the whole agent, /healthz included, until the server came back. Beside it, a
    # healthy filesystem of the test's own (a loop device: on an overlay root there may be no other real one).
    mountpoint = str(tmp_path / "hung")
    prefix = hung_mount_prefix(mountpoint)
    agent = AgentProcess("--interval", "0.5", prefix=prefix).start()
    try:
        with httpx.Client(base_url=agent.url, timeout=8) as client:
            labels = f'device="hung",fstype="fuse.hung",mountpoint="{mountpoint}"'
            took = []
            for attempt in range(2):
                start = time.monotonic()
                text = client.get("/metrics").text
                took.append(time.monotonic() - start)
                # The first scrape waits for the statvfs timeout (1 s, a deadline with seconds of margin); later ones
                # skip the stuck mount, so they save that whole second against the first (the control).
                assert took[0] < 3.0 and (attempt == 0 or took[attempt] < took[0] - 0.5), took
                assert f"hypermesh_filesystem_device_error{{{labels}}} 1.0" in text
                assert f"hypermesh_filesystem_size_bytes{{{labels}}}" not in text
                healthy = re.search(
                    rf'^hypermesh_filesystem_device_error{{[^}}]*mountpoint="{block_device_dir}"}} (\S+)$', text, re.M
                )
                assert healthy and healthy.group(1) == "0.0", text[-3000:]  # the others stay
                assert 'hypermesh_scrape_collector_success{collector="filesystem"} 1.0' in text
                assert client.get("/healthz").status_code == 200  # a frozen agent would hit the 8 s client timeout
    finally:
        release_hung_mount(agent.pid)
        agent.cleanup()
    assert "Traceback" not in agent.log()


@pytest.mark.root
def test_a_slow_scrape_runs_off_the_event_loop_and_the_request_timeout_answers_503(tmp_path):
    # The same hung mount makes the first scrape slow for real (statvfs waits its 1 s limit). The scrape used to run
    # on the event loop: /healthz and every other endpoint waited for it, and --request-timeout could not fire.
    mountpoint = str(tmp_path / "hung")
    prefix = hung_mount_prefix(mountpoint)
    agent = AgentProcess("--interval", "0.5", "--request-timeout", "0.3", prefix=prefix).start()
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:

            def timed_scrape(path: str = "/metrics") -> tuple[int, float]:
                start = time.monotonic()
                status = httpx.get(f"{agent.url}{path}", timeout=8).status_code
                return status, time.monotonic() - start

            scrapes = [pool.submit(timed_scrape), pool.submit(timed_scrape)]
            time.sleep(0.05)
            health = []
            answered_during_scrapes = 0
            # One kept-alive client: a fresh httpx.get costs 50-100 ms of client setup on this VM by itself.
            with httpx.Client(base_url=agent.url, timeout=8) as client:
                while not all(s.done() for s in scrapes):
                    start = time.monotonic()
                    assert client.get("/healthz").status_code == 200
                    health.append(time.monotonic() - start)
                    answered_during_scrapes += not all(s.done() for s in scrapes)
                    time.sleep(0.02)
            results = [s.result() for s in scrapes]
            # The control: the same two fresh-client requests at once, of /healthz (what a request costs here now,
            # client set-up included: on a loaded machine that alone was over a second).
            controls = [f.result() for f in [pool.submit(timed_scrape, "/healthz") for _ in range(2)]]
        # Both scrapes joined the one slow read and got 503 at the timeout, not after the 1 s statvfs limit: beyond
        # what a plain request costs now, each waited less than that limit.
        assert [status for status, _ in results] == [503, 503], results
        plain = max(took for _, took in controls)
        assert all(took - plain < 1.0 for _, took in results), (results, controls)
        # /healthz was served while the scrapes were still waiting: the slow read is off the event loop.
        assert answered_during_scrapes >= 1, health
        # The read finishes on its own; the next scrape skips the stuck mount and is served.
        deadline = time.monotonic() + 5
        while (response := httpx.get(f"{agent.url}/metrics", timeout=8)).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        # (that one may have joined the slow read and carry the counters of its start: ask again)
        response = httpx.get(f"{agent.url}/metrics", timeout=8)
        timeouts = re.search(r'^hypermesh_agent_http_rejected_total\{reason="timeout"\} (\S+)$', response.text, re.M)
        assert float(timeouts.group(1)) >= 2  # the two above, and any retry that joined the read before it ended
        assert 'fstype="fuse.hung"' in response.text
    finally:
        release_hung_mount(agent.pid)
        agent.cleanup()
    assert "Traceback" not in agent.log()


FETCH = """
import sys, urllib.request
request = urllib.request.Request(sys.argv[1], headers={"accept": sys.argv[2]})
sys.stdout.write(urllib.request.urlopen(request, timeout=10).read().decode())
"""


@pytest.mark.netns
@pytest.mark.root
def test_interface_names_that_are_not_utf8_or_need_escaping_are_exported(tmp_path):
    # Linux interface names are bytes. One named b"hm\xff" made /metrics a 500 (the text could not be encoded) and
    # every node stats collector fail (/proc/net/dev could not be decoded), until the interface went away.
    require_root("needs root for a network namespace")
    ip = require_binary("ip")
    namespace = f"hm-names-{os.getpid()}"
    names = [b"hm\xff", b"hm\xfe", b'hm"q\\']
    subprocess.run([ip, "netns", "add", namespace], check=True, timeout=30)
    try:
        subprocess.run([ip, "-n", namespace, "link", "set", "lo", "up"], check=True, timeout=30)
        for i, name in enumerate(names):
            subprocess.run([ip, "-n", namespace, "link", "add", name, "type", "veth", "peer", "name", f"hmpeer{i}"],
                           check=True, timeout=30)  # fmt: skip
        with AgentProcess("--interval", "0.5", prefix=[ip, "netns", "exec", namespace]) as agent:
            texts = {}
            for accept in ("text/plain", "application/openmetrics-text"):
                fetch = [ip, "netns", "exec", namespace, sys.executable, "-c", FETCH, f"{agent.url}/metrics", accept]
                result = subprocess.run(fetch, capture_output=True, text=True, timeout=30)
                assert result.returncode == 0, result.stderr + agent.log()
                texts[accept] = result.stdout
        assert "Traceback" not in agent.log()
    finally:
        subprocess.run([ip, "netns", "del", namespace], timeout=30)
    families = {f.name: f for f in parse_text(texts["text/plain"])}
    assert {s.value for s in families["hypermesh_scrape_collector_success"].samples} == {1.0}
    expected = {"hm\\xff", "hm\\xfe", 'hm"q\\'}  # the bytes that are not UTF-8 spelled \xNN
    for family in ("hypermesh_network_receive_bytes", "hypermesh_network_mtu_bytes", "hypermesh_network_info"):
        interfaces = {s.labels["interface"] for s in families[family].samples}
        assert expected <= interfaces, (family, interfaces)
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

    assert list(parse_openmetrics(texts["application/openmetrics-text"]))
    assert promtool_clean(texts["text/plain"])


@pytest.mark.root
def test_a_read_only_view_of_the_filesystems_does_not_make_them_read_only():
    # systemd's ProtectSystem=strict (deploy/systemd/hypermesh-agent.service) remounts everything read-only in the
    # agent's own mount namespace. statvfs there says ST_RDONLY, and the agent used to report every filesystem as
    # read-only, which silences HypermeshFilesystemAlmostFull. The host's mount table (init's) is what counts.
    require_root("needs root for a mount namespace")
    unshare = require_binary("unshare")
    with open("/proc/1/mountinfo") as file:
        host_root_readonly = next("ro" in line.split()[5].split(",") for line in file if line.split()[4] == "/")
    require(not host_root_readonly, "the host's / is read-only here")
    script = 'mount -o remount,bind,ro / && exec "$@"'
    prefix = [unshare, "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    with AgentProcess("--interval", "0.5", prefix=prefix) as agent:
        text = httpx.get(f"{agent.url}/metrics", timeout=10).text
    by_name = {}
    for family in parse_text(text):
        for sample in family.samples:
            by_name.setdefault(sample.name, []).append(sample)
    assert one(by_name, "hypermesh_filesystem_readonly", mountpoint="/") == 0.0


@pytest.mark.root
def test_with_the_hosts_root_mounted_elsewhere_uname_names_the_machine(tmp_path):
    # A container with the host's / at /host (docs/agent.md, --root): the kernel fields came from /host/proc but the
    # machine was read from a /host/arch that only recorded trees have, so hypermesh_uname_info said machine="".
    require_root("needs root for a mount namespace")
    unshare = require_binary("unshare")
    host = tmp_path / "host"
    for part in ("proc", "sys", "etc"):
        (host / part).mkdir(parents=True)
    script = f'for d in proc sys etc; do mount --rbind /$d {host}/$d || exit 1; done; exec "$@"'
    prefix = [unshare, "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    with AgentProcess("--interval", "0.5", "--root", str(host), prefix=prefix) as agent:
        text = httpx.get(f"{agent.url}/metrics", timeout=10).text
    info = next(s.labels for f in parse_text(text) for s in f.samples if s.name == "hypermesh_uname_info")
    uname = os.uname()
    assert (info["machine"], info["release"], info["nodename"]) == (uname.machine, uname.release, uname.nodename)


FIXTURE_ROOT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "agent", "root")
# The collectors whose data comes from /proc/diskstats or /proc/net/dev (docs/agent.md).
FROM_DISKSTATS_AND_NETDEV = {"disk", "network", "netdev", "diskstats", "netclass"}


@pytest.mark.parametrize("how", ["deleted", pytest.param("unreadable", marks=pytest.mark.root)])
def test_a_collector_whose_kernel_file_cannot_be_read_reports_failure_once_in_the_log(how):
    # Both files empty the disk and network parts of a sample. The agent said success 1 for every collector with no
    # disk or network series at all: the HypermeshCollectorFailing alert could never fire.
    prefix: list[str] = []
    command = None
    if how == "unreadable":
        require_root("needs root to run the agent as another user (setpriv) on a mode-000 file")
        prefix = [require_binary("setpriv"), "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", "--"]
        command = hypermesh_for_others()  # a checkout under /root (0700) is out of nobody's reach
    # Not pytest's tmp_path: it is private to root (0700), and the agent runs as nobody.
    top = tempfile.mkdtemp(prefix="hypermesh-root-")
    try:
        root = os.path.join(top, "root")
        shutil.copytree(FIXTURE_ROOT, root)
        os.chmod(top, 0o755)
        for name in ("proc/diskstats", "proc/net/dev"):
            if how == "deleted":
                os.unlink(os.path.join(root, name))
            else:
                os.chmod(os.path.join(root, name), 0)
        with (
            AgentProcess("--root", root, "--interval", "0.2", prefix=prefix, command=command) as agent,
            httpx.Client(base_url=agent.url, timeout=10) as client,
        ):
            for _ in range(3):
                by_name = scrape(client)
            success = {s.labels["collector"]: s.value for s in by_name["hypermesh_scrape_collector_success"]}
            assert {area for area, value in success.items() if value == 0} == FROM_DISKSTATS_AND_NETDEV
            assert success["cpu"] == success["meminfo"] == success["filesystem"] == 1
            assert "hypermesh_disk_read_bytes_total" not in by_name
            # The sampler goes on with what it can read; the agent stays up.
            assert client.get("/healthz").status_code == 200
            log = agent.log()
        reason = "No such file or directory" if how == "deleted" else "Permission denied"
        for area, name in (("disk", "proc/diskstats"), ("network", "proc/net/dev")):
            line = f"collector failed: {area}: cannot read {root}/{name}: {reason}"
            assert log.count(line) == 1, log  # three scrapes, one line: not one per scrape
    finally:
        shutil.rmtree(top)


def _remote_fstypes_in_init_mounts() -> set[str]:
    """Network and FUSE filesystems in /proc/1/mountinfo, by the kernel's own names (an independent list)."""
    network = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "9p", "afs", "lustre", "sshfs"}
    with open("/proc/1/mountinfo") as f:
        fstypes = {line.split(" - ", 1)[1].split()[0] for line in f if " - " in line}
    return {t for t in fstypes if t in network or t.startswith("fuse")}


@pytest.mark.root
def test_node_stats_may_block_only_with_a_network_or_fuse_mount(tmp_path):
    """The agent scrapes on its event loop unless this says a read may wait on a filesystem server."""
    from hypermesh.platform.linux import LinuxBackend
    from hypermesh.sampling.sampler import Sampler

    with Sampler(backend=LinuxBackend()) as sampler:
        assert sampler.node_stats_may_block() is True  # nothing read yet: assume the worst
        sampler.node_stats()
        assert sampler.node_stats_may_block() is bool(_remote_fstypes_in_init_mounts())
        assert sampler.unreadable_sources() == {}  # every kernel file is readable here, as root
    # The same question inside namespaces where a FUSE mount is one of init's mounts.
    script = (
        "from hypermesh.platform.linux import LinuxBackend\n"
        "from hypermesh.sampling.sampler import Sampler\n"
        "s = Sampler(backend=LinuxBackend()); s.node_stats(); print(s.node_stats_may_block(), flush=True)\n"
        "import time; time.sleep(60)\n"  # its statvfs thread is stuck in the mount until the owner lets go
    )
    command = [*hung_mount_prefix(str(tmp_path / "hung")), sys.executable, "-c", script]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        line = _first_line_then_release(proc)
    assert line == "True"


def _first_line_then_release(proc: subprocess.Popen[str]) -> str:
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline().strip() if ready and proc.stdout else ""
    finally:
        release_hung_mount(proc.pid)
        proc.wait(timeout=30)
    return line
