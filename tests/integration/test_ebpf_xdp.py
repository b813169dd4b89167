"""XDP counts against packets we send ourselves through a veth pair into a fresh network namespace.

Host side ``hmx<pid>a`` (198.18.x.1, RFC 2544 benchmarking range) stays in the test's namespace with the program attached; its peer
``hmx<pid>b`` (198.18.x.2) lives in a namespace the test creates and removes. IPv6 is disabled on both
ends so router solicitations and DAD cannot add packets we did not send.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import hypermesh.ebpf
from hypermesh.errors import NotFound, Unsupported
from tests.conftest import require_binary
from tests.integration.ebpf_support import our_kernel_links, require_ebpf, run_cli

pytestmark = [pytest.mark.ebpf, pytest.mark.root, pytest.mark.netns]

PAYLOAD = 100
UDP_FRAME = 14 + 20 + 8 + PAYLOAD  # ethernet + IPv4 + UDP headers + payload, as XDP sees it
ARP_FRAME = 14 + 28  # ethernet + ARP for IPv4 over Ethernet; veth does not pad to 60 bytes


class Veth:
    def __init__(self) -> None:
        tag = os.getpid() % 10000
        self.netns = f"hm-xdp-{tag}"
        self.host_if, self.peer_if = f"hmx{tag}a", f"hmx{tag}b"
        octet = tag % 250 + 1
        self.host_ip, self.peer_ip = f"198.18.{octet}.1", f"198.18.{octet}.2"

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)

    def up(self, mtu: int | None = None) -> None:
        self.down()
        self.ip("netns", "add", self.netns)
        self.ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if, "netns", self.netns)
        if mtu is not None:
            self.ip("link", "set", self.host_if, "mtu", str(mtu))
            self.ip("-n", self.netns, "link", "set", self.peer_if, "mtu", str(mtu))
        for ns, name, addr in ((None, self.host_if, self.host_ip), (self.netns, self.peer_if, self.peer_ip)):
            pre = ["-n", ns] if ns else []
            in_ns = ["ip", "netns", "exec", ns] if ns else []
            sysctl = [*in_ns, "sysctl", "-qw", f"net.ipv6.conf.{name}.disable_ipv6=1"]
            subprocess.run(sysctl, check=True, capture_output=True, timeout=10)
            self.ip(*pre, "addr", "add", f"{addr}/24", "dev", name)
            self.ip(*pre, "link", "set", name, "up")
        self.ip("-n", self.netns, "link", "set", "lo", "up")

    def down(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=10, check=False)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=10, check=False)

    def in_peer(self, code: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.netns, sys.executable, "-c", code], check=True, timeout=30)

    def rx_packets(self) -> int:
        with open(f"/sys/class/net/{self.host_if}/statistics/rx_packets") as f:
            return int(f.read())

    def peer_mac(self) -> str:
        out = subprocess.run(
            ["ip", "netns", "exec", self.netns, "cat", f"/sys/class/net/{self.peer_if}/address"],
            capture_output=True, text=True, check=True, timeout=10,
        )  # fmt: skip
        return out.stdout.strip()

    def static_neighbours(self) -> None:
        """Permanent neighbour entries on both ends: the kernels then send no ARP of their own, so
        every ARP frame XDP sees is one the test sent (see send_arp)."""
        with open(f"/sys/class/net/{self.host_if}/address") as f:
            host_mac = f.read().strip()
        self.ip("neigh", "replace", self.peer_ip, "lladdr", self.peer_mac(), "dev", self.host_if, "nud", "permanent")
        self.ip(
            "-n",
            self.netns,
            "neigh",
            "replace",
            self.host_ip,
            "lladdr",
            host_mac,
            "dev",
            self.peer_if,
            "nud",
            "permanent",
        )

    def send_arp(self, count: int) -> None:
        """``count`` gratuitous ARP requests (42-byte frames) from the peer, through a raw socket."""
        self.in_peer(
            "import socket\n"
            f"mac = bytes.fromhex({self.peer_mac()!r}.replace(':', ''))\n"
            f"ip = socket.inet_aton({self.peer_ip!r})\n"
            "frame = b'\\xff' * 6 + mac + b'\\x08\\x06' + bytes.fromhex('0001080006040001') + mac + ip + bytes(6) + ip\n"
            "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
            f"s.bind(({self.peer_if!r}, 0))\n"
            f"for _ in range({count}): s.send(frame)\n"
        )

    def peer_tcp_segments_sent(self) -> int:
        """TCP segments the peer namespace has sent (/proc/net/snmp there: OutSegs + RetransSegs). Only
        the test's connection lives in that namespace, so the delta is exactly what crossed the veth."""
        out = subprocess.run(
            ["ip", "netns", "exec", self.netns, "cat", "/proc/net/snmp"],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout  # fmt: skip
        names, values = (line.split()[1:] for line in out.splitlines() if line.startswith("Tcp:"))
        tcp = dict(zip(names, map(int, values), strict=True))
        return tcp["OutSegs"] + tcp["RetransSegs"]


@pytest.fixture
def veth() -> Iterator[Veth]:
    require_ebpf()
    require_binary("ip")
    pair = Veth()
    pair.up()
    try:
        yield pair
    finally:
        pair.down()


def _wait_for(predicate: object, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():  # type: ignore[operator]
        time.sleep(0.02)
    time.sleep(0.1)  # let any straggler land, so "exactly" means exactly


def _send(veth: Veth, udp: int, tcp_bytes: int) -> None:
    """From the peer namespace: ``udp`` datagrams to the host side, then one TCP exchange."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind((veth.host_ip, 0))
    server.listen(1)
    port = server.getsockname()[1]
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((veth.host_ip, port))

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            got = 0
            while got < tcp_bytes:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                got += len(chunk)
            conn.sendall(b"ok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    veth.in_peer(
        "import socket\n"
        f"u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"for _ in range({udp}): u.sendto(b'x' * {PAYLOAD}, ('{veth.host_ip}', {port}))\n"
        f"t = socket.create_connection(('{veth.host_ip}', {port}), timeout=10)\n"
        f"t.sendall(b'y' * {tcp_bytes}); assert t.recv(2) == b'ok'; t.close()\n"
    )
    thread.join(10)
    server.close()
    sink.close()


@pytest.mark.parametrize("mode", ["auto", "generic"])
def test_xdp_counts_match_what_was_sent(veth: Veth, mode: str) -> None:
    """Every frame the host side receives is accounted for, by protocol, exactly: 137 UDP datagrams,
    7 ARP frames (the neighbour entries are permanent, so the kernels send none of their own) and the
    TCP segments of one small exchange, counted by the peer namespace's own TCP statistics. The TCP
    payload (1000 bytes) fits one segment: in generic mode a GSO super-packet from the peer would be
    one frame to XDP but several segments to the counters. IPv6 is off on both ends."""
    require_binary("bpftool")
    n_udp, n_arp = 137, 7
    veth.static_neighbours()
    with hypermesh.ebpf.load("xdp", interface=veth.host_if, mode=mode) as prog:
        prog.attach()
        assert prog.attached_mode == ("native" if mode == "auto" else "generic")  # veth has native XDP
        rx_before, tcp_before = veth.rx_packets(), veth.peer_tcp_segments_sent()
        veth.send_arp(n_arp)
        _send(veth, n_udp, tcp_bytes=1000)
        _wait_for(lambda: prog.read().packets["ipv4_udp"] >= n_udp)
        time.sleep(0.2)  # the last ACK of the close, which may trail the exchange
        counts = prog.read()
        rx_after, tcp_sent = veth.rx_packets(), veth.peer_tcp_segments_sent() - tcp_before
        by_bpftool = _per_cpu_stats_by_bpftool(prog._stats.fd)
    assert counts.mode == prog.attached_mode
    assert tcp_sent >= 5  # SYN, ACK, data, FIN, ACK at least: the exchange did happen
    expected = dict.fromkeys(counts.packets, 0) | {"ipv4_udp": n_udp, "arp": n_arp, "ipv4_tcp": tcp_sent}
    assert counts.packets == expected
    assert counts.bytes["ipv4_udp"] == n_udp * UDP_FRAME
    assert counts.bytes["arp"] == n_arp * ARP_FRAME
    # Independent count: every frame XDP saw, the interface's own rx counter saw too.
    assert counts.total_packets == rx_after - rx_before
    assert counts.total_packets == sum(counts.packets.values()) == sum(counts.cpu_packets)
    assert len(counts.cpu_packets) == _possible_cpus()  # one slot per possible CPU, as the kernel lays out
    # Per CPU and protocol, against bpftool's own read of the same map (an independent reader).
    assert [
        list(p + b) for p, b in zip(counts.cpu_packets_by_protocol, counts.cpu_bytes_by_protocol, strict=True)
    ] == by_bpftool
    assert [sum(column) for column in zip(*counts.cpu_packets_by_protocol, strict=True)] == list(
        counts.packets.values()
    )
    assert [sum(column) for column in zip(*counts.cpu_bytes_by_protocol, strict=True)] == list(counts.bytes.values())
    assert counts.cpu_packets == tuple(sum(cpu) for cpu in counts.cpu_packets_by_protocol)


def _per_cpu_stats_by_bpftool(map_fd: int) -> list[list[int]]:
    """xdp_stats[0] per CPU as bpftool reads it: 20 u64 counters (packets then bytes by protocol)."""
    with open(f"/proc/self/fdinfo/{map_fd}") as f:
        map_id = next(line.split()[1] for line in f if line.startswith("map_id:"))
    out = subprocess.run(
        ["bpftool", "-j", "map", "lookup", "id", map_id, "key", "0", "0", "0", "0"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip
    values = json.loads(out)["values"]
    raw = [bytes(int(b, 16) for b in cpu["value"]) for cpu in sorted(values, key=lambda v: v["cpu"])]
    return [list(memoryview(value).cast("Q"))[:20] for value in raw]


def _possible_cpus() -> int:
    with open("/sys/devices/system/cpu/possible") as f:
        spans = [part.split("-") for part in f.read().strip().split(",")]
    return sum(int(span[-1]) - int(span[0]) + 1 for span in spans)


def test_cli_xdp_reports_mode_and_counts(veth: Veth) -> None:
    n_udp = 50
    proc = subprocess.Popen(
        [sys.executable, "-m", "hypermesh.cli.main", "ebpf", "run", "xdp", "--interface", veth.host_if, "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert f"xdp attached to {veth.host_if} in native mode" in line
        _send(veth, n_udp, tcp_bytes=1000)
        time.sleep(0.3)
        proc.send_signal(2)  # Ctrl-C: must still print the result
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, err
    data = json.loads(out)
    assert data["interface"] == veth.host_if
    assert data["mode"] == "native"
    assert data["packets"]["ipv4_udp"] == n_udp
    assert data["bytes"]["ipv4_udp"] == n_udp * UDP_FRAME


def test_unknown_interface_lists_existing_ones() -> None:
    require_ebpf()
    with pytest.raises(NotFound) as info:
        hypermesh.ebpf.load("xdp", interface="nosuch0")
    assert "nosuch0" in str(info.value)
    assert "lo" in info.value.available
    result = run_cli("ebpf", "run", "xdp", "--interface", "nosuch0", "--duration", "0.1")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "nosuch0" in lines[0] and "available:" in lines[0] and "lo" in lines[0]


def test_native_mode_without_driver_support_is_unsupported() -> None:
    """lo's driver has no native XDP: --mode native is "unsupported here" (exit 4) with the way out,
    nothing stays attached, and auto on the same interface falls back to generic."""
    require_ebpf()
    before = our_kernel_links()
    with hypermesh.ebpf.load("xdp", interface="lo", mode="native") as prog, pytest.raises(Unsupported) as info:
        prog.attach()
    assert "--mode generic" in info.value.reason and info.value.exit_code == 4
    result = run_cli("ebpf", "run", "xdp", "-i", "lo", "--mode", "native", "--duration", "0.2")
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "native XDP on lo" in lines[0] and "--mode generic" in lines[0] and "Traceback" not in result.stderr
    auto = run_cli("ebpf", "run", "xdp", "-i", "lo", "--duration", "0.1")
    assert auto.returncode == 0, auto.stderr
    assert "generic mode" in auto.stderr
    _wait_for(lambda: our_kernel_links() <= before, timeout=5.0)
    assert our_kernel_links() <= before


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_cli_says_when_the_interface_is_deleted_mid_run(veth: Veth, mode: str) -> None:
    """Deleting the interface detaches the program in the kernel; the run used to end as if nothing
    had happened, with counts that silently stopped at the deletion."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hypermesh.cli.main", "ebpf", "run", "xdp", "-i", veth.host_if, "--mode", mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        assert f"in {mode} mode" in proc.stderr.readline()
        _send(veth, 5, tcp_bytes=100)
        time.sleep(0.2)
        veth.ip("link", "del", veth.host_if)
        proc.send_signal(2)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, err
    assert f"{veth.host_if} was deleted during the run: the counts stop where it went" in err
    assert "ipv4_udp" in out
    with hypermesh.ebpf.load("xdp", interface="lo", mode="generic") as prog:
        prog.attach()
        assert not prog.interface_gone()  # a live interface is not reported


@pytest.fixture
def jumbo_veth() -> Iterator[Veth]:
    """A veth pair with MTU 9000: veth has native XDP, but refuses it above a page-sized MTU
    (ERANGE, "Peer MTU is too large to set XDP")."""
    require_ebpf()
    require_binary("ip")
    pair = Veth()
    pair.up(mtu=9000)
    try:
        yield pair
    finally:
        pair.down()


def _xdp_attached(interface: str) -> bool:
    out = subprocess.run(["ip", "-d", "link", "show", "dev", interface], capture_output=True, text=True, check=True)
    return " xdp" in out.stdout or "prog/xdp" in out.stdout


def test_native_refusal_is_reported_in_the_kernel_s_words(jumbo_veth: Veth) -> None:
    """auto used to say "native not supported by the driver: fell back" for any refusal, and --mode
    native exited 1 with "Numerical result out of range" and no hint; only EOPNOTSUPP means the
    driver lacks native XDP."""
    iface = jumbo_veth.host_if
    before = our_kernel_links()
    with hypermesh.ebpf.load("xdp", interface=iface) as prog:
        prog.attach()
        assert prog.attached_mode == "generic"
        assert "Peer MTU is too large to set XDP" in prog.native_refused and "ERANGE" in prog.native_refused
    with hypermesh.ebpf.load("xdp", interface=iface, mode="native") as prog, pytest.raises(Unsupported) as info:
        prog.attach()
    reason = info.value.reason
    assert "Peer MTU is too large to set XDP" in reason and f"lower the MTU of {iface}" in reason
    assert "--mode generic" in reason and "no native" not in reason
    auto = run_cli("ebpf", "run", "xdp", "-i", iface, "--duration", "0.1")
    assert auto.returncode == 0, auto.stderr
    first = auto.stderr.splitlines()[0]
    assert f"xdp attached to {iface} in generic mode (fell back: the kernel refused native XDP" in first, first
    assert "Peer MTU is too large" in first and "not supported by the driver" not in first
    native = run_cli("ebpf", "run", "xdp", "-i", iface, "--mode", "native", "--duration", "0.1")
    assert native.returncode == 4, native.stderr
    lines = native.stderr.strip().splitlines()
    assert len(lines) == 1 and "Peer MTU is too large to set XDP" in lines[0] and "lower the MTU" in lines[0]
    # The kernel's message comes from replaying the attach through netlink: nothing stays attached.
    assert not _xdp_attached(iface)
    _wait_for(lambda: our_kernel_links() <= before, timeout=5.0)
    assert our_kernel_links() <= before
    # Once the MTU fits, native mode is taken: the refusal was the MTU's, not the driver's.
    jumbo_veth.ip("link", "set", iface, "mtu", "1500")
    jumbo_veth.ip("-n", jumbo_veth.netns, "link", "set", jumbo_veth.peer_if, "mtu", "1500")
    with hypermesh.ebpf.load("xdp", interface=iface) as prog:
        prog.attach()
        assert prog.attached_mode == "native" and prog.native_refused == ""


def test_a_driver_without_native_xdp_is_said_so_on_fall_back() -> None:
    require_ebpf()
    with hypermesh.ebpf.load("xdp", interface="lo") as prog:
        prog.attach()
        assert prog.attached_mode == "generic"
        assert prog.native_refused == "the driver of lo has no native (driver) XDP support"


def _status() -> dict[str, dict[str, object]]:
    result = run_cli("ebpf", "status", "--json")
    assert result.returncode == 0, result.stderr
    return {e["name"]: e for e in json.loads(result.stdout)}


def _xdp_prog_of_link(link_id: int) -> int:
    """The program a link holds (bpftool), to compare with the one an interface runs (ip link)."""
    links = json.loads(
        subprocess.run(["bpftool", "-j", "link", "list"], capture_output=True, text=True, check=True).stdout
    )
    return next(int(link["prog_id"]) for link in links if link["id"] == link_id)


def _xdp_prog_on(interface: str) -> int | None:
    out = subprocess.run(
        ["ip", "-j", "-d", "link", "show", "dev", interface], capture_output=True, text=True, check=True
    )
    xdp = json.loads(out.stdout)[0].get("xdp")
    return int(xdp["prog"]["id"]) if xdp else None


def test_xdp_is_pinned_per_interface_and_status_tells_when_it_is_gone(veth: Veth) -> None:
    """Pins were keyed by program name alone: a second interface could not be pinned, status did not
    say which interface, and after the interface was deleted it still listed the link as if live."""
    require_binary("bpftool")
    before = our_kernel_links()
    dotted = f"{veth.host_if[:-1]}.c"  # bpffs refuses dots in names: the pin must spell it otherwise
    veth.ip("link", "add", dotted, "type", "veth", "peer", "name", f"{veth.host_if[:-1]}d")
    names = {veth.host_if: f"xdp-{veth.host_if}", "lo": "xdp-lo", dotted: f"xdp-{dotted[:-2]}%2Ec"}
    try:
        for interface, name in names.items():
            result = run_cli("ebpf", "run", "xdp", "-i", interface, "--mode", "generic", "--pin", "--duration", "0.1")
            assert result.returncode == 0, result.stderr
            assert f"'hypermesh ebpf detach {name}' removes it" in result.stderr
        status = _status()
        for interface, name in names.items():
            entry = status[name]
            assert (entry["interface"], entry["attached"]) == (interface, True), entry
            (link,) = [o for o in entry["objects"] if o["kind"] == "link"]  # type: ignore[attr-defined]
            assert _xdp_prog_of_link(link["id"]) == _xdp_prog_on(interface)  # bpftool and ip agree
        again = run_cli("ebpf", "run", "xdp", "-i", "lo", "--mode", "generic", "--pin", "--duration", "0.1")
        assert again.returncode == 2 and "xdp-lo is already pinned" in again.stderr
        veth.ip("link", "del", veth.host_if)  # the kernel detaches its program
        status = _status()
        gone = status[names[veth.host_if]]
        assert (gone["interface"], gone["attached"]) == (veth.host_if, False), gone
        assert status["xdp-lo"]["attached"] is True
        text = run_cli("ebpf", "status").stdout
        line = next(x for x in text.splitlines() if x.startswith(names[veth.host_if] + " "))
        assert f"interface {veth.host_if}" in line and "NOT attached" in line, text
        assert "NOT attached" not in next(x for x in text.splitlines() if x.startswith("xdp-lo "))
    finally:
        for name in names.values():
            if os.path.exists(os.path.join(hypermesh.ebpf.PIN_ROOT, name)):
                assert run_cli("ebpf", "detach", name).returncode == 0
        subprocess.run(["ip", "link", "del", dotted], capture_output=True, check=False)
    assert not set(names.values()) & set(_status())
    _wait_for(lambda: our_kernel_links() <= before, timeout=5.0)
    assert our_kernel_links() <= before


def test_a_pin_in_the_old_layout_is_still_listed_and_detached() -> None:
    """Pins made before the per-interface layout sit in /sys/fs/bpf/hypermesh/xdp/."""
    require_ebpf()
    require_binary("bpftool")
    old = os.path.join(hypermesh.ebpf.PIN_ROOT, "xdp")
    assert not os.path.exists(old)
    result = run_cli("ebpf", "run", "xdp", "-i", "lo", "--mode", "generic", "--pin", "--duration", "0.1")
    assert result.returncode == 0, result.stderr
    try:
        link_id = next(o["id"] for o in _status()["xdp-lo"]["objects"] if o["kind"] == "link")  # type: ignore[attr-defined]
        os.mkdir(old)
        subprocess.run(["bpftool", "link", "pin", "id", str(link_id), f"{old}/link-0-xdp"], check=True, timeout=30)
        assert run_cli("ebpf", "detach", "xdp-lo").returncode == 0  # the old pin alone holds the link now
        entry = _status()["xdp"]
        assert (entry["interface"], entry["attached"]) == ("lo", True), entry
        detached = run_cli("ebpf", "detach", "xdp")
        assert detached.returncode == 0, detached.stderr
    finally:
        for name in ("xdp", "xdp-lo"):
            if os.path.exists(os.path.join(hypermesh.ebpf.PIN_ROOT, name)):
                run_cli("ebpf", "detach", name)
    assert not os.path.exists(old)


def test_pin_names_round_trip() -> None:
    from hypermesh.ebpf.pin import pin_component, unpin_component

    for name in ("eth0", "eth0.100", "a%b", "br-lan_1", "we\udcffird"):
        spelled = pin_component(name)
        assert "." not in spelled and "/" not in spelled
        assert unpin_component(spelled) == name
    assert pin_component("eth0.100") == "eth0%2E100"
