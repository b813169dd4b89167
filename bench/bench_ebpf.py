"""eBPF figures: load, attach, read and detach through hypermesh.ebpf, against plain libbpf doing the
same in the same run, and a whole ``hypermesh ebpf run syscalls --duration 0.1 --json`` against bpftrace.

"Plain libbpf" is a small C program (below) compiled at bench time with gcc against libbpf-dev: it
calls exactly the libbpf functions our ctypes layer calls (bpf_object__open_file + __load + __close,
bpf_program__attach_tracepoint + bpf_link__destroy, bpf_link_create(BPF_XDP) + close,
bpf_map_lookup_elem), on the same committed objects, minus Python and our layer. Ratios are ours /
plain. XDP runs on the host end of a veth pair whose peer sits in a namespace made for the bench.
Needs root; skipped figures say why.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "src" / "hypermesh" / "ebpf" / "programs"
CYCLES = 120  # >= 100 measured iterations per figure, after warm-up
# Interleaved load pairs per built-in (ours, plain libbpf): a load is ~0.3-1 ms, so 2000 pairs take a few
# seconds each, and a p95 then rests on ~100 samples per side. At 120-150 pairs a p95 ratio moved by
# +-0.3 (up to 2.4x) between runs on this shared 2-CPU machine, where one burst of another process's work
# covers several loads.
LOAD_CYCLES = 2000
LOAD_WARMUP = 20
LOAD_BLOCKS = 4  # the ratios are also given per consecutive quarter of the run: how far they wander
CO_RE = ("biolatency", "execsnoop")  # the built-ins with CO-RE relocations (loaded with the minimised BTF)
TRACE_CYCLES = 100
WHOLE_PROCESS_RUNS = 7
JITTER_S = 0.008  # random pause before each attach, as in the C program (JITTER_US)

PLAIN_C = r"""
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A random pause before each attach: attach and detach wait for RCU grace periods that tick at
 * CONFIG_HZ, so back-to-back loops phase-lock and split one fixed cycle unevenly between them. */
