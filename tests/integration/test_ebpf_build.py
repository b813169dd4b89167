"""`make bpf`, in a copy of the sources: what it installs, when it regenerates vmlinux.h, what it
rebuilds and what `clean` removes. The committed objects are never touched (a copy is built)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from hypermesh.ebpf import ObjectSpec
from tests.conftest import require_binary
from tests.integration.ebpf_support import REPO, require_ebpf

pytestmark = [pytest.mark.ebpf, pytest.mark.root]

PROGRAMS = REPO / "src" / "hypermesh" / "ebpf" / "programs"
FIXTURES = REPO / "tests" / "fixtures" / "bpf"


def _tree(root: Path) -> Path:
    """The Makefile's layout (it finds build/ and tests/fixtures/ by relative paths), sources only."""
    programs = root / "src" / "hypermesh" / "ebpf" / "programs"
    programs.mkdir(parents=True)
    for path in [
        PROGRAMS / "Makefile",
        PROGRAMS / "gen_syscall_names.py",
        *PROGRAMS.glob("*.bpf.c"),
        *PROGRAMS.glob("*.h"),
    ]:
        shutil.copy(path, programs)
    shutil.copy2(REPO / "src" / "hypermesh" / "ebpf" / "syscall_names.py", programs.parent)
    (root / "tests" / "fixtures" / "bpf").mkdir(parents=True)
    for path in FIXTURES.glob("*.bpf.c"):
        shutil.copy(path, root / "tests" / "fixtures" / "bpf")
    return programs


def _make(programs: Path, *args: str) -> str:
    result = subprocess.run(
        ["make", "-C", str(programs), *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_make_bpf_regenerates_vmlinux_h_for_another_kernel_and_cleans_up(tmp_path: Path) -> None:
    require_ebpf()
    for tool in ("make", "clang", "bpftool"):
        require_binary(tool)
    programs = _tree(tmp_path)
    build = tmp_path / "build" / "bpf"
    first = _make(programs)
    for source in PROGRAMS.glob("*.bpf.c"):
        built = programs / source.name.replace(".c", ".o")
        with ObjectSpec(str(built)) as fresh, ObjectSpec(str(PROGRAMS / built.name)) as committed:
            assert fresh.info().programs == committed.info().programs  # path aside, the same object
    assert "btf dump" in first and (build / "vmlinux.h").exists()
    stamp = (build / "vmlinux.id").read_text().split()
    assert stamp[0] == platform.release() and len(stamp[1]) == 64  # the release and the BTF's sha256

    again = _make(programs)
    assert "clang" not in again and "btf dump" not in again  # nothing to do for the same kernel

    # As after booting another kernel: vmlinux.h is made again, the CO-RE objects are not rebuilt.
    (build / "vmlinux.id").write_text("6.1.0-other 0123\n")
    other = _make(programs)
    assert "btf dump" in other and "clang" not in other, other
    assert (build / "vmlinux.id").read_text().split()[0] == platform.release()

    assert list(build.glob("*.bpf.o.full"))  # the intermediates clang writes...
    _make(programs, "clean")
    assert not list(build.glob("*.bpf.o.full")) and not (build / "vmlinux.h").exists()  # ...go with clean


def test_make_bpf_installs_only_the_bpf_dependencies() -> None:
    """`make bpf` depended on `deps`, which installs every group (browser, VM kernel, Prometheus)."""
    require_binary("make")
    result = subprocess.run(
        ["make", "-n", "bpf"], capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
        env={**os.environ, "MAKEFLAGS": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    deps = [line.strip() for line in result.stdout.splitlines() if "deps.sh" in line]
    assert deps == ["scripts/deps.sh bpf"], result.stdout
