"""TC counts in both directions against traffic we make ourselves through a veth pair into a fresh network
namespace, and what stays on the interface after a run ends, is killed, or is cleaned up.

The host side ``hmt<pid>a`` carries the programs; its peer lives in a namespace the test creates and
removes. Neighbour entries are permanent and IPv6 is off on both ends, so every frame is one the test
made: UDP datagrams each way (different counts and sizes, so a mixed-up direction shows), ICMP echo
requests and their replies, and one TCP exchange counted by the peer namespace's own TCP statistics.
On this kernel (6.6+) ``auto`` takes tcx links; the 6.1 guest (tests/vm) runs the same tests through
clsact filters.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

import hypermesh.ebpf
from hypermesh.ebpf import clsact
from hypermesh.errors import Unsupported
from tests.conftest import require_binary
from tests.integration.ebpf_support import (
    REPO,
    open_fds,
    our_kernel_links,
    our_kernel_programs,
    require_ebpf,
    run_cli,
)
from tests.integration.test_ebpf_xdp import Veth, _possible_cpus

pytestmark = [pytest.mark.ebpf, pytest.mark.root, pytest.mark.netns]

HEADERS = 14 + 20 + 8  # ethernet + IPv4 + UDP (or ICMP echo) headers
N_IN, PAYLOAD_IN = 83, 120  # datagrams from the peer (host ingress)
N_OUT, PAYLOAD_OUT = 61, 200  # datagrams to the peer (host egress)
N_ICMP, PAYLOAD_ICMP = 9, 56  # echo requests out, replies in
TCP_BYTES = 1000  # one segment: no GSO super-packet, one frame per TCP segment


def tcx_expected() -> bool:
    """Whether this kernel has tcx links: Linux 6.6 added them (the release, an independent fact)."""
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return (major, minor) >= (6, 6)


class TcVeth(Veth):
    def __init__(self) -> None:
        super().__init__()
        tag = os.getpid() % 10000
        self.netns = f"hm-tc-{tag}"
        self.host_if, self.peer_if = f"hmt{tag}a", f"hmt{tag}b"
        octet = (tag + 125) % 250 + 1  # another /24 than the XDP tests' pair of the same process
        self.host_ip, self.peer_ip = f"198.18.{octet}.1", f"198.18.{octet}.2"

    def stat(self, name: str) -> int:
        with open(f"/sys/class/net/{self.host_if}/statistics/{name}") as f:
            return int(f.read())

    def peer_tcp(self) -> dict[str, int]:
        out = subprocess.run(
            ["ip", "netns", "exec", self.netns, "cat", "/proc/net/snmp"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout  # fmt: skip
        names, values = (line.split()[1:] for line in out.splitlines() if line.startswith("Tcp:"))
        return dict(zip(names, map(int, values), strict=True))


@pytest.fixture
def veth() -> Iterator[TcVeth]:
    require_ebpf()
    require_binary("ip")
    pair = TcVeth()
    pair.up()
    pair.static_neighbours()
    try:
        yield pair
    finally:
        pair.down()


PEER = """
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(({peer_ip!r}, 0))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM); t.bind(({peer_ip!r}, 0)); t.listen(1)
print(u.getsockname()[1], t.getsockname()[1], flush=True)
host_port = int(sys.stdin.readline())
for _ in range({n_out}): u.recv(65536)
for _ in range({n_in}): u.sendto(b"y" * {payload_in}, ({host_ip!r}, host_port))
conn, _ = t.accept()
got = 0
while got < {tcp_bytes}: got += len(conn.recv(65536))
conn.sendall(b"ok")
assert conn.recv(1) == b""
conn.close()
print("done", flush=True)
"""


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _ping(veth: TcVeth, count: int) -> None:
    """``count`` ICMP echo requests to the peer, each waited for (ping is not installed everywhere)."""
    ident = os.getpid() & 0xFFFF
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.settimeout(5)
        for seq in range(1, count + 1):
            payload = bytes(range(PAYLOAD_ICMP))
            header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
            packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload
            s.sendto(packet, (veth.peer_ip, 0))
            while True:
                reply, (source, _) = s.recvfrom(65536)
                icmp = reply[(reply[0] & 0xF) * 4 :]
                if source == veth.peer_ip and icmp[0] == 0 and struct.unpack("!HH", icmp[4:8]) == (ident, seq):
                    break


def _exchange(veth: TcVeth) -> None:
    """UDP both ways, ICMP echo, and one TCP exchange with the peer, each step waited for."""
    code = PEER.format(
        peer_ip=veth.peer_ip, host_ip=veth.host_ip, n_out=N_OUT, n_in=N_IN, payload_in=PAYLOAD_IN, tcp_bytes=TCP_BYTES
    )
    with subprocess.Popen(
        ["ip", "netns", "exec", veth.netns, sys.executable, "-c", code],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    ) as peer:  # fmt: skip
        _talk(veth, peer)


def _talk(veth: TcVeth, peer: subprocess.Popen[str]) -> None:
    try:
        assert peer.stdin is not None and peer.stdout is not None
        udp_port, tcp_port = map(int, peer.stdout.readline().split())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
            sink.bind((veth.host_ip, 0))
            sink.settimeout(10)
            peer.stdin.write(f"{sink.getsockname()[1]}\n")
            peer.stdin.flush()
            for _ in range(N_OUT):
                sink.sendto(b"x" * PAYLOAD_OUT, (veth.peer_ip, udp_port))
            for _ in range(N_IN):
                assert len(sink.recv(65536)) == PAYLOAD_IN
        with socket.create_connection((veth.peer_ip, tcp_port), timeout=10) as conn:
            conn.sendall(b"z" * TCP_BYTES)
            assert conn.recv(2) == b"ok"
        assert peer.stdout.readline().strip() == "done"
        assert peer.wait(10) == 0
        _ping(veth, N_ICMP)
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait()


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.02)
    time.sleep(0.1)  # let any straggler land, so "exactly" means exactly


@pytest.mark.parametrize("attach", ["auto", "clsact"])
def test_tc_counts_both_directions_exactly(veth: TcVeth, attach: str) -> None:
    """Every frame each way is accounted for by protocol, exactly, and matches the interface's own
    rx/tx packet and byte counters (veth counts whole frames, as TC sees them)."""
    expected_path = "tcx" if attach == "auto" and tcx_expected() else "clsact"
    with hypermesh.ebpf.load("tc", interface=veth.host_if, attach=attach) as prog:
        prog.attach()
        assert prog.attach_path == expected_path
        assert [link.kind for link in prog.links] == [expected_path, expected_path]
        before = {name: veth.stat(name) for name in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes")}
        tcp_before = veth.peer_tcp()
        _exchange(veth)

        def settled() -> bool:
            tcp = veth.peer_tcp()
            counts = prog.read()
            assert counts.ingress is not None and counts.egress is not None
            return (
                counts.egress.packets["ipv4_tcp"] == tcp["InSegs"] - tcp_before["InSegs"]
                and counts.ingress.packets["ipv4_tcp"] == tcp["OutSegs"] - tcp_before["OutSegs"]
            )

        _wait_for(settled)
        counts = prog.read()
        after = {name: veth.stat(name) for name in before}
        tcp = veth.peer_tcp()
    assert counts.interface == veth.host_if and counts.attach == expected_path
    ingress, egress = counts.ingress, counts.egress
    assert ingress is not None and egress is not None
    # Independent count of TCP segments: the peer namespace holds only this connection.
    tcp_in = tcp["OutSegs"] + tcp["RetransSegs"] - tcp_before["OutSegs"] - tcp_before["RetransSegs"]
    tcp_out = tcp["InSegs"] - tcp_before["InSegs"]
    assert tcp_in >= 4 and tcp_out >= 4  # SYN(-ACK), data, FIN, ACKs: the exchange did happen
    zero = dict.fromkeys(ingress.packets, 0)
    assert ingress.packets == zero | {"ipv4_udp": N_IN, "ipv4_icmp": N_ICMP, "ipv4_tcp": tcp_in}
    assert egress.packets == zero | {"ipv4_udp": N_OUT, "ipv4_icmp": N_ICMP, "ipv4_tcp": tcp_out}
    assert ingress.bytes["ipv4_udp"] == N_IN * (HEADERS + PAYLOAD_IN)
    assert egress.bytes["ipv4_udp"] == N_OUT * (HEADERS + PAYLOAD_OUT)
    assert ingress.bytes["ipv4_icmp"] == egress.bytes["ipv4_icmp"] == N_ICMP * (HEADERS + PAYLOAD_ICMP)
    assert ingress.total_packets == after["rx_packets"] - before["rx_packets"]
    assert egress.total_packets == after["tx_packets"] - before["tx_packets"]
    assert ingress.total_bytes == after["rx_bytes"] - before["rx_bytes"]
    assert egress.total_bytes == after["tx_bytes"] - before["tx_bytes"]
    for direction in (ingress, egress):
        assert direction.total_packets == sum(direction.packets.values()) == sum(direction.cpu_packets)
        assert len(direction.cpu_packets) == _possible_cpus()  # one slot per possible CPU, as the kernel lays out
        assert direction.total_bytes == sum(direction.bytes.values())
    assert _ours_on(veth.host_if) == ([], [])  # closed: nothing of ours left on the interface


def test_one_direction_loads_and_counts_only_that_one(veth: TcVeth) -> None:
    with hypermesh.ebpf.load("tc", interface=veth.host_if, direction="egress") as prog:
        prog.attach()
        assert len(prog.links) == 1 and prog.links[0].target == f"{veth.host_if} egress"
        _ping(veth, 3)
        counts = prog.read()
    assert counts.ingress is None and counts.egress is not None
    assert counts.egress.packets["ipv4_icmp"] == 3


def _ours_on(interface: str) -> tuple[list[str], list[str]]:
    """Our filters on the interface as ``tc filter show`` and ``bpftool net`` list them (independent
    readers of the kernel's state): lines naming our programs."""
    shown = []
    for direction in ("ingress", "egress"):
        out = subprocess.run(
            ["tc", "filter", "show", "dev", interface, direction],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
        shown += [line for line in out.splitlines() if "hm_tc_" in line]
    net = subprocess.run(["bpftool", "net", "show", "dev", interface], capture_output=True, text=True, timeout=10)
    return shown, [line for line in net.stdout.splitlines() if "hm_tc_" in line]


def _qdiscs(interface: str) -> str:
    return subprocess.run(["tc", "qdisc", "show", "dev", interface], capture_output=True, text=True, check=True).stdout


def _start_cli(interface: str, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hypermesh.cli.main", "ebpf", "run", "tc", "-i", interface, "--json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "tc attached to" in line, line + proc.stderr.read()
    return proc


def test_cli_reports_the_attach_path_and_counts(veth: TcVeth) -> None:
    path = "tcx" if tcx_expected() else "clsact"
    proc = _start_cli(veth.host_if)
    try:
        _ping(veth, 4)
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: must still print the result
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert data["attach"] == path and data["interface"] == veth.host_if
    assert data["ingress"]["packets"]["ipv4_icmp"] == data["egress"]["packets"]["ipv4_icmp"] == 4
    text = run_cli("ebpf", "run", "tc", "-i", veth.host_if, "--direction", "ingress", "--duration", "0.2")
    assert text.returncode == 0, text.stderr
    assert f"tc attached to {path} {veth.host_if} ingress;" in text.stderr
    assert text.stdout.splitlines()[0] == f"{veth.host_if} ({path})"
    assert "EGRESS" not in text.stdout and text.stdout.splitlines()[-1].split()[0] == "total"
    assert _ours_on(veth.host_if) == ([], [])


def test_needs_only_cap_bpf_and_cap_net_admin(veth: TcVeth) -> None:
    """Unlike xdp, tc needs no CAP_PERFMON: its counters are looked up by a computed key, never indexed by
    pointer arithmetic the verifier allows only with it. Without CAP_NET_ADMIN it is refused (rc 3)."""
    setpriv = require_binary("setpriv")
    for keep, code in (("+bpf,+net_admin", 0), ("+bpf,+perfmon", 3)):
        for attach in ("auto", "clsact"):
            result = subprocess.run(
                [setpriv, "--inh-caps=-all", "--ambient-caps=-all", f"--bounding-set=-all,{keep}", "--",
                 sys.executable, "-m", "hypermesh.cli.main", "ebpf", "run", "tc", "-i", veth.host_if, "--attach",
                 attach, "--duration", "0.1", "--json"],
                capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
            )  # fmt: skip
            assert result.returncode == code, (keep, attach, result.stderr)
            if code == 3:
                assert "CAP_NET_ADMIN" in result.stderr and "Traceback" not in result.stderr
            else:
                assert json.loads(result.stdout)["interface"] == veth.host_if
    assert _ours_on(veth.host_if) == ([], [])


def test_tcx_follows_kernel_support(veth: TcVeth) -> None:
    """--attach tcx works where the kernel has tcx, and exits 4 saying why (with the way out) elsewhere."""
    result = run_cli("ebpf", "run", "tc", "-i", veth.host_if, "--attach", "tcx", "--duration", "0.1")
    if tcx_expected():
        assert result.returncode == 0, result.stderr
        assert "tcx" in result.stderr.splitlines()[0]
    else:
        assert result.returncode == 4, result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert "6.6" in line and "clsact" in line and "Traceback" not in line
        with hypermesh.ebpf.load("tc", interface=veth.host_if, attach="tcx") as prog, pytest.raises(Unsupported):
            prog.attach()
    assert _ours_on(veth.host_if) == ([], [])


def test_sigkill_of_a_tcx_run_leaves_nothing(veth: TcVeth) -> None:
    """A tcx link belongs to the process's fd: SIGKILL detaches it, no cleanup needed."""
    if not tcx_expected():
        with pytest.raises(Unsupported):
            hypermesh.ebpf.load("tc", interface=veth.host_if, attach="tcx").attach()
        return
    programs, links = our_kernel_programs(), our_kernel_links()
    proc = _start_cli(veth.host_if, "--attach", "tcx")
    assert len(our_kernel_links() - links) == 2  # really attached, one link per direction
    proc.kill()
    proc.communicate(timeout=20)
    _wait_for(lambda: our_kernel_links() <= links and our_kernel_programs() <= programs)
    assert our_kernel_links() <= links and our_kernel_programs() <= programs
    assert _ours_on(veth.host_if) == ([], [])
    assert "clsact" not in _qdiscs(veth.host_if)


def test_sigkill_of_a_clsact_run_is_cleaned_up_by_the_next_run_and_by_detach(veth: TcVeth) -> None:
    """A cls_bpf filter outlives a killed process: it stays visible (tc, bpftool) until the next run on
    the interface removes it (and says so), or ``ebpf detach tc-IF`` does; the clsact qdisc the killed
    run created goes with its last filter."""
    require_binary("tc")
    require_binary("bpftool")
    iface = veth.host_if
    programs = our_kernel_programs()
    for cleaner in ("next run", "detach"):
        proc = _start_cli(iface, "--attach", "clsact")
        killed = proc.pid
        proc.kill()
        proc.communicate(timeout=20)
        shown, net = _ours_on(iface)
        assert len(shown) == 2 and len(net) == 2, (shown, net)  # left behind, as the kernel lists it
        assert "clsact" in _qdiscs(iface)
        left = [f for f in clsact.filters(veth_ifindex(iface)) if f.ours]
        assert {(f.direction, f.owner_pid, f.owner_alive) for f in left} == {
            ("ingress", killed, False),
            ("egress", killed, False),
        }
        if cleaner == "next run":
            result = run_cli("ebpf", "run", "tc", "-i", iface, "--attach", "clsact", "--duration", "0.1")
            assert result.returncode == 0, result.stderr
            notes = [line for line in result.stderr.splitlines() if "removed a clsact filter left on" in line]
            assert len(notes) == 2 and all(f"of pid {killed}" in line for line in notes), result.stderr
        else:
            result = run_cli("ebpf", "detach", f"tc-{iface}")
            assert result.returncode == 0, result.stderr
            assert result.stdout.count("removed the clsact filter") == 2, result.stdout
        assert _ours_on(iface) == ([], [])
        assert "clsact" not in _qdiscs(iface)  # the killed run had created it
    missing = run_cli("ebpf", "detach", f"tc-{iface}")
    assert missing.returncode == 2 and "nothing of hypermesh's tc" in missing.stderr
    _wait_for(lambda: our_kernel_programs() <= programs)
    assert our_kernel_programs() <= programs


def veth_ifindex(interface: str) -> int:
    return socket.if_nametoindex(interface)


def test_a_running_clsact_run_is_not_taken_for_a_leftover(veth: TcVeth) -> None:
    """Two runs on one interface: the second neither removes the first's filters nor fails; detach
    refuses to remove a live run's filters (exit 2, naming its pid)."""
    iface = veth.host_if
    first = _start_cli(iface, "--attach", "clsact")
    try:
        second = run_cli("ebpf", "run", "tc", "-i", iface, "--attach", "clsact", "--duration", "0.1")
        assert second.returncode == 0, second.stderr
        assert "removed a clsact filter" not in second.stderr
        detach = run_cli("ebpf", "detach", f"tc-{iface}")
        assert detach.returncode == 2 and f"run still going (pid {first.pid})" in detach.stderr, detach.stderr
        assert len(_ours_on(iface)[0]) == 2  # the first run's two filters, still there
        _ping(veth, 2)
        first.send_signal(signal.SIGTERM)
        out, err = first.communicate(timeout=20)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert json.loads(out)["egress"]["packets"]["ipv4_icmp"] == 2  # still counting after the second run
    assert _ours_on(iface) == ([], []) and "clsact" not in _qdiscs(iface)


def test_someone_else_s_clsact_qdisc_and_filter_are_left_alone(veth: TcVeth) -> None:
    require_binary("tc")
    iface = veth.host_if
    subprocess.run(["tc", "qdisc", "add", "dev", iface, "clsact"], check=True, timeout=10)
    subprocess.run(
        # A u32 filter that never matches (its verdict would end the classification before ours).
        ["tc", "filter", "add", "dev", iface, "ingress", "prio", "7", "u32", "match", "u32", "0x12345678", "0xffffffff",
         "at", "0", "classid", "1:1"],
        check=True, timeout=10,
    )  # fmt: skip
    with hypermesh.ebpf.load("tc", interface=iface, attach="clsact") as prog:
        prog.attach()
        _ping(veth, 2)
        counts = prog.read()
    assert counts.ingress is not None and counts.ingress.packets["ipv4_icmp"] == 2
    theirs = subprocess.run(["tc", "filter", "show", "dev", iface, "ingress"], capture_output=True, text=True).stdout
    assert "u32" in theirs and "12345678" in theirs and "hm_tc_" not in theirs
    assert "clsact" in _qdiscs(iface)


def test_pinned_tcx_run_stays_until_detach(veth: TcVeth) -> None:
    name = f"tc-{veth.host_if}"
    if not tcx_expected():
        result = run_cli("ebpf", "run", "tc", "-i", veth.host_if, "--pin", "--duration", "0.1")
        assert result.returncode == 4 and "run without --pin" in result.stderr, result.stderr
        assert _ours_on(veth.host_if) == ([], [])
        return
    links = our_kernel_links()
    try:
        result = run_cli("ebpf", "run", "tc", "-i", veth.host_if, "--pin", "--duration", "0.1")
        assert result.returncode == 0, result.stderr
        assert f"'hypermesh ebpf detach {name}' removes it" in result.stderr
        assert len(our_kernel_links() - links) == 2  # the process is gone, the pinned links stay
        _ping(veth, 1)
        detached = run_cli("ebpf", "detach", name)
        assert detached.returncode == 0, detached.stderr
        assert "removed" in detached.stdout and "pins" in detached.stdout
    finally:
        if os.path.exists(os.path.join(hypermesh.ebpf.PIN_ROOT, name)):
            run_cli("ebpf", "detach", name)
    _wait_for(lambda: our_kernel_links() <= links)
    assert our_kernel_links() <= links


def _filter_state(interface: str) -> tuple[int, set[int], set[int], tuple[list[str], list[str]], str]:
    return open_fds(), our_kernel_programs(), our_kernel_links(), _ours_on(interface), _qdiscs(interface)


@pytest.mark.slow
def test_hundred_cycles_leave_nothing_behind(veth: TcVeth) -> None:
    """100 load/attach/read/close cycles, both attach paths in turn: fds, programs, links, filters and
    qdiscs are back where they started (bpftool and tc as the independent readers)."""
    paths = ["clsact"] + (["tcx"] if tcx_expected() else [])
    with hypermesh.ebpf.load("tc", interface=veth.host_if, attach=paths[-1]) as prog:  # warm up: libbpf, probes
        prog.attach()
    before = _filter_state(veth.host_if)
    for i in range(100):
        prog = hypermesh.ebpf.load("tc", interface=veth.host_if, attach=paths[i % len(paths)])
        prog.attach()
        assert prog.read().attach == paths[i % len(paths)]
        prog.close()
    deadline = time.monotonic() + 5
    while _filter_state(veth.host_if) != before and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel frees a program after an RCU grace period
    after = _filter_state(veth.host_if)
    assert after[0] == before[0] and after[3:] == before[3:]
    assert after[1] <= before[1] and after[2] <= before[2]
