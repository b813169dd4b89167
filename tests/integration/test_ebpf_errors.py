"""Errors a user can act on: dropped capabilities, a verifier rejection, a file that is not BPF,
kprobes asked for on a kernel without them. Each is one stderr line (plus the verifier log's tail)
and the documented exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hypermesh.ebpf
from hypermesh.ebpf import ObjectSpec
from hypermesh.errors import InvalidInput, NotFound, Unsupported, VerifierError
from tests.conftest import require, require_binary
from tests.integration.ebpf_support import HYPERMESH, REPO, our_kernel_programs, require_ebpf, run_cli
from tests.world_readable import hypermesh_for_others, path_for_others

pytestmark = [pytest.mark.ebpf, pytest.mark.root]

INVALID = str(REPO / "tests" / "fixtures" / "bpf" / "invalid.bpf.o")
LONG_LOG = str(REPO / "tests" / "fixtures" / "bpf" / "long_log.bpf.o")
MIXED = str(REPO / "tests" / "fixtures" / "bpf" / "mixed.bpf.o")
MIXED_PROGRAMS = ["keep_all", "on_getppid", "on_switch", "on_nanosleep", "on_vfs_read"]


def _without_caps(*args: str, keep: str = "") -> tuple[int, str, str]:
    """Run the CLI as root with every capability (or all but ``keep``) removed from its bounding set:
    after exec it holds none of them, like an unprivileged user."""
    setpriv = require_binary("setpriv")
    bounding = "-all" + "".join(f",+{cap}" for cap in keep.split(",") if cap)
    result = subprocess.run(
        [setpriv, "--inh-caps=-all", "--ambient-caps=-all", f"--bounding-set={bounding}", "--", *HYPERMESH, *args],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    return result.returncode, result.stdout, result.stderr


def test_no_capabilities_is_permission_denied_exit_3() -> None:
    require_ebpf()
    for args in (
        ("ebpf", "run", "syscalls", "--duration", "0.1"),
        ("ebpf", "run", "xdp", "--interface", "lo", "--duration", "0.1"),
        ("ebpf", "load", INVALID),
    ):
        code, _out, err = _without_caps(*args)
        assert code == 3, (args, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert "CAP_BPF" in lines[0]
        # Root already, without the capabilities in its bounding set: "run as root" or setcap (file
        # capabilities are masked by the bounding set too) would change nothing.
        assert "this process runs as root, but CAP_BPF" in lines[0] and "bounding set" in lines[0], err
        assert "run as root" not in lines[0] and "setcap" not in lines[0]
        assert "Traceback" not in err
        as_user = _as_nobody("-all", *args)
        assert as_user.returncode == 3, as_user.stderr
        assert "run as root, or grant them" in as_user.stderr
        assert "setcap cap_bpf,cap_perfmon,cap_net_admin+ep" in as_user.stderr


def test_root_whose_capabilities_are_withheld_is_told_so() -> None:
    """Root with a full bounding set but no effective capabilities (SECBIT_NOROOT)."""
    require_ebpf()
    setpriv = require_binary("setpriv")
    result = subprocess.run(
        [setpriv, "--securebits", "+noroot", "--", *HYPERMESH, "ebpf", "run", "syscalls", "--duration", "0.1"],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "this process runs as root" in lines[0] and "effective set" in lines[0], lines
    assert "run as root" not in lines[0] and "setcap" not in lines[0]


def test_xdp_without_perfmon_names_it() -> None:
    """The XDP program's frame length is pointer arithmetic, which the verifier allows only with
    CAP_PERFMON: with bpf,net_admin the run used to end in a verifier error (rc 1)."""
    require_ebpf()
    code, _, err = _without_caps("ebpf", "run", "xdp", "--interface", "lo", "--duration", "0.1", keep="bpf,net_admin")
    assert code == 3, err
    assert "missing CAP_PERFMON" in err and "verifier" not in err


def test_xdp_without_net_admin_names_it() -> None:
    require_ebpf()
    code, _, err = _without_caps("ebpf", "run", "xdp", "--interface", "lo", "--duration", "0.1", keep="bpf,perfmon")
    assert code == 3, err
    assert "missing CAP_NET_ADMIN" in err


def _as_nobody(caps: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as user nobody holding exactly ``caps`` (e.g. "+bpf,+perfmon"), like a user granted them."""
    setpriv = require_binary("setpriv")
    return subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", f"--inh-caps={caps}",
         f"--ambient-caps={caps}", "--", *hypermesh_for_others(), *map(path_for_others, args)],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip


