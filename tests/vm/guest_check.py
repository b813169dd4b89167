"""Runs INSIDE the second kernel (Debian 6.1, kprobes on) booted by test_second_kernel.py.

Proves, on a kernel other than the one the objects were built on: the probe sees kprobes, every
committed .bpf.o loads, attaches and reads (CO-RE relocates execsnoop against this kernel's BTF), and
``syscalls --attach auto`` picks the kprobe. Prints one JSON line; exits non-zero on any failure.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
import time
from typing import Any

DATAGRAMS = 50


def make_traffic(name: str) -> None:
    """What each program must then show: datagrams on lo for xdp, a known burst of getppid for syscalls."""
    if name in ("xdp", "tc"):
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx,
        ):
            rx.bind(("127.0.0.1", 0))
            for _ in range(DATAGRAMS):
                tx.sendto(b"x" * 100, rx.getsockname())
    elif name == "syscalls":
        for _ in range(500):
            os.getppid()
    elif name == "profile":  # half a second on the CPU: about 50 samples at 99 Hz
        until = time.process_time() + 0.5
        while time.process_time() < until:
            pass


def check_reading(name: str, result: Any) -> None:
    if name == "xdp":
        # Each datagram is one IPv4/UDP packet received on lo (100 bytes of payload + 28 of headers at least).
        assert result.packets["ipv4_udp"] >= DATAGRAMS, result.packets
        assert result.bytes["ipv4_udp"] >= DATAGRAMS * 128, result.bytes
        assert result.total_packets == sum(result.packets.values()) == sum(result.cpu_packets)
    elif name == "tc":  # lo: each datagram leaves (egress) and arrives (ingress) once
        assert result.ingress.packets["ipv4_udp"] >= DATAGRAMS and result.egress.packets["ipv4_udp"] >= DATAGRAMS
    elif name == "syscalls":
        assert result.syscalls.get("getppid", 0) >= 500, result.syscalls
    elif name == "biolatency":
        for device in result.devices:  # the guest's root is the host's files (no block I/O need happen)
            assert device.total == sum(b.count for b in device.buckets), device
    elif name == "execsnoop":
        assert result.lost == 0, result.lost
    elif name == "profile":
        mine = sum(s.count for s in result.stacks if s.pid == os.getpid())
        assert mine >= 10 and result.samples >= result.recorded_samples, (mine, result.samples)


def main() -> int:
    import hypermesh.ebpf

    report = hypermesh.ebpf.probe()
    out: dict[str, object] = {"kernel": platform.release(), "features": {f.name: f.supported for f in report.features}}
    assert report.feature("kprobe").supported, report.feature("kprobe").reason
    loaded = {}
    for name in hypermesh.ebpf.PROGRAMS:
        if name == "execguard":  # needs a cgroup of its own: tests/vm/test_second_kernel.py boots for it
            continue
        options: dict[str, object] = {"interface": "lo"} if name in ("xdp", "tc") else {}
        started = time.perf_counter()
        with hypermesh.ebpf.load(name, **options) as prog:
            load_ms = (time.perf_counter() - started) * 1e3
            prog.attach()
            make_traffic(name)
            if name == "execsnoop":
                pid = os.fork()
                if pid == 0:
                    os.execv("/bin/true", ["/bin/true", "an argument"])
                os.waitpid(pid, 0)
                events = prog.poll(1.0)
                mine = [e for e in events if e.pid == pid]
                assert mine and mine[0].ppid == os.getpid(), events  # CO-RE read of real_parent->tgid
                assert mine[0].argv == ("/bin/true", "an argument"), mine  # CO-RE read of mm->arg_start/arg_end
            result = prog.read()
            check_reading(name, result)
            loaded[name] = {"load_ms": round(load_ms, 2), "links": [link.kind for link in prog.links]}
    out["loaded"] = loaded
    with hypermesh.ebpf.load("syscalls", attach="auto", pid=os.getpid()) as prog:
        prog.attach()
        assert prog.attach_type == "kprobe", prog.attach_type
        n = 2000
        for _ in range(n):
            os.getppid()
        counts = prog.read()
    out["auto_attach"] = counts.attach_type
    out["getppid"] = counts.syscalls.get("getppid", 0)
    assert n <= counts.syscalls["getppid"] <= n + 2, counts.syscalls
    print("GUEST-RESULT " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
