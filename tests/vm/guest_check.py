"""Runs INSIDE the second kernel (Debian 6.1, kprobes on) booted by test_second_kernel.py.

Proves, on a kernel other than the one the objects were built on: the probe sees kprobes, every
committed .bpf.o loads, attaches and reads (CO-RE relocates execsnoop against this kernel's BTF), and
``syscalls --attach auto`` picks the kprobe. Prints one JSON line; exits non-zero on any failure.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time


def main() -> int:
    import hypermesh.ebpf

    report = hypermesh.ebpf.probe()
    out: dict[str, object] = {"kernel": platform.release(), "features": {f.name: f.supported for f in report.features}}
    assert report.feature("kprobe").supported, report.feature("kprobe").reason
    loaded = {}
    for name in hypermesh.ebpf.PROGRAMS:
        options: dict[str, object] = {"interface": "lo"} if name == "xdp" else {}
        started = time.perf_counter()
        with hypermesh.ebpf.load(name, **options) as prog:
            load_ms = (time.perf_counter() - started) * 1e3
            prog.attach()
            if name == "execsnoop":
                pid = os.fork()
                if pid == 0:
                    os.execv("/bin/true", ["/bin/true"])
                os.waitpid(pid, 0)
                events = prog.poll(1.0)
                mine = [e for e in events if e.pid == pid]
                assert mine and mine[0].ppid == os.getpid(), events  # CO-RE read of real_parent->tgid
            result = prog.read()
            assert result.to_dict() is not None
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