#define JITTER_US 8000
static long long now_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
/* CPU time of this thread (user + kernel): what a load costs, without the time other processes held the CPU. */
static long long cpu_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
static int quiet(enum libbpf_print_level l, const char *f, va_list a) { return 0; }
/* SKIP: names of programs not to load, comma-separated; BTF: btf_custom_path or "" (the kernel's). */
static struct bpf_object *open_load_btf(const char *path, const char *skip, const char *btf) {
    LIBBPF_OPTS(bpf_object_open_opts, opts, .btf_custom_path = (btf && *btf && strcmp(btf, "-")) ? btf : NULL);
    struct bpf_object *obj = bpf_object__open_file(path, &opts);
    if (!obj) { perror("open"); exit(1); }
    char names[256];
    snprintf(names, sizeof(names), "%s", skip ? skip : "");
    for (char *name = strtok(names, ","); name; name = strtok(NULL, ",")) {
        struct bpf_program *prog = bpf_object__find_program_by_name(obj, name);
        if (prog) bpf_program__set_autoload(prog, false);  /* "-": none */
    }
    if (bpf_object__load(obj)) { perror("load"); exit(1); }
    return obj;
}
static struct bpf_object *open_load(const char *path, const char *skip) { return open_load_btf(path, skip, NULL); }
int main(int argc, char **argv) {
    libbpf_set_print(quiet);
    const char *mode = argv[1], *path = argv[2];
    int n = atoi(argv[3]);
    if (!strcmp(mode, "load")) {            /* load PATH N SKIP */
        printf("[");
        for (int i = 0; i < n; i++) {
            long long t0 = now_ns();
            struct bpf_object *obj = open_load(path, argv[4]);
            long long t1 = now_ns();
            bpf_object__close(obj);
            printf("%s[%lld,%lld]", i ? "," : "", t1 - t0, now_ns() - t1);
        }
        printf("]\n");
    } else if (!strcmp(mode, "tp")) {        /* tp PATH N PROG CATEGORY EVENT SKIP */
        struct bpf_object *obj = open_load(path, argv[7]);
        struct bpf_program *prog = bpf_object__find_program_by_name(obj, argv[4]);
        printf("[");
        for (int i = 0; i < n; i++) {
            usleep(rand() % JITTER_US);
            long long t0 = now_ns();
            struct bpf_link *link = bpf_program__attach_tracepoint(prog, argv[5], argv[6]);
            if (!link) { perror("attach"); exit(1); }
            long long t1 = now_ns();
            bpf_link__destroy(link);
            printf("%s[%lld,%lld]", i ? "," : "", t1 - t0, now_ns() - t1);
        }
        printf("]\n");
        bpf_object__close(obj);
    } else if (!strcmp(mode, "xdp")) {       /* xdp PATH N PROG IFINDEX FLAGS */
        struct bpf_object *obj = open_load(path, NULL);
        int prog_fd = bpf_program__fd(bpf_object__find_program_by_name(obj, argv[4]));
        LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = atoi(argv[6]));
        printf("[");
        for (int i = 0; i < n; i++) {
            usleep(rand() % JITTER_US);
            long long t0 = now_ns();
            int fd = bpf_link_create(prog_fd, atoi(argv[5]), BPF_XDP, &opts);
            if (fd < 0) { perror("link_create"); exit(1); }
            long long t1 = now_ns();
            close(fd);
            printf("%s[%lld,%lld]", i ? "," : "", t1 - t0, now_ns() - t1);
        }
        printf("]\n");
        bpf_object__close(obj);
    } else if (!strcmp(mode, "serve-load")) { /* serve-load PATH 0 SKIP BTF: one open+load+close per line */
        char line[16];
        while (fgets(line, sizeof(line), stdin)) {
            long long t0 = now_ns(), c0 = cpu_ns();  /* the clocks read in the order the Python side reads them */
            struct bpf_object *obj = open_load_btf(path, argv[4], argv[5]);
            long long c1 = cpu_ns(), t1 = now_ns();
            bpf_object__close(obj);
            printf("%lld %lld %lld\n", t1 - t0, now_ns() - t1, c1 - c0);
            fflush(stdout);
        }
    } else if (!strcmp(mode, "serve-tp") || !strcmp(mode, "serve-xdp")) {
        /* serve-tp PATH 0 PROG CATEGORY EVENT SKIP | serve-xdp PATH 0 PROG IFINDEX FLAGS:
         * one attach + detach per line read on stdin, so the caller can alternate it with its own. */
        int xdp = !strcmp(mode, "serve-xdp");
        struct bpf_object *obj = open_load(path, xdp ? NULL : argv[7]);
        struct bpf_program *prog = bpf_object__find_program_by_name(obj, argv[4]);
        LIBBPF_OPTS(bpf_link_create_opts, opts, .flags = xdp ? atoi(argv[6]) : 0);
        char line[16];
        while (fgets(line, sizeof(line), stdin)) {
            long long t0 = now_ns(), t1;
            if (xdp) {
                int fd = bpf_link_create(bpf_program__fd(prog), atoi(argv[5]), BPF_XDP, &opts);
                if (fd < 0) { perror("link_create"); exit(1); }
                t1 = now_ns();
                close(fd);
            } else {
                /* CATEGORY "raw": a raw tracepoint named EVENT (BPF_RAW_TRACEPOINT_OPEN) */
                struct bpf_link *link = strcmp(argv[5], "raw")
                    ? bpf_program__attach_tracepoint(prog, argv[5], argv[6])
                    : bpf_program__attach_raw_tracepoint(prog, argv[6]);
                if (!link) { perror("attach"); exit(1); }
                t1 = now_ns();
                bpf_link__destroy(link);
            }
            printf("%lld %lld\n", t1 - t0, now_ns() - t1);
            fflush(stdout);
        }
        bpf_object__close(obj);
    } else if (!strcmp(mode, "lookup")) {    /* lookup PATH N MAP */
        struct bpf_object *obj = open_load(path, NULL);
        int fd = bpf_map__fd(bpf_object__find_map_by_name(obj, argv[4]));
        int ncpu = libbpf_num_possible_cpus();
        char *value = malloc(4096 * ncpu);
        unsigned key = 0;
        printf("[");
        for (int i = 0; i < n; i++) {
            long long t0 = now_ns();
            bpf_map_lookup_elem(fd, &key, value);
            printf("%s%lld", i ? "," : "", now_ns() - t0);
        }
        printf("]\n");
        bpf_object__close(obj);
    }
    return 0;
}
"""


def _pct(values_s: list[float], scale: float, unit: str, prefix: str) -> dict[str, float]:
    values = sorted(v * scale for v in values_s)

    def q(p: float) -> float:
        return values[min(len(values) - 1, round(p * (len(values) - 1)))]

    digits = 4 if unit == "us" else 3
    return {
        f"{prefix}_p50_{unit}": round(statistics.median(values), digits),
        f"{prefix}_p95_{unit}": round(q(0.95), digits),
        f"{prefix}_p99_{unit}": round(q(0.99), digits),
    }


def _quantile(values: list[float], p: float) -> float:
    """As ``_pct`` picks them: the median for p50, the nearest rank otherwise."""
    if p == 0.5:
        return statistics.median(values)
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]


def _load_ratios(ours: list[float], plain: list[float], name: str, clock: str = "") -> dict[str, object]:
    """ours / plain at p50, p95 and p99 over the whole run, and each ratio's range over LOAD_BLOCKS
    consecutive parts of it (the pairs stay together: part k of ours was measured beside part k of plain).
    ``clock``: "" for wall-clock times, "cpu_" for the loading thread's CPU time."""
    out: dict[str, object] = {}
    size = len(ours) // LOAD_BLOCKS
    for q in (0.5, 0.95, 0.99):
        key = f"load_{name}_vs_plain_{clock}p{round(q * 100)}_ratio"
        out[key] = round(_quantile(ours, q) / _quantile(plain, q), 3)
        blocks = [
            _quantile(ours[k * size : (k + 1) * size], q) / _quantile(plain[k * size : (k + 1) * size], q)
            for k in range(LOAD_BLOCKS)
        ]
        out[f"{key}_range_over_{LOAD_BLOCKS}_parts"] = [round(min(blocks), 3), round(max(blocks), 3)]
    return out