def _probe_reasons(caps: str) -> dict[str, tuple[bool, str]]:
    result = _as_nobody(caps, "ebpf", "probe", "--json")
    assert result.returncode == 0, result.stderr
    return {f["name"]: (f["supported"], f["reason"]) for f in json.loads(result.stdout)["features"]}


def test_probe_names_the_missing_capability_instead_of_blaming_the_kernel() -> None:
    """With CAP_BPF alone, xdp/tracepoint/raw_tp/kprobe used to read "the kernel rejects this program
    type" (libbpf's probe load got EPERM); with +perfmon XDP still did, though +net_admin makes it work."""
    require_ebpf()
    only_bpf = _probe_reasons("+bpf")
    for name in ("xdp_generic", "xdp_native"):
        assert only_bpf[name] == (False, only_bpf[name][1]) and "lacks CAP_NET_ADMIN" in only_bpf[name][1]
    for name in ("tracepoint", "raw_tp", "fentry"):
        assert not only_bpf[name][0] and "lacks CAP_PERFMON" in only_bpf[name][1], only_bpf[name]
    assert only_bpf["ringbuf"] == (True, "")  # a map needs CAP_BPF only
    assert not only_bpf["kprobe"][0]
    assert "CAP_PERFMON" in only_bpf["kprobe"][1] or "kprobe perf PMU" in only_bpf["kprobe"][1]
    with_perfmon = _probe_reasons("+bpf,+perfmon")
    assert not with_perfmon["xdp_generic"][0] and "lacks CAP_NET_ADMIN" in with_perfmon["xdp_generic"][1]
    assert with_perfmon["raw_tp"] == (True, "")
    for reasons in (only_bpf, with_perfmon):
        assert not any("kernel rejects" in why for _, why in reasons.values()), reasons
    # The capability named is the one that was missing: with it, the probe and a real run agree.
    everything = _probe_reasons("+bpf,+perfmon,+net_admin")
    assert everything["xdp_generic"][0] and everything["raw_tp"][0]
    run = _as_nobody(
        "+bpf,+perfmon,+net_admin", "ebpf", "run", "xdp", "-i", "lo", "--mode", "generic", "--duration", "0.1"
    )
    assert run.returncode == 0, run.stderr


def test_kprobe_without_perfmon_is_not_blamed_on_the_kernel() -> None:
    require_ebpf()
    result = _as_nobody("+bpf,+net_admin", "ebpf", "run", "syscalls", "--attach", "kprobe", "--duration", "0.1")
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "kernel rejects" not in lines[0], result.stderr
    if result.returncode == 3:
        assert "missing CAP_PERFMON" in lines[0]
    else:  # a kernel without kprobes says so first: no capability would change that
        assert result.returncode == 4 and "kprobe perf PMU" in lines[0], result.stderr


