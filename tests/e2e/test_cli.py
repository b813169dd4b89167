"""The CLI as a user runs it: a real process, its stdout, stderr and exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import hypermesh
import hypermesh.model
from tests.conftest import require, require_root
from tests.integration.test_agent_startup import ctrl_c_after_the_hold
from tests.integration.test_backend_contract import PROFILE_KEYS, SAMPLE_KEYS
from tests.kernel_facts import online_cpus

HYPERMESH = str(Path(sys.executable).with_name("hypermesh"))


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HYPERMESH, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_profile_json_is_the_documented_record() -> None:
    r = run("profile", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data) == {"os", "cpu", "memory", "storage", "network", "gpus", "limits", "timings_ms"}
    for part, keys in PROFILE_KEYS.items():  # the names the issue fixes, as the library's contract test has them
        assert set(data[part]) == keys, part
    assert data["cpu"]["logical_cores"] == len(online_cpus())
    for device in data["storage"]:
        assert device["kind"] in ("nvme", "ssd", "hdd", "virtual")
    for iface in data["network"]:
        assert iface["kind"] in ("physical", "virtual", "loopback")


def test_profile_tables_name_the_machine() -> None:
    r = run("profile")
    assert r.returncode == 0, r.stderr
    assert os.uname().nodename in r.stdout and "CPU caches" in r.stdout and "Network" in r.stdout


def test_sample_json_lines() -> None:
    r = run("sample", "--json", "--count", "3", "--interval", "0.05")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 3
    for s in lines:
        assert set(s) == {"timestamp", "interval_s", "cpu", "memory", "disks", "network", "load"}
        for part, keys in SAMPLE_KEYS.items():
            assert set(s[part]) == keys, part
        assert len(s["cpu"]["per_core"]) == len(online_cpus())
        assert 0.03 <= s["interval_s"] <= 2.5  # 0.05 s asked; the upper end only catches a stuck stream
    assert lines[0]["timestamp"] < lines[1]["timestamp"] < lines[2]["timestamp"]


def ebpf_refusal(args: list[str], needle: str) -> object:
    """An ``ebpf run`` refused at parsing. The suite's marker check counts any ``ebpf run`` as a program load, so
    these rows carry its markers although argparse refuses them before any privilege check or load."""
    return pytest.param(args, needle, marks=[pytest.mark.ebpf, pytest.mark.root])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["sample", "--interval", "0"], "--interval"),
        (["sample", "--interval", "-1"], "--interval"),
        (["sample", "--interval", "abc"], "--interval"),
        (["sample", "--count", "0"], "--count"),
        (["sample", "--count", "x"], "--count"),
        (["sample", "--interval", "nan"], "--interval"),
        (["sample", "--interval", "inf"], "--interval"),
        (["sample", "--interval", "1e-320"], "at least 0.001"),  # a subnormal overflowed the schedule (exit 1)
        (["sample", "--interval", "0.0001"], "at least 0.001"),
        (["sample", "--interval", "1_0"], "--interval"),  # Python's float("1_0") is 10
        (["sample", "--interval"], "expected one argument"),
        (["sample", "--count", "-3"], "--count"),
        (["sample", "--count", "1_0"], "--count"),
        # int() and float() read other scripts' digits: "١" (Arabic-Indic one) was 1, "١٠" 10; "²" was refused.
        (["sample", "--interval", "١"], "'١' is not a number of seconds"),
        (["sample", "--interval", "١٠s"], "is not a number of seconds"),
        (["sample", "--interval", "１"], "is not a number of seconds"),  # full-width one
        (["sample", "--interval", " 1"], "is not a number of seconds"),
        (["sample", "--count", "١"], "'١' is not a whole number"),
        (["sample", "--count", "9" * 5000], "--count"),  # int() refuses over 4300 digits with its own ValueError
        ebpf_refusal(["ebpf", "run", "syscalls", "--pid", "١", "--duration", "1"], "'١' is not a whole number"),
        ebpf_refusal(["ebpf", "run", "syscalls", "--top", "٣", "--duration", "1"], "'٣' is not a whole number"),
        ebpf_refusal(["ebpf", "run", "xdp", "--interface", "lo", "--duration", "٣"], "'٣' is not a number of seconds"),
        (["agent", "--interval", "١"], "'١' is not a number of seconds"),
        (["agent", "--max-connections", "٥٠"], "is not a whole number"),
        (["agent", "--listen", "127.0.0.1:²"], "is not HOST:PORT"),  # was exit 1, a ValueError from int()
        # Was 'serving http://127.0.0.1:10/': "١٠" is ten. The timeout ends the old behaviour's test.
        (["agent", "--listen", "127.0.0.1:١٠"], "is not HOST:PORT"),
        (["agent", "--listen", "127.0.0.1:" + "9" * 5000], "out of range"),
        # Was "interface must be an interface name (str), got str ''", and only once root and libbpf had been checked.
        ebpf_refusal(["ebpf", "run", "xdp", "--interface", "", "--duration", "1"], "the interface name is empty"),
        ebpf_refusal(["ebpf", "run", "xdp", "-i", "x" * 16, "--duration", "1"], "at most 15"),
        ebpf_refusal(["ebpf", "run", "xdp", "-i", "a/b", "--duration", "1"], "not an interface name"),
        (["frobnicate"], "frobnicate"),
        (["profile", "--nope"], "'hypermesh profile --help'"),
        (["sample", "--nope"], "'hypermesh sample --help'"),
        (["--nope"], "--nope"),  # not "COMMAND is required", which hides the typo
        ([], "COMMAND"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    r = run(*args, timeout=30)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert needle in lines[0] and "Traceback" not in r.stderr


def test_unknown_backend_is_a_clear_error() -> None:
    r = run("profile", "--json", env={"HYPERMESH_BACKEND": "bogus"})
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "HYPERMESH_BACKEND" in r.stderr and "portable" in r.stderr


@pytest.mark.parametrize(
    ("args", "env"),
    [(["profile", "--debug"], {"HYPERMESH_BACKEND": "bogus"}), (["--debug", "sample", "--interval", "0"], {})],
)
def test_debug_shows_the_traceback_and_keeps_the_exit_code(args: list[str], env: dict[str, str]) -> None:
    r = run(*args, env=env)
    assert "Traceback" in r.stderr
    assert r.returncode == 2, r.stderr  # --debug shows more; it does not turn a usage error into exit 1
    assert r.stderr.rstrip().splitlines()[-1].startswith("hypermesh: error: ")


def test_profile_tables_into_a_pipe_are_whole_and_unpadded() -> None:
    r = run("profile")  # stdout is a pipe here
    assert r.returncode == 0, r.stderr
    for name in os.listdir("/sys/class/net"):
        with open(f"/sys/class/net/{name}/address") as f:
            mac = f.read().strip()
        assert mac in r.stdout, f"{name}'s MAC {mac} cut or missing"
    assert "…" not in r.stdout
    assert [line for line in r.stdout.splitlines() if line != line.rstrip()] == []


def test_help_teaches() -> None:
    r = run("--help")
    assert r.returncode == 0
    for word in ("profile", "sample", "exit codes", "HYPERMESH_BACKEND"):
        assert word in r.stdout
    for command in ("profile", "sample"):
        r = run(command, "--help")
        assert r.returncode == 0
        for word in ("examples", "exit codes", "HYPERMESH_BACKEND", "--debug"):
            assert word in r.stdout, (command, word)
    assert "--interval" in run("sample", "--help").stdout


def interrupted(
    args: list[str], when: Callable[[subprocess.Popen[str]], object], sig: signal.Signals = signal.SIGINT
) -> tuple[int, str, str]:
    """Run the CLI, send ``sig`` once ``when(proc)`` returns, and give (exit code, stdout, stderr); never leaves the
    process behind."""
    proc = subprocess.Popen([HYPERMESH, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        when(proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])  # SIGTERM was exit 143; agent and ebpf run exit 0
@pytest.mark.parametrize("mode", [["--json"], []])
def test_ctrl_c_or_sigterm_ends_a_running_sample_cleanly(mode: list[str], sig: signal.Signals) -> None:
    code, out, err = interrupted(["sample", "--interval", "0.05", *mode], lambda _proc: time.sleep(1.5), sig)
    assert code == 0, err
    assert "Traceback" not in err
    if mode:
        assert len(out.splitlines()) >= 5
        json.loads(out.splitlines()[0])
    else:
        assert " cpu " in out  # not a terminal: one plain line per sample


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("mode", [["--json"], []])
def test_ctrl_c_or_sigterm_while_the_sampler_opens_its_files_exits_0(mode: list[str], sig: signal.Signals) -> None:
    """The window between parsing and the first sample (Sampler() opening /proc, rich loading) was exit 130."""

    def until_proc_stat_is_open(proc: subprocess.Popen[str]) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                fds = os.listdir(f"/proc/{proc.pid}/fd")
            except FileNotFoundError:
                break
            if any(_link(f"/proc/{proc.pid}/fd/{fd}") == "/proc/stat" for fd in fds):
                return
            time.sleep(0.0005)
        raise AssertionError("the sampler never opened /proc/stat")

    code, _out, err = interrupted(["sample", "--interval", "5", *mode], until_proc_stat_is_open, sig)
    assert code == 0, err
    assert "Traceback" not in err


@pytest.mark.parametrize("mode", [["--json"], []])
def test_ctrl_c_at_any_moment_of_the_sample_start_exits_0_quietly(mode: list[str]) -> None:
    """As the agent's start (tests/integration/test_agent_startup.py): once Ctrl-C is held, a SIGINT after 0 to 300 ms
    ends the run with 0 and not a word. A KeyboardInterrupt raised while a dataclass's generated code ran made Python
    end by SIGINT at exit (-2, silently); one raised inside an import's weakref callback was dropped."""
    for delay in (0.0, 0.01, 0.03, 0.06, 0.1, 0.2, 0.3):
        code, _out, err = ctrl_c_after_the_hold(["sample", "--interval", "5", *mode], delay)
        assert (code, err) == (0, ""), (delay, err[-3000:])


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def test_table_view_on_a_terminal_redraws_in_place() -> None:
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [HYPERMESH, "sample", "--interval", "0.1", "--count", "5"],
        stdout=slave,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "120", "LINES": "50", "TERM": "xterm"},
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=15)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0
    assert "CPU" in screen and "source: " in screen and "Memory and load" in screen
    assert "\x1b[" in screen  # cursor movement: the live view redraws rather than scrolls