def _build_plain(workdir: str) -> str | None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None or not os.path.exists("/usr/include/bpf/libbpf.h"):
        return None
    src = os.path.join(workdir, "plain_libbpf.c")
    exe = os.path.join(workdir, "plain_libbpf")
    Path(src).write_text(PLAIN_C)
    subprocess.run([gcc, "-O2", "-o", exe, src, "-lbpf"], check=True, capture_output=True, timeout=120)
    return exe


def _plain(exe: str, *args: object) -> list[list[float]]:
    out = subprocess.run([exe, *map(str, args)], check=True, capture_output=True, text=True, timeout=300).stdout
    data = json.loads(out)
    return [[x / 1e9 for x in row] if isinstance(row, list) else [row / 1e9] for row in data]


class _Veth:
    """Host end ``hmbench0`` here, peer in namespace ``hm-bench``: XDP's attach path on a veth."""

    def __init__(self) -> None:
        self.ns, self.host, self.peer = "hm-bench", "hmbench0", "hmbench1"

    def __enter__(self) -> _Veth:
        self.__exit__()
        for cmd in (
            ["ip", "netns", "add", self.ns],
            ["ip", "link", "add", self.host, "type", "veth", "peer", "name", self.peer, "netns", self.ns],
            ["ip", "link", "set", self.host, "up"],
            ["ip", "-n", self.ns, "link", "set", self.peer, "up"],
        ):
            subprocess.run(cmd, check=True, capture_output=True, timeout=10)
        self.ifindex = socket.if_nametoindex(self.host)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.host], capture_output=True, timeout=10, check=False)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=10, check=False)