def test_kernel_refuses_without_capabilities_too() -> None:
    """Our capability pre-check is not the only guard: a raw load through ObjectSpec (no pre-check)
    is refused by the kernel itself, and the loader maps that to the same PermissionDenied."""
    require_ebpf()
    path = os.path.join(os.path.dirname(hypermesh.ebpf.__file__), "programs", "xdp.bpf.o")
    code = (
        "import sys\n"
        "from hypermesh.ebpf import ObjectSpec\n"
        "from hypermesh.errors import PermissionDenied\n"
        f"spec = ObjectSpec({path!r})\n"
        "try:\n"
        "    spec.load()\n"
        "except PermissionDenied as exc:\n"
        "    print(exc.capability, exc.exit_code, exc)\n"
        "    sys.exit(0)\n"
        "sys.exit('loaded without capabilities')\n"
    )
    setpriv = require_binary("setpriv")
    result = subprocess.run(
        [setpriv, "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-all", "--", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("CAP_BPF 3 ")
    assert "runs as root, but CAP_BPF" in result.stdout and "bounding set" in result.stdout


def test_verifier_error_carries_the_log() -> None:
    require_ebpf()
    with ObjectSpec(INVALID) as spec, pytest.raises(VerifierError) as info:
        spec.load()
    err = info.value
    assert "map_value_or_null" in err.log
    assert "missing_null_check" in str(err)
    assert "invalid mem access" in err.log_tail(3)
    assert err.exit_code == 1
    result = run_cli("ebpf", "load", INVALID)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("hypermesh: error: the kernel's verifier rejected")
    assert "map_value_or_null" in result.stderr  # the tail of the log is printed


def test_verifier_log_over_a_mebibyte_keeps_its_end() -> None:
    """long_log.bpf.o makes the verifier log ~3 MiB before it finds the bug. The print callback used
    to format libbpf's message into a 1 MiB buffer, keeping the START: the complaint and the
    "processed N insns" line were cut off and the error named libbpf's next line instead."""
    require_ebpf()
    with ObjectSpec(LONG_LOG) as spec, pytest.raises(VerifierError) as info:
        spec.load()
    err = info.value
    last = err.log.rstrip("\n").splitlines()
    assert last[-1].startswith("processed ") and " insns " in last[-1], last[-3:]
    assert last[-2] == "R0 invalid mem access 'map_value_or_null'", last[-3:]
    assert "bytes cut here" in err.log  # the middle went, and the log says so
    assert len(err.log) <= (1 << 20) + 4096
    assert str(err).endswith("program 'late_null_deref' in long_log.bpf.o: R0 invalid mem access 'map_value_or_null'")
    result = run_cli("ebpf", "load", LONG_LOG)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].endswith("R0 invalid mem access 'map_value_or_null'"), lines[-3:]
    assert lines[-2].startswith("processed ") and lines[-3] == "R0 invalid mem access 'map_value_or_null'"


def test_bounded_message_keeps_the_first_line_and_the_end() -> None:
    from hypermesh.ebpf.libbpf import bounded_message

    short = b"libbpf: one line\n"
    assert bounded_message(short, limit=100) is short
    message = b"BEGIN\n" + b"".join(b"line %d\n" % i for i in range(1000)) + b"the end"
    kept = bounded_message(message, limit=100)
    assert kept.startswith(b"BEGIN\n... (") and kept.endswith(b"line 999\nthe end")
    body = kept.split(b"\n", 2)[2]
    assert len(body) <= 100 and body.startswith(b"line ")  # cut at a line boundary
    cut = int(kept.split(b"\n")[1].split(b"(")[1].split()[0])
    assert cut == len(message) - len(b"BEGIN\n") - len(body)


def test_not_a_bpf_object_is_invalid_input(tmp_path: object) -> None:
    require_ebpf()
    text = os.path.join(str(tmp_path), "notes.bpf.o")
    with open(text, "w") as f:
        f.write("not an ELF file at all\n")
    for path in (text, "/bin/true"):
        with pytest.raises(InvalidInput):
            ObjectSpec(path)
        result = run_cli("ebpf", "load", path)
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1
        assert "not a BPF ELF object" in result.stderr or "not BPF" in result.stderr
    with pytest.raises(NotFound):
        ObjectSpec("/nonexistent/x.bpf.o")


def test_user_object_lists_programs_and_maps() -> None:
    require_ebpf()
    path = os.path.join(os.path.dirname(hypermesh.ebpf.__file__), "programs", "syscalls.bpf.o")
    result = run_cli("ebpf", "load", path, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {p["name"] for p in data["programs"]} == {"on_sys_enter", "raw_sys_enter", "on_x64_sys_call"}
    assert {"config", "syscall_counts", "process_counts"} <= {m["name"] for m in data["maps"]}


def test_kprobe_attach_follows_kernel_support() -> None:
    """Without kprobes (this machine's kernel): Unsupported with the reason, exit 4. With kprobes (the
    6.1 kernel in tests/vm): the kprobe is what gets attached."""
    require_ebpf()
    kprobe = hypermesh.ebpf.probe().feature("kprobe")
    if kprobe.supported:
        with hypermesh.ebpf.load("syscalls", attach="kprobe") as prog:
            prog.attach()
            assert prog.attach_type == "kprobe"
            assert prog.links[0].kind == "kprobe"
        return
    with pytest.raises(Unsupported) as info:
        hypermesh.ebpf.load("syscalls", attach="kprobe")
    assert "CONFIG_KPROBES" in info.value.reason
    result = run_cli("ebpf", "run", "syscalls", "--attach", "kprobe", "--duration", "0.1")
    assert result.returncode == 4
    assert len(result.stderr.strip().splitlines()) == 1
    assert "kprobe" in result.stderr and "CONFIG_KPROBES" in result.stderr


def test_missing_libbpf_is_unsupported_naming_the_package() -> None:
    require_ebpf()
    env = {**os.environ, "HYPERMESH_LIBBPF": "/nonexistent/libbpf.so.1"}
    result = run_cli("ebpf", "run", "syscalls", "--duration", "0.1", env=env)
    assert result.returncode == 4, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "libbpf1" in result.stderr and "apt install" in result.stderr
    probe = run_cli("ebpf", "probe", "--json", env=env)
    assert probe.returncode == 0
    data = json.loads(probe.stdout)
    assert data["libbpf_version"] is None
    assert not any(f["supported"] for f in data["features"])


def test_a_library_that_is_not_libbpf_is_named() -> None:
    """HYPERMESH_LIBBPF at libc was "older than libbpf 1.0". (A libbpf too old or lacking functions:
    test_ebpf_binding.py, through the loader seam, with a fake library instead of one built with gcc.)"""
    require_ebpf()
    libc = "/lib/x86_64-linux-gnu/libc.so.6" if os.path.exists("/lib/x86_64-linux-gnu/libc.so.6") else "libc.so.6"
    env = {**os.environ, "HYPERMESH_LIBBPF": libc}
    result = run_cli("ebpf", "run", "syscalls", "--duration", "0.1", env=env)
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{libc} is not libbpf" in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert f"HYPERMESH_LIBBPF={libc}" in lines[0] and "libbpf1" in lines[0]
    assert "older than libbpf 1.0" not in lines[0]


@pytest.mark.parametrize(
    ("mountpoint", "args", "expected"),
    [
        # Only the tracefs hook needs tracefs (the default is a raw tracepoint: tests/integration/test_no_tracefs.py).
        (
            "/sys/kernel/tracing",
            ("ebpf", "run", "syscalls", "--attach", "tracepoint", "--duration", "0.1"),
            "tracefs is not mounted",
        ),
        ("/sys/fs/bpf", ("ebpf", "run", "syscalls", "--duration", "0.1", "--pin"), "bpffs is not mounted"),
        # Without bpffs nothing can be seen: "nothing pinned" (rc 0) and "nothing named xdp is pinned"
        # (rc 2) were guesses, wrong whenever the host's bpffs holds pins.
        ("/sys/fs/bpf", ("ebpf", "status"), "bpffs is not mounted"),
        ("/sys/fs/bpf", ("ebpf", "status", "--json"), "bpffs is not mounted"),
        ("/sys/fs/bpf", ("ebpf", "detach", "xdp"), "bpffs is not mounted"),
    ],
)
def test_missing_mounts_are_unsupported_with_the_fix(mountpoint: str, args: tuple[str, ...], expected: str) -> None:
    """In a private mount namespace (the host's mounts are untouched) without tracefs or bpffs."""
    require_ebpf()
    unshare = require_binary("unshare")
    script = f"umount {mountpoint} && exec {' '.join(HYPERMESH)} {' '.join(args)}"
    result = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 4, result.stderr
    assert expected in result.stderr and "mount -t" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert os.path.ismount(mountpoint)  # the host still has it


def test_capability_fix_names_the_real_interpreter() -> None:
    """The setcap command is ready to paste: it names this interpreter's real file, not a placeholder."""
    require_ebpf()
    result = _as_nobody("-all", "ebpf", "run", "syscalls", "--duration", "0.1")
    code, err = result.returncode, result.stderr
    assert code == 3, err
    assert f"setcap cap_bpf,cap_perfmon,cap_net_admin+ep {os.path.realpath(sys.executable)}" in err
    assert "<python executable>" not in err


def test_fifo_is_invalid_input_without_blocking(tmp_path: Path) -> None:
    """A FIFO would block open() until a writer came: it is refused at once, naming the file."""
    require_ebpf()
    fifo = tmp_path / "fifo.bpf.o"
    os.mkfifo(fifo)
    with pytest.raises(InvalidInput, match="FIFO"):
        ObjectSpec(str(fifo))  # returns at once: nothing ever writes to this FIFO
    result = run_cli("ebpf", "load", str(fifo), timeout=20)  # TimeoutExpired (a failure) if it blocks
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(fifo) in lines[0] and "regular" in lines[0], result.stderr


def test_oversized_file_is_invalid_input(tmp_path: Path) -> None:
    require_ebpf()
    big = tmp_path / "big.bpf.o"
    real = Path(hypermesh.ebpf.__file__).parent / "programs" / "xdp.bpf.o"
    with open(big, "wb") as f:
        f.write(real.read_bytes())
        f.truncate(65 << 20)  # sparse: costs no disk
    result = run_cli("ebpf", "load", str(big))
    assert result.returncode == 2, result.stderr
    assert "64 MiB" in result.stderr and str(big) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_truncated_or_corrupt_object_says_how_to_rebuild(tmp_path: Path) -> None:
    require_ebpf()
    whole = (Path(hypermesh.ebpf.__file__).parent / "programs" / "syscalls.bpf.o").read_bytes()
    half = tmp_path / "half.bpf.o"
    half.write_bytes(whole[:3000])
    corrupt = tmp_path / "corrupt.bpf.o"  # complete, but e_shstrndx points at no section
    data = bytearray(whole)
    data[0x3E:0x40] = (999).to_bytes(2, "little")
    corrupt.write_bytes(bytes(data))
    for path in (half, corrupt):
        with pytest.raises(InvalidInput):
            ObjectSpec(str(path))
        result = run_cli("ebpf", "load", str(path))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert str(path) in lines[0] and "truncated" in lines[0]
        assert "clang -target bpf" in lines[0] and "make bpf" in lines[0]
    assert "3000 bytes" in run_cli("ebpf", "load", str(half)).stderr


def test_huge_duration_is_refused_before_anything_is_attached() -> None:
    require_ebpf()
    before = our_kernel_programs()
    for program in ("syscalls", "biolatency", "execsnoop"):
        result = run_cli("ebpf", "run", program, "--duration", "1e308")
        assert result.returncode == 2, result.stderr
        assert "--duration" in result.stderr and "attached" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert our_kernel_programs() <= before


EBPF_COMMANDS = [
    (), ("probe",), ("run",), ("run", "xdp"), ("run", "syscalls"), ("run", "biolatency"), ("run", "execsnoop"),
    ("load",), ("status",), ("detach",),
]  # fmt: skip


@pytest.mark.parametrize("command", EBPF_COMMANDS, ids=lambda c: " ".join(c) or "ebpf")
def test_every_ebpf_command_has_help_with_examples(command: tuple[str, ...]) -> None:
    result = run_cli("ebpf", *command, "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "example" in text and "exit codes:" in text
    _usage, _, rest = text.partition("\n\n")
    description = rest.split("\n\n", 1)[0]
    assert len(description) > 40, text  # a description, not only the usage line
    if command and command[0] == "run" and len(command) == 2:
        assert "--duration S " in text and "seconds" in text
    if command == ("run", "syscalls"):
        assert "--top N " in text and "--pid PID " in text
    if command in (("load",), ("detach",)):
        assert "positional arguments:" in text
        positional = text.split("positional arguments:", 1)[1].split("\n\n", 1)[0]
        assert len(positional.strip().splitlines()[0].split(None, 1)) == 2, positional  # NAME + help text
    if command and command[0] in ("run", "load"):
        assert "CAP_BPF" in description or "root" in description


def test_detach_by_a_user_who_may_not_remove_the_pins_is_permission_denied() -> None:
    """An unprivileged user could list root's pins but removing them failed as 'PermissionError' (rc 1)."""
    require_ebpf()
    setpriv = require_binary("setpriv")
    pinned = run_cli("ebpf", "run", "syscalls", "--pin", "--duration", "0.1")
    assert pinned.returncode == 0, pinned.stderr
    try:
        result = subprocess.run(
            [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--",
             *hypermesh_for_others(), "ebpf", "detach", "syscalls"],
            capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
        )  # fmt: skip
        assert result.returncode == 3, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot remove the pins of syscalls" in lines[0] and "run as root" in lines[0]
        assert "syscalls" in [p.name for p in hypermesh.ebpf.pinned()]
    finally:
        assert run_cli("ebpf", "detach", "syscalls").returncode == 0


def test_tracefs_mounted_but_not_readable_is_permission_denied_not_unmounted() -> None:
    """A user with CAP_BPF + CAP_PERFMON but not root cannot search tracefs (mode 0700 root by
    default). It used to be told tracefs was not mounted, with a mount command that changes nothing."""
    require_ebpf()
    setpriv = require_binary("setpriv")
    require(
        not os.stat("/sys/kernel/tracing").st_mode & 0o001,
        "tracefs at /sys/kernel/tracing in its default mode 0700 (here it is searchable by everyone: mounted "
        "with mode= or chmod'ed, which this test would have to change for the whole machine)",
    )
    as_user = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
               "--inh-caps=+bpf,+perfmon", "--ambient-caps=+bpf,+perfmon", "--", *hypermesh_for_others()]  # fmt: skip
    run = subprocess.run(
        [*as_user, "ebpf", "run", "syscalls", "--attach", "tracepoint", "--duration", "0.1"],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert run.returncode == 3, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "mounted at /sys/kernel/tracing but not readable by this user" in lines[0]
    assert "mount -t" not in run.stderr
    probe = subprocess.run(
        [*as_user, "ebpf", "probe", "--json"], capture_output=True, text=True, timeout=60, cwd=REPO, check=False
    )
    data = json.loads(probe.stdout)
    assert data["tracefs_mounted"] is True
    tracepoint = next(f for f in data["features"] if f["name"] == "tracepoint")
    assert not tracepoint["supported"] and "cannot read it" in tracepoint["reason"]


def test_pin_by_a_user_who_may_not_write_the_pin_directory_is_permission_denied() -> None:
    """A non-root user with the capabilities runs --pin while root owns /sys/fs/bpf/hypermesh: it
    used to fail as 'PermissionError' (rc 1)."""
    require_ebpf()
    setpriv = require_binary("setpriv")
    os.makedirs(hypermesh.ebpf.PIN_ROOT, exist_ok=True)  # root's, as after any root --pin
    result = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=+bpf,+perfmon,+net_admin",
         "--ambient-caps=+bpf,+perfmon,+net_admin", "--", *hypermesh_for_others(), "ebpf", "run", "xdp", "-i", "lo", "--mode", "generic",
         "--pin", "--duration", "0.1"],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "cannot pin xdp" in lines[-1] and "run as root" in lines[-1] and "Traceback" not in result.stderr
    assert "xdp-lo" not in [p.name for p in hypermesh.ebpf.pinned()]


def test_load_that_fails_still_lists_the_object_and_names_the_refused_program() -> None:
    """An EPERM on an object of several programs said "loading X was refused" without saying which
    program, and printed nothing of what the object holds."""
    require_ebpf()
    # CAP_BPF alone: the socket filter loads, the first tracing program is refused (needs CAP_PERFMON).
    as_user = _as_nobody("+bpf", "ebpf", "load", MIXED, "--json")
    assert as_user.returncode == 3, as_user.stderr
    data = json.loads(as_user.stdout)
    assert [p["name"] for p in data["programs"]] == MIXED_PROGRAMS and [m["name"] for m in data["maps"]] == ["hits"]
    assert data["loaded"] is False
    refused = data["refused_program"]
    assert refused in MIXED_PROGRAMS[1:], data  # a tracing one: the socket filter needs only CAP_BPF
    (line,) = as_user.stderr.strip().splitlines()
    assert f"loading program {refused!r} (" in line and "missing CAP_PERFMON" in line, line
    # As root: this 6.18 kernel refuses fentry programs (probe: fentry unsupported); 6.1 loads them all.
    fentry = hypermesh.ebpf.probe().feature("fentry")
    text = run_cli("ebpf", "load", MIXED)
    listing = text.stdout.splitlines()
    assert len([x for x in listing if x.strip().startswith("program ")]) == 5, text.stdout
    if fentry.supported:
        assert text.returncode == 0, text.stderr
        assert "loaded and unloaded" in listing[0]
        return
    assert text.returncode == 3, text.stderr
    assert listing[0].endswith("NOT loaded: the kernel refused program 'on_vfs_read'"), listing[0]
    assert [x.split()[1] for x in listing if x.endswith("<- refused")] == ["on_vfs_read"]
    (line,) = text.stderr.strip().splitlines()
    assert "loading program 'on_vfs_read' (fentry/vfs_read) of mixed.bpf.o was refused" in line, line
