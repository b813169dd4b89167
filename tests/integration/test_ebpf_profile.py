"""The CPU profiler against real processes: a C program spinning in a function of a known name, JIT
code named only by a perf map the test writes, a syscall loop for kernel frames, cgroup and pid
filters, and nothing left in the kernel after many cycles.

Each check compares with something the profiler did not compute: the function the test program is
known to spend its time in, ``nm``'s symbol table, the cgroup the test put a process in."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import hypermesh.ebpf
from hypermesh.ebpf.elf import read_elf
from hypermesh.ebpf.programs.profile import ProfileProgram, ProfileReport, folded
from hypermesh.errors import InvalidInput, NotFound
from tests.conftest import require, require_binary
from tests.integration.ebpf_support import (
    HYPERMESH,
    open_fds,
    our_kernel_links,
    our_kernel_programs,
    require_ebpf,
    run_cli,
)

pytestmark = [pytest.mark.ebpf, pytest.mark.root, pytest.mark.slow]

SPINNER_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
volatile unsigned long sink;
__attribute__((noinline)) void hm_spin_target(void) { for (unsigned long i = 0; i < 20000000UL; i++) sink += i; }
__attribute__((noinline)) void hm_outer(void) { hm_spin_target(); sink++; }
int main(int argc, char **argv) {
    double seconds = atof(argv[1]);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    printf("ready\n");
    fflush(stdout);
    do {
        hm_outer();
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
    return 0;
}
"""