def _ours_load(name: str, options: dict[str, object]) -> list[float]:
    import hypermesh.ebpf

    times = []
    for i in range(CYCLES + 5):
        t0 = time.perf_counter()
        prog = hypermesh.ebpf.load(name, **options)
        t1 = time.perf_counter()
        prog.close()
        del prog  # freed here, not inside the next timed load (when the name is rebound)
        if i >= 5:
            times.append(t1 - t0)
    return times


def _load_interleaved(
    name: str, options: dict[str, object], plain: str | None, btf: str | None, cycles: int = LOAD_CYCLES
) -> dict[str, list[float]]:
    """``cycles`` loads through hypermesh.ebpf.load and as many plain-libbpf open+load of the same object
    with the same programs and the same BTF, alternating one by one: on a shared machine whose load
    swings by 5x within seconds, two back-to-back loops would compare two different machines."""
    import hypermesh.ebpf

    prog = hypermesh.ebpf.load(name, **options)  # warm: libbpf bound, probes cached
    assert prog.collection is not None
    collection = prog.collection
    programs = {p.name for p in collection.info().programs if collection.program_fd(p.name) >= 0}  # the loaded ones
    prog.close()
    from hypermesh.ebpf import ObjectSpec

    with ObjectSpec(prog.object_path) as spec:
        skip = ",".join(sorted(set(spec.programs) - programs))
    server = _PlainServer(plain, "serve-load", prog.object_path, 0, skip or "-", btf or "-") if plain else None
    out: dict[str, list[float]] = {"ours": [], "plain": [], "ours_cpu": [], "plain_cpu": []}
    plain_load: tuple[float, ...] = ()
    try:
        for i in range(cycles + LOAD_WARMUP):
            # Who goes first alternates: the second of a pair finds caches (page cache, slab, the
            # kernel's BTF and verifier state) warm from the first, which a fixed order gives to one side.
            plain_first = server is not None and i % 2 == 1
            if plain_first and server is not None:
                plain_load = server.cycle()
            t0 = time.perf_counter()
            c0 = time.thread_time()
            p = hypermesh.ebpf.load(name, **options)
            c1 = time.thread_time()
            t1 = time.perf_counter()
            p.close()
            # Freed here: rebinding the name inside the next timed load would free it there (plain libbpf
            # frees its object in bpf_object__close, outside its timing too).
            del p
            if not plain_first and server is not None:
                plain_load = server.cycle()
            if i >= LOAD_WARMUP:
                out["ours"].append(t1 - t0)
                out["ours_cpu"].append(c1 - c0)
                if plain_load:
                    out["plain"].append(plain_load[0])
                    out["plain_cpu"].append(plain_load[2])
    finally:
        if server is not None:
            server.close()
    return out