def test_portable_backend_cli() -> None:
    r = run("profile", "--json", env={"HYPERMESH_BACKEND": "portable"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["cpu"]["logical_cores"] == len(online_cpus())


def test_import_stays_light() -> None:
    """`import hypermesh` loads neither the CLI/web stack nor psutil on Linux (its cost is in `make bench`)."""
    code = "import sys, hypermesh; print(' '.join(sorted(sys.modules)))"
    mods = set(subprocess.check_output([sys.executable, "-c", code], text=True).split())
    heavy = {
        "psutil",
        "rich",
        "starlette",
        "uvicorn",
        "prometheus_client",
        "argparse",
        "typing",
        "dataclasses",
        "ctypes",
    }
    assert not (mods & heavy), mods & heavy
    assert "hypermesh.ebpf" not in mods and "hypermesh.agent" not in mods


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_agent_stops_cleanly_on_ctrl_c_and_sigterm(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [HYPERMESH, "agent", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "serving http://127.0.0.1:" in line, line
        began = time.monotonic()
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:  # never leave an agent behind, whatever failed above
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert time.monotonic() - began < 5.0
    assert "Traceback" not in err


def test_table_view_into_a_pipe_prints_one_line_per_sample() -> None:
    r = run("sample", "--interval", "0.05", "--count", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    for line in lines:
        assert " cpu " in line and " mem " in line and " net rx " in line


@pytest.mark.parametrize("args", [["profile"], ["profile", "--json"], ["sample", "--json", "--interval", "0.01"]])
def test_a_reader_that_goes_away_is_a_clean_exit(args: list[str]) -> None:
    """`hypermesh ... | head -1`: the pipe closes under us; that is exit 0 with nothing on stderr."""
    proc = subprocess.Popen([HYPERMESH, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        proc.stdout.close()
        _out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert err == b""


@pytest.mark.parametrize("args", [["sample", "--interval", "1e308"], ["sample", "--interval", "2000000"]])
def test_absurdly_long_intervals_are_refused(args: list[str]) -> None:
    r = run(*args)
    assert r.returncode == 2
    assert "at most" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.root
def test_a_zero_pids_limit_is_shown_as_a_limit_not_unlimited() -> None:
    """pids.max 0 (legal: no fork allowed) in a cgroup we make; the table said "unlimited", the JSON 0."""
    require_root()
    v1 = "/sys/fs/cgroup/pids"
    v2_ok = (
        os.path.exists("/sys/fs/cgroup/cgroup.subtree_control")
        and "pids" in Path("/sys/fs/cgroup/cgroup.subtree_control").read_text().split()
    )
    require(os.path.isdir(v1) or v2_ok, "no pids controller (cgroup v1 pids mount or v2 root delegation)")
    group = f"{v1 if os.path.isdir(v1) else '/sys/fs/cgroup'}/hm-test-{os.getpid()}"
    os.mkdir(group)
    try:
        Path(group, "pids.max").write_text("0")
        # exec, not fork: the shell joins the cgroup, then becomes hypermesh (Python starts no thread of its own).
        script = f'echo $$ > {group}/cgroup.procs && exec "$0" profile "$@"'
        outs = [
            subprocess.run(["sh", "-c", script, HYPERMESH, *extra], capture_output=True, text=True, timeout=60)
            for extra in ([], ["--json"])
        ]
    finally:
        for _ in range(50):  # the processes have exited; the kernel frees the cgroup shortly after
            try:
                os.rmdir(group)
                break
            except OSError:
                time.sleep(0.1)
    table, as_json = outs
    assert table.returncode == 0 and as_json.returncode == 0, (table.stderr, as_json.stderr)
    assert json.loads(as_json.stdout)["limits"]["pids_max"] == 0
    limits = next(line for line in table.stdout.splitlines() if line.startswith("limits"))
    assert "pids 0" in limits, limits


def _with(sample: hypermesh.Sample, timestamp: float, load1: float) -> hypermesh.Sample:
    load = hypermesh.model.LoadAverage(load1, sample.load.avg5, sample.load.avg15)
    return hypermesh.Sample(timestamp, sample.interval_s, sample.cpu, sample.memory, sample.disks, sample.network, load)


def test_live_view_survives_a_wall_clock_step_and_ends_on_the_last_sample(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real readings; only their timestamps are set, since this machine's clock must not really be stepped."""
    from hypermesh.cli.render import live_samples

    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich draws the live view as on a terminal
    monkeypatch.setenv("TERM", "xterm")  # ... that can move its cursor: TERM=dumb (CI, a bare chroot) draws once
    with hypermesh.Sampler(min_interval=0.01) as sampler:
        real = sampler.sample()

    def stepped() -> Iterator[hypermesh.Sample]:
        # 0.15 s apart in real time; the wall clock is stepped back 500 s (NTP, `date -s`) after the third.
        for i, stamp in enumerate([1000.0, 1000.2, 1000.4, 500.0, 500.2, 500.4]):
            if i:
                time.sleep(0.15)
            yield _with(real, stamp, 1.0 + i)

    live_samples(stepped(), 0.2)
    assert capsys.readouterr().out.count("Memory and load") >= 6  # every sample drawn, not only the first three

    # Faster than the ~10 Hz redraw: the view left on screen must be the last sample's.
    live_samples((_with(real, 2000.0 + i / 100, 1.11 * (i + 1)) for i in range(5)), 0.01)
    assert "5.55" in capsys.readouterr().out


def test_live_view_at_100_hz_redraws_about_ten_times_a_second() -> None:
    """Redrawing every 100 Hz sample cost a third of a CPU and made the stream miss its deadlines."""
    import pty

    master, slave = pty.openpty()
    began = time.monotonic()
    proc = subprocess.Popen(
        [HYPERMESH, "sample", "--interval", "0.01", "--count", "200"],
        stdout=slave,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "120", "LINES": "50", "TERM": "xterm"},
    )
    os.close(slave)
    redraws = 0
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            redraws += data.count(b"Memory and load")
        proc.wait(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    seconds = time.monotonic() - began
    assert proc.returncode == 0
    assert 10 <= redraws <= 10 * seconds + 5, (redraws, seconds)


@pytest.mark.parametrize(
    "args", [["profile", "--nope"], ["--nope"], ["ebpf"], ["sample", "--interval", "0"], ["frobnicate"], []]
)
def test_usage_errors_have_one_prefix(args: list[str]) -> None:
    """Was 'hypermesh: error: hypermesh profile: unrecognized arguments: ...': the command's name said twice."""
    r = run(*args, timeout=30)
    assert r.returncode == 2
    line = r.stderr.strip()
    assert line.startswith("hypermesh: error: ") and line.count("hypermesh: ") == 1, line
    assert not line.startswith("hypermesh: error: hypermesh"), line
    assert "--help'" in line  # the command is still named: in the help it points to