# Machine code copied into anonymous executable memory, as a JIT would: count rdi down to zero, return.
#   mov rax, rdi; loop: dec rax; jnz loop; ret
JIT_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
static const unsigned char code[] = {0x48, 0x89, 0xf8, 0x48, 0xff, 0xc8, 0x75, 0xfb, 0xc3};
int main(int argc, char **argv) {
    double seconds = atof(argv[1]);
    void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) return 1;
    memcpy(page, code, sizeof(code));
    unsigned long (*spin)(unsigned long) = (unsigned long (*)(unsigned long))page;
    printf("%lx %zx\n", (unsigned long)page, sizeof(code));
    fflush(stdout);
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        spin(50000000UL);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
    return 0;
}
"""


def _build(tmp_path: Path, name: str, source: str) -> Path:
    if not hasattr(_build, "cc"):
        _build.cc = require_binary("cc")  # type: ignore[attr-defined]
    src = tmp_path / f"{name}.c"
    src.write_text(source)
    exe = tmp_path / name
    subprocess.run(
        [_build.cc, "-O1", "-fno-omit-frame-pointer", "-o", str(exe), str(src)],  # type: ignore[attr-defined]
        check=True,
        capture_output=True,
        timeout=60,
    )
    return exe


@contextmanager
def _running(exe: Path, seconds: float) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen([str(exe), str(seconds)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        yield proc, first
    finally:
        proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _profile(seconds: float, **options: object) -> ProfileReport:
    """Profile for ``seconds``, longer (up to 30 s) while the filtered process has fewer than 50
    samples: on a machine shared with other work the process may get little CPU time."""
    with hypermesh.ebpf.load("profile", **options) as prog:
        assert isinstance(prog, ProfileProgram)
        prog.attach()
        started = time.monotonic()
        while True:
            prog.remember_processes()
            time.sleep(0.25)
            elapsed = time.monotonic() - started
            if elapsed >= 30 or (elapsed >= seconds and prog.read().recorded_samples >= 50):
                return prog.read()


def _samples_of(report: ProfileReport, pid: int) -> int:
    return sum(s.count for s in report.stacks if s.pid == pid)


def test_spinning_function_is_in_most_samples(tmp_path: Path) -> None:
    require_ebpf()
    exe = _build(tmp_path, "hm_spinner", SPINNER_C)
    with _running(exe, 30) as (spinner, _), _running(exe, 30) as (other, _):
        report = _profile(3, pid=spinner.pid)
    total = _samples_of(report, spinner.pid)
    assert total >= 20, f"too few samples to judge: {total}"
    # --pid filters in the kernel: the other spinner, just as busy, is not in the report at all.
    assert _samples_of(report, other.pid) == 0
    assert {s.pid for s in report.stacks} == {spinner.pid}
    hits = sum(s.count for s in report.stacks if any(f.name == "hm_spin_target" for f in s.frames))
    assert hits >= 0.8 * total, folded(report)
    # Outermost first: main calls (through hm_outer, a tail call at -O1) hm_spin_target.
    names = [f.name for f in max(report.stacks, key=lambda s: s.count).frames]
    assert names.index("main") < names.index("hm_spin_target"), names
    # The address the kernel recorded lies inside the symbol nm gives (an independent symbol reader).
    nm = subprocess.run(["nm", str(exe)], capture_output=True, text=True, check=True).stdout
    start = next(int(line.split()[0], 16) for line in nm.splitlines() if line.endswith(" hm_spin_target"))
    elf = read_elf(str(exe))
    found = elf.lookup(start)
    assert found == ("hm_spin_target", 0)
    assert report.samples >= report.recorded_samples + report.lost_samples - 1
    assert report.unsymbolized_frames <= report.frames


def test_jit_frames_named_from_the_perf_map(tmp_path: Path) -> None:
    require_ebpf()
    exe = _build(tmp_path, "hm_jit", JIT_C)
    with _running(exe, 30) as (proc, line):
        start, size = (int(x, 16) for x in line.split())
        # Without a perf map the JIT frames cannot be named: counted as unsymbolised, module [anon].
        bare = _profile(2, pid=proc.pid)
        perf_map = Path(f"/tmp/perf-{proc.pid}.map")
        try:
            perf_map.write_text(f"{start:x} {size:x} hm_jit_spin\n")
            named = _profile(2, pid=proc.pid)
        finally:
            perf_map.unlink()
    bare_total = _samples_of(bare, proc.pid)
    leaves = [s.frames[-1] for s in bare.stacks for _ in range(s.count) if s.frames]
    unnamed = [f for f in leaves if not f.symbolized and f.module == "[anon]"]
    assert bare_total >= 20 and len(unnamed) >= 0.8 * bare_total, folded(bare)
    assert bare.unsymbolized_frames >= 1
    total = _samples_of(named, proc.pid)
    jit = sum(s.count for s in named.stacks if s.frames and s.frames[-1].name == "hm_jit_spin")
    assert total >= 20 and jit >= 0.8 * total, folded(named)
    assert all(f.kind == "jit" for s in named.stacks for f in s.frames if f.name == "hm_jit_spin")
    assert "hm_jit_spin_[j]" in folded(named)


def test_kernel_frames_of_a_syscall_loop() -> None:
    require_ebpf()
    dd = require_binary("dd")
    proc = subprocess.Popen([dd, "if=/dev/zero", "of=/dev/null", "bs=1", "count=100000000"], stderr=subprocess.DEVNULL)
    try:
        report = _profile(2, pid=proc.pid)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    kernel = [f.name for s in report.stacks for f in s.frames if f.kind == "kernel"]
    assert kernel, folded(report)
    # dd bs=1 lives in read(2) and write(2) of /dev/zero and /dev/null: the kernel names for them.
    assert {"ksys_read", "ksys_write", "vfs_read", "vfs_write", "read_zero", "write_null"} & set(kernel), kernel
    assert any(name.startswith("entry_SYSCALL") or name == "do_syscall_64" for name in kernel), kernel
    symbols = {}
    with open("/proc/kallsyms") as f:
        for line in f:
            address, _, name = line.split()[:3]
            symbols.setdefault(name, int(address, 16))
    frame = next(f for s in report.stacks for f in s.frames if f.kind == "kernel" and f.name in symbols)
    assert frame.address >= symbols[frame.name]


@contextmanager
def _v1_cgroup() -> Iterator[Path]:
    root = Path("/sys/fs/cgroup/cpu")
    require(root.is_dir() and os.path.ismount(root), "a cgroup v1 cpu hierarchy at /sys/fs/cgroup/cpu")
    path = root / f"hm-prof-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        yield path
    finally:
        for child in sorted(path.rglob("*"), reverse=True):
            if child.is_dir():
                for pid in (child / "cgroup.procs").read_text().split():
                    (root / "cgroup.procs").write_text(pid)
                child.rmdir()
        for pid in (path / "cgroup.procs").read_text().split():
            (root / "cgroup.procs").write_text(pid)
        path.rmdir()


def test_cgroup_filter_on_a_v1_hierarchy(tmp_path: Path) -> None:
    require_ebpf()
    exe = _build(tmp_path, "hm_spinner", SPINNER_C)
    with (
        _v1_cgroup() as group,
        _running(exe, 30) as (inside, _),
        _running(exe, 30) as (nested, _),
        _running(exe, 30) as (outside, _),
    ):
        child = group / "child"
        child.mkdir()
        (group / "cgroup.procs").write_text(str(inside.pid))
        (child / "cgroup.procs").write_text(str(nested.pid))
        # The kernel's own account of where each process is (independent of the filter).
        assert f":cpu:/{group.name}\n" in Path(f"/proc/{inside.pid}/cgroup").read_text()
        assert f":cpu:/{group.name}/child\n" in Path(f"/proc/{nested.pid}/cgroup").read_text()
        report = _profile(3, cgroup=str(group))
    pids = {s.pid for s in report.stacks}
    assert _samples_of(report, inside.pid) >= 10 and _samples_of(report, nested.pid) >= 10, pids
    assert outside.pid not in pids
    assert pids <= {inside.pid, nested.pid}, pids  # nothing else runs in a cgroup made by this test
    assert report.cgroup_filter == str(group)


def test_cgroup_and_pid_refused_with_the_fix(tmp_path: Path) -> None:
    require_ebpf()
    with pytest.raises(InvalidInput, match="not in a cgroup file system"):
        ProfileProgram(cgroup=str(tmp_path))
    with pytest.raises(NotFound):
        ProfileProgram(cgroup=str(tmp_path / "absent"))
    with pytest.raises(InvalidInput, match="exclusive"):
        ProfileProgram(pid=1, cgroup="/sys/fs/cgroup/cpu")
    if Path("/sys/fs/cgroup/systemd").is_dir():
        with pytest.raises(InvalidInput, match="no controller"):
            ProfileProgram(cgroup="/sys/fs/cgroup/systemd")
    result = run_cli("ebpf", "profile", "--cgroup", str(tmp_path), "--duration", "1")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    with _a_thread() as tid, pytest.raises(InvalidInput, match=f"is a thread of process {os.getpid()}"):
        ProfileProgram(pid=tid)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:  # a process that never runs has no samples, and the CLI says so
        quiet = run_cli("ebpf", "profile", "--pid", str(sleeper.pid), "--duration", "1", "--format", "json")
        assert quiet.returncode == 0 and "no samples" in quiet.stderr, quiet.stderr
        assert json.loads(quiet.stdout)["samples"] == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    with pytest.raises(NotFound):
        ProfileProgram(pid=sleeper.pid)
    result = run_cli("ebpf", "profile", "--frequency", "1000000", "--duration", "1")
    assert result.returncode == 2 and "--frequency" in result.stderr, result.stderr


@contextmanager
def _a_thread() -> Iterator[int]:
    """A live thread of this process other than the main one: its id has a /proc entry too."""
    import threading

    started, release = threading.Event(), threading.Event()
    ids: list[int] = []

    def run() -> None:
        ids.append(threading.get_native_id())
        started.set()
        release.wait(30)

    thread = threading.Thread(target=run)
    thread.start()
    started.wait(10)
    try:
        yield ids[0]
    finally:
        release.set()
        thread.join()


def test_cli_writes_folded_json_and_svg(tmp_path: Path) -> None:
    require_ebpf()
    exe = _build(tmp_path, "hm_spinner", SPINNER_C)
    with _running(exe, 60) as (spinner, _):
        pid = str(spinner.pid)
        folded_run = run_cli("ebpf", "profile", "--pid", pid, "--duration", "2")
        json_run = run_cli("ebpf", "profile", "--pid", pid, "--duration", "2", "--format", "json")
        svg_path = tmp_path / "out.svg"
        svg_run = run_cli("ebpf", "profile", "--pid", pid, "--duration", "2", "-o", str(svg_path))
    for run in (folded_run, json_run, svg_run):
        assert run.returncode == 0, run.stderr
        assert "samples in" in run.stderr and "frames unsymbolised" in run.stderr
    lines = folded_run.stdout.splitlines()
    assert lines and all(line.rsplit(" ", 1)[1].isdigit() for line in lines)
    assert all(line.startswith("hm_spinner;") for line in lines), lines
    spin = sum(int(line.rsplit(" ", 1)[1]) for line in lines if ";hm_spin_target" in line)
    assert spin >= 0.8 * sum(int(line.rsplit(" ", 1)[1]) for line in lines)
    data = json.loads(json_run.stdout)
    for key in ("samples", "lost_samples", "lost_stacks", "frames", "unsymbolized_frames", "idle_samples"):
        assert key in data, key
    assert set(data["lost_stacks"]) == {
        f"{kind}_stack_{cause}" for kind in ("kernel", "user") for cause in ("collision", "map_full", "other")
    }
    assert data["stacks"] and all(f["name"] for s in data["stacks"] for f in s["frames"])
    svg = svg_path.read_text()
    assert svg.startswith("<?xml") and 'data-n="hm_spin_target"' in svg and "<script" in svg
    assert "http://" not in svg.replace("http://www.w3.org/2000/svg", "")  # nothing fetched from anywhere


def test_ctrl_c_ends_early_and_still_writes(tmp_path: Path) -> None:
    """The spinner is the known work seen in the samples: an idle machine gives a system-wide profile no samples
    (idle CPUs are counted apart), as CI's did."""
    require_ebpf()
    out = tmp_path / "early.json"
    exe = _build(tmp_path, "hm_spinner", SPINNER_C)
    with _running(exe, 60) as (spinner, _):
        proc = subprocess.Popen(
            [*HYPERMESH, "ebpf", "profile", "--duration", "600", "--output", str(out)],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert "profiling every process" in first, first
        time.sleep(1.5)
        started = time.monotonic()
        proc.send_signal(2)
        rest = proc.communicate(timeout=60)[1]
    assert proc.returncode == 0, rest
    assert time.monotonic() - started < 30  # a generous margin: it stops, it does not run out its 600 s
    assert "stopped after" in rest
    data = json.loads(out.read_text())
    assert data["duration_seconds"] < 60 and data["samples"] > 0
    assert any(s["pid"] == spinner.pid for s in data["stacks"]), "the spinner's samples are in the report"


def test_hundred_cycles_leave_nothing_behind() -> None:
    require_ebpf()
    with hypermesh.ebpf.load("profile") as prog:  # warm up: libbpf and the probes are opened once
        prog.attach()
    before = (open_fds(), our_kernel_programs(), our_kernel_links())
    for _ in range(100):
        prog = hypermesh.ebpf.load("profile")
        prog.attach()
        assert len(prog.links) == len(prog.cpus) >= 1
        prog.read()
        prog.close()
    deadline = time.monotonic() + 10
    while True:
        now = (open_fds(), our_kernel_programs(), our_kernel_links())
        if now[0] == before[0] and now[1] <= before[1] and now[2] <= before[2]:
            break
        assert time.monotonic() < deadline, (before, now)
        time.sleep(0.1)
    assert _perf_event_fds() == []


def _perf_event_fds() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the directory's own fd, closed by now
            continue
        if target == "anon_inode:[perf_event]":
            out.append(fd)
    return out


def test_elf_reader_agrees_with_binutils() -> None:
    """Our symbol table and build id of the C library against nm and readelf (GNU binutils)."""
    nm, readelf = require_binary("nm"), require_binary("readelf")
    libc = next(
        (p for p in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/libc.so.6") if os.path.exists(p)),
        None,
    )
    require(libc, "glibc's libc.so.6")
    assert libc is not None
    elf = read_elf(libc)
    notes = subprocess.run([readelf, "-n", libc], capture_output=True, text=True, check=True).stdout
    assert f"Build ID: {elf.build_id}" in notes
    names_at: dict[int, set[str]] = {}
    listing = subprocess.run([nm, "-D", "--defined-only", libc], capture_output=True, text=True, check=True).stdout
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1] in ("T", "W", "i"):
            names_at.setdefault(int(fields[0], 16), set()).add(fields[2].split("@")[0])
    assert len(names_at) > 500
    for address, names in names_at.items():
        found = elf.lookup(address)
        assert found is not None and found[1] == 0 and found[0] in names, (hex(address), names, found)


@contextmanager
def _cgroup2_mount(tmp_path: Path) -> Iterator[Path]:
    """The unified hierarchy mounted at a directory of this test's (it is one hierarchy wherever it is
    mounted: a group made here is the one bpf sees through css_set->dfl_cgrp)."""
    point = tmp_path / "cgroup2"
    point.mkdir()
    mounted = subprocess.run(["mount", "-t", "cgroup2", "none", str(point)], capture_output=True, text=True)
    require(mounted.returncode == 0, f"mounting cgroup2: {mounted.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=True)


def test_cgroup_filter_on_the_unified_hierarchy(tmp_path: Path) -> None:
    require_ebpf()
    exe = _build(tmp_path, "hm_spinner", SPINNER_C)
    with _cgroup2_mount(tmp_path) as point, _running(exe, 30) as (inside, _), _running(exe, 30) as (outside, _):
        group = point / f"hm-prof-{uuid.uuid4().hex[:8]}"
        group.mkdir()
        try:
            (group / "cgroup.procs").write_text(str(inside.pid))
            assert f"0::/{group.name}\n" in Path(f"/proc/{inside.pid}/cgroup").read_text()
            report = _profile(3, cgroup=str(group))
        finally:
            for pid in (group / "cgroup.procs").read_text().split():
                (point / "cgroup.procs").write_text(pid)
            group.rmdir()
    assert _samples_of(report, inside.pid) >= 10
    assert {s.pid for s in report.stacks} == {inside.pid}
    assert outside.pid not in {s.pid for s in report.stacks}


def _with_only(keep: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as root with only ``keep`` (e.g. "bpf,perfmon") left in its bounding set: after exec it
    holds exactly those capabilities."""
    setpriv = require_binary("setpriv")
    bounding = "-all" + "".join(f",+{cap}" for cap in keep.split(",") if cap)
    return subprocess.run(
        [setpriv, "--inh-caps=-all", "--ambient-caps=-all", f"--bounding-set={bounding}", "--", *HYPERMESH, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_capabilities_needed_are_bpf_and_perfmon(tmp_path: Path) -> None:
    require_ebpf()
    args = ("ebpf", "profile", "--duration", "1", "--format", "json")
    for keep, missing in (("", "CAP_BPF"), ("bpf", "CAP_PERFMON")):
        result = _with_only(keep, *args)
        assert result.returncode == 3, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and missing in lines[0] and "Traceback" not in result.stderr, result.stderr
    # CAP_BPF + CAP_PERFMON suffice (no CAP_SYS_ADMIN): system-wide cpu-clock events and the program. The spinner
    # is work to sample: an idle machine gives none.
    exe = _build(tmp_path, "hm_spinner", SPINNER_C)
    with _running(exe, 60) as (spinner, _):
        result = _with_only("bpf,perfmon", *args)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["samples"] > 0
    assert any(s["pid"] == spinner.pid for s in data["stacks"]), "the spinner's samples are in the report"
    # Without CAP_SYSLOG /proc/kallsyms may show zeros (it does here: perf_event_paranoid is 2): then the
    # kernel frames are unnamed, counted, and the report says why.
    with open("/proc/sys/kernel/perf_event_paranoid") as f:
        hidden = int(f.read()) > 1
    kernel = [f for s in data["stacks"] for f in s["frames"] if f["kind"] == "kernel"]
    if hidden and kernel:
        assert not any(f["symbolized"] for f in kernel)
        assert any("CAP_SYSLOG" in note for note in data["notes"]) and "CAP_SYSLOG" in result.stderr


def test_countdown_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal, stderr carries a countdown line rewritten in place; the output file is written. A spinner of
    the test's own is the work profiled: CI's idle machine gave a system-wide profile no samples (594 idle) and an
    empty file."""
    require_ebpf()
    exe = _build(tmp_path, "hm_spinner", SPINNER_C)
    leader, follower = pty.openpty()
    out = tmp_path / "p.folded"
    try:
        with _running(exe, 60) as (spinner, _):
            proc = subprocess.Popen(
                [*HYPERMESH, "ebpf", "profile", "--pid", str(spinner.pid), "--duration", "3", "--output", str(out)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=follower,
            )
            os.close(follower)
            seen = b""
            while True:
                try:
                    chunk = os.read(leader, 4096)
                except OSError:  # EIO: the terminal's other end closed with the process
                    break
                if not chunk:
                    break
                seen += chunk
            assert proc.wait(timeout=60) == 0, seen
    finally:
        os.close(leader)
    text = seen.decode(errors="replace")
    assert "\r" in text and " s left" in text, text
    assert "samples in" in text, text
    assert all(line.startswith("hm_spinner;") for line in out.read_text().splitlines()), out.read_text()[:2000]
    assert out.read_text().strip()