class _PlainServer:
    """The C program in a serve mode: one plain-libbpf attach + detach per request."""

    def __init__(self, exe: str, *args: object) -> None:
        self.proc = subprocess.Popen(
            [exe, *map(str, args)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )

    def cycle(self) -> tuple[float, ...]:
        """The line's figures in seconds: (attach or load, detach or close[, load's CPU time])."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        return tuple(int(ns) / 1e9 for ns in self.proc.stdout.readline().split())

    def close(self) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        self.proc.wait(30)
        self.proc.stdout.close()


def _attach_detach_interleaved(kind: str, n: int, plain: str | None, interface: str = "") -> dict[str, list[float]]:
    """n attach + detach cycles through hypermesh and n through plain libbpf, alternating one by one
    with a random pause before each: attach and detach wait for RCU grace periods that tick at
    CONFIG_HZ, so back-to-back loops phase-lock and would split one fixed cost unevenly."""
    import hypermesh.ebpf

    out: dict[str, list[float]] = {"attach": [], "detach": [], "plain_attach": [], "plain_detach": []}
    if kind == "xdp":
        prog = hypermesh.ebpf.load("xdp", interface=interface)
        ifindex = socket.if_nametoindex(interface)
        server = (
            _PlainServer(plain, "serve-xdp", PROGRAMS / "xdp.bpf.o", 0, "count_packets", ifindex, 4) if plain else None
        )
    elif kind == "raw_tracepoint":
        prog = hypermesh.ebpf.load("syscalls", attach="raw_tracepoint")
        server = (
            _PlainServer(
                plain, "serve-tp", PROGRAMS / "syscalls.bpf.o", 0, "raw_sys_enter", "raw", "sys_enter",
                "on_x64_sys_call,on_sys_enter",
            )
            if plain
            else None
        )  # fmt: skip
    else:
        prog = hypermesh.ebpf.load("syscalls", attach="tracepoint")
        server = (
            _PlainServer(
                plain, "serve-tp", PROGRAMS / "syscalls.bpf.o", 0, "on_sys_enter", "raw_syscalls", "sys_enter",
                "on_x64_sys_call,raw_sys_enter",
            )
            if plain
            else None
        )  # fmt: skip
    obj = prog.collection
    assert obj is not None
    try:
        for _ in range(n):
            time.sleep(random.uniform(0, JITTER_S))
            t0 = time.perf_counter()
            if kind == "xdp":
                link = obj.attach_xdp("count_packets", ifindex, interface, "native")
            elif kind == "raw_tracepoint":
                link = obj.attach_raw_tracepoint("raw_sys_enter", "sys_enter")
            else:
                link = obj.attach_tracepoint("on_sys_enter", "raw_syscalls", "sys_enter")
            t1 = time.perf_counter()
            link.close()
            out["detach"].append(time.perf_counter() - t1)
            out["attach"].append(t1 - t0)
            if server is not None:
                time.sleep(random.uniform(0, JITTER_S))
                a, d = server.cycle()
                out["plain_attach"].append(a)
                out["plain_detach"].append(d)
    finally:
        if server is not None:
            server.close()
        prog.close()
    return out


def _close_nowait_handoff(n: int) -> list[float]:
    """What the caller of close(wait=False) waits, with a tracepoint link still to destroy."""
    import hypermesh.ebpf

    handoff = []
    for _ in range(n):
        p = hypermesh.ebpf.load("syscalls", attach="tracepoint").attach()
        t0 = time.perf_counter()
        done = p.close(wait=False)
        handoff.append(time.perf_counter() - t0)
        done.wait()
    return handoff


def _ours_reads(interface: str) -> dict[str, float]:
    import hypermesh.ebpf

    out: dict[str, float] = {}
    with hypermesh.ebpf.load("xdp", interface=interface) as prog:
        prog.attach()
        times = []
        for _ in range(5000):
            t0 = time.perf_counter()
            prog.read()
            times.append(time.perf_counter() - t0)
        out.update(_pct(times, 1e6, "us", "read_xdp_stats"))
    with hypermesh.ebpf.load("syscalls") as prog:
        prog.attach()
        time.sleep(0.05)
        times = []
        for _ in range(300):
            t0 = time.perf_counter()
            prog.read()
            times.append(time.perf_counter() - t0)
        out.update(_pct(times, 1e6, "us", "read_syscalls"))
        # The same read with the per-process table walked one key at a time (kernels < 5.6, no
        # BPF_MAP_LOOKUP_BATCH), in the same run: what the batch saves.
        prog.read()
        processes = prog._processes
        processes._batch_supported = False
        times = []
        for _ in range(100):
            t0 = time.perf_counter()
            counts = prog.read()
            times.append(time.perf_counter() - t0)
        out.update(_pct(times, 1e6, "us", "read_syscalls_per_key"))
        out["read_syscalls_processes"] = len(counts.processes)
        out["read_syscalls_batch_vs_per_key_p50_ratio"] = round(
            float(out["read_syscalls_p50_us"]) / float(out["read_syscalls_per_key_p50_us"]), 3
        )
    return out


def _ring_figures(n: int = 1500) -> dict[str, object]:
    """execsnoop's ring buffer under a burst of n execs nobody reads: what arrives, what the kernel
    counts as lost (the two add up to n, give or take other processes' execs), and what consuming
    one event costs (unpacked in place from the ring's memory, no copy per event)."""
    import hypermesh.ebpf

    with hypermesh.ebpf.load("execsnoop") as prog:
        prog.attach()
        subprocess.run(["sh", "-c", f"i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"], check=True)
        events = 0
        t0 = time.perf_counter()
        while got := prog.poll(0):
            events += len(got)
        consumed = time.perf_counter() - t0
        lost = prog.lost_events()["events"]
    return {
        "ring_burst_execs": n,
        "ring_delivered_events": events,
        "ring_lost_events": lost,
        "ring_delivered_plus_lost": events + lost,
        "ring_consume_per_event_us": round(consumed / max(events, 1) * 1e6, 2),
    }


def _whole_process() -> dict[str, object]:
    ours_cmd = [sys.executable, "-m", "hypermesh.cli.main", "ebpf", "run", "syscalls", "--duration", "0.1", "--json"]
    bpftrace = shutil.which("bpftrace")
    peer_cmd = (
        [bpftrace, "-f", "json", "-e", "tracepoint:raw_syscalls:sys_enter { @[comm] = count(); } interval:ms:100 { exit(); }"]
        if bpftrace
        else None
    )  # fmt: skip
    ours, peer = [], []
    for _ in range(WHOLE_PROCESS_RUNS):
        t0 = time.perf_counter()
        subprocess.run(ours_cmd, check=True, capture_output=True, timeout=60, cwd=ROOT)
        ours.append(time.perf_counter() - t0)
        if peer_cmd:
            t0 = time.perf_counter()
            subprocess.run(peer_cmd, check=True, capture_output=True, timeout=60)
            peer.append(time.perf_counter() - t0)
    out: dict[str, object] = _pct(ours, 1e3, "ms", "cli_run_syscalls_0_1s")  # type: ignore[assignment]
    if peer:
        out.update(_pct(peer, 1e3, "ms", "bpftrace_syscalls_0_1s"))
        out["cli_vs_bpftrace_p50_ratio"] = round(statistics.median(ours) / statistics.median(peer), 3)
        out["cli_faster_than_bpftrace"] = statistics.median(ours) < statistics.median(peer)
    else:
        out["bpftrace"] = "not installed (apt install bpftrace): comparison skipped"
    return out


def run() -> dict[str, object]:
    if os.geteuid() != 0:
        return {"skipped": "needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN)"}
    import hypermesh.ebpf
    from hypermesh.ebpf.programs.execsnoop import minimised_btf

    figures: dict[str, object] = {
        "cycles": CYCLES,
        "load_cycles": LOAD_CYCLES,
        "plain_libbpf": "C program linked with libbpf, built at bench time",
    }

    started = time.perf_counter()
    t0 = time.perf_counter()
    hypermesh.ebpf.probe(refresh=True)
    figures["probe_first_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
    minimised_btf(str(PROGRAMS / "execsnoop.bpf.o"))  # made once per kernel build; not part of a load

    with tempfile.TemporaryDirectory() as workdir, _Veth() as veth:
        plain = _build_plain(workdir)
        # -- load of each built-in, interleaved with plain libbpf loading the same object, the same
        # programs (the hook the built-in chose) and, for the CO-RE ones, the same minimised BTF.
        from hypermesh.ebpf.btf import minimised_btf as min_btf

        load_ratios: dict[str, float] = {}
        cpu_load_ratios: dict[str, float] = {}
        # The machine is shared: what else ran (1, 5, 15 min) says how much to trust absolute figures.
        figures["load_average_before_loads"] = [round(x, 2) for x in os.getloadavg()]
        for name, options in (
            ("xdp", {"interface": veth.host}),
            ("syscalls", {}),
            ("biolatency", {}),
            ("execsnoop", {}),
        ):
            btf = min_btf(str(PROGRAMS / f"{name}.bpf.o")) if name in CO_RE else None
            got = _load_interleaved(name, options, plain, btf)
            figures.update(_pct(got["ours"], 1e3, "ms", f"load_{name}"))
            if got["plain"]:
                figures.update(_pct(got["plain"], 1e3, "ms", f"plain_libbpf_load_{name}"))
                ratios = _load_ratios(got["ours"], got["plain"], name)
                figures.update(ratios)
                figures.update(_pct(got["ours_cpu"], 1e3, "ms", f"load_{name}_cpu"))
                figures.update(_pct(got["plain_cpu"], 1e3, "ms", f"plain_libbpf_load_{name}_cpu"))
                cpu_ratios = _load_ratios(got["ours_cpu"], got["plain_cpu"], name, "cpu_")
                figures.update(cpu_ratios)
                for q in ("p50", "p95"):
                    load_ratios[f"{name}_{q}"] = float(ratios[f"load_{name}_vs_plain_{q}_ratio"])  # type: ignore[arg-type]
                    cpu_load_ratios[f"{name}_{q}"] = float(cpu_ratios[f"load_{name}_vs_plain_cpu_{q}_ratio"])  # type: ignore[arg-type]
        if load_ratios:
            figures["goal_load_within_1_2x_plain_p50_p95_met"] = max(load_ratios.values()) <= 1.2
            # The same judged on CPU time: on this shared machine the wall-clock p95 is mostly how long other
            # processes held the CPU during a load; the loading thread's CPU time leaves that out.
            figures["goal_load_within_1_2x_plain_p50_p95_cpu_time_met"] = max(cpu_load_ratios.values()) <= 1.2
        if plain:
            # CO-RE against the kernel's whole BTF, as plain libbpf does by default: what the minimised BTF saves.
            rows = _plain(plain, "load", PROGRAMS / "execsnoop.bpf.o", 30, "on_exec")[5:]
            figures.update(_pct([r[0] for r in rows], 1e3, "ms", "plain_libbpf_load_execsnoop_full_btf"))
        figures.update(_pct(_ours_load("execsnoop", {"minimise_btf": False}), 1e3, "ms", "load_execsnoop_full_btf"))
        # tc: both directions, two sched_cls programs (ours only: its plain counterpart is the xdp-like load above)
        figures.update(_pct(_ours_load("tc", {"interface": veth.host}), 1e3, "ms", "load_tc"))
        built_in_p95 = max(float(figures[f"load_{n}_p95_ms"]) for n in ("xdp", "syscalls", "biolatency"))  # type: ignore[arg-type]
        figures["goal_load_p95_le_1ms_met"] = built_in_p95 <= 1.0
        if plain:
            # Whether this machine allows the goal at all: plain libbpf loading the same objects in the same run.
            plain_p95 = max(float(figures[f"plain_libbpf_load_{n}_p95_ms"]) for n in ("xdp", "syscalls", "biolatency"))  # type: ignore[arg-type]
            figures["plain_libbpf_load_p95_le_1ms"] = plain_p95 <= 1.0
        figures["goal_co_re_load_p95_le_5ms_met"] = float(figures["load_execsnoop_p95_ms"]) <= 5.0  # type: ignore[arg-type]

        # -- attach / detach: tracepoint, then XDP (native, on the veth)
        tp = _attach_detach_interleaved("tracepoint", TRACE_CYCLES, plain)
        figures.update(_pct(tp["attach"], 1e3, "ms", "attach_tracepoint"))
        figures.update(_pct(tp["detach"], 1e3, "ms", "detach_tracepoint"))
        figures.update(_pct(_close_nowait_handoff(20), 1e3, "ms", "close_nowait_caller_tracepoint"))
        figures["goal_tracepoint_attach_p95_le_1ms_met"] = float(figures["attach_tracepoint_p95_ms"]) <= 1.0  # type: ignore[arg-type]
        rtp = _attach_detach_interleaved("raw_tracepoint", TRACE_CYCLES, plain)
        figures.update(_pct(rtp["attach"], 1e3, "ms", "attach_raw_tracepoint"))
        figures.update(_pct(rtp["detach"], 1e3, "ms", "detach_raw_tracepoint"))
        xdp = _attach_detach_interleaved("xdp", TRACE_CYCLES, plain, veth.host)
        figures["xdp_mode"] = "native"
        figures.update(_pct(xdp["attach"], 1e3, "ms", "attach_xdp"))
        figures.update(_pct(xdp["detach"], 1e3, "ms", "detach_xdp"))
        if plain:
            ratios = {}
            for kind, data in (("tracepoint", tp), ("raw_tracepoint", rtp), ("xdp", xdp)):
                for op in ("attach", "detach"):
                    figures.update(_pct(data[f"plain_{op}"], 1e3, "ms", f"plain_libbpf_{op}_{kind}"))
                    ratio = statistics.median(data[op]) / statistics.median(data[f"plain_{op}"])
                    ratios[f"{op}_{kind}"] = ratio
                    figures[f"{op}_{kind}_vs_plain_p50_ratio"] = round(ratio, 3)
            figures["plain_libbpf_attach_tracepoint_p95_le_1ms"] = (
                float(figures["plain_libbpf_attach_tracepoint_p95_ms"]) <= 1.0
            )  # type: ignore[arg-type]
            figures["goal_detach_tracepoint_within_1_1x_met"] = ratios["detach_tracepoint"] <= 1.1
            figures["goal_xdp_attach_detach_within_1_1x_met"] = (
                ratios["attach_xdp"] <= 1.1 and ratios["detach_xdp"] <= 1.1
            )

        # -- reads
        figures.update(_ours_reads(veth.host))
        figures.update(_ring_figures())
        figures["goal_read_stats_median_le_20us_met"] = float(figures["read_xdp_stats_p50_us"]) <= 20  # type: ignore[arg-type]
        if plain:
            rows = _plain(plain, "lookup", PROGRAMS / "xdp.bpf.o", 5000, "xdp_stats")
            figures.update(_pct([r[0] for r in rows], 1e6, "us", "plain_libbpf_lookup_xdp_stats"))

    # -- whole process against bpftrace
    figures.update(_whole_process())
    figures["notes"] = (
        "load_*: hypermesh.ebpf.load(name) (capability check, open, load, map setup) vs plain libbpf open+load of the "
        "same object with the same programs and BTF, the two alternating one by one, load_cycles pairs each (ratios: "
        "ours / plain at p50, p95 and p99; *_range_over_4_parts: the lowest and highest of that ratio over four "
        "consecutive quarters of the run; *_cpu_*: the loading thread's CPU time, user + kernel, which leaves out "
        "the time other processes held the CPU). "
        "execsnoop has CO-RE relocations: load_execsnoop uses the minimised BTF cached per kernel build, "
        "load_execsnoop_full_btf makes libbpf parse all of /sys/kernel/btf/vmlinux. detach_* is kernel-bound "
        "(RCU grace period); close(wait=False) hands it to a background thread, close_nowait_caller_* is what "
        "the caller waits. cli_run_syscalls_0_1s and bpftrace_syscalls_0_1s are whole processes, start to exit."
    )
    figures["seconds"] = round(time.perf_counter() - started, 1)
    return figures


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
