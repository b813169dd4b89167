"""`make run` on a copy of the tree, with the package installer stubbed: it asks only for what running needs.

The stubs (tests' own shell scripts, first on PATH) are dpkg-query, which says no package is installed, and apt-get,
which records what it was asked and installs nothing. Everything else is real: make, scripts/deps.sh, the venv (the
one this suite runs in, linked in), scripts/kernel-mounts.sh and the agent, started on port 0 and stopped with SIGINT.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_binary, require_root

REPO = Path(__file__).resolve().parents[2]


pytestmark = [pytest.mark.root, pytest.mark.slow]

FAKE_DPKG_QUERY = "#!/bin/sh\nexit 1\n"  # not installed, whatever the package
FAKE_APT_GET = '#!/bin/sh\necho "$*" >> "$APT_LOG"\nexit 0\n'


def deps_group(name: str) -> set[str]:
    """A group's packages as scripts/deps.sh declares them."""
    text = (REPO / "scripts" / "deps.sh").read_text()
    match = re.search(rf'^\s*\[{name}\]="([^"]*)"', text, re.MULTILINE)
    assert match, name
    return set(match.group(1).split())


def tree_copy(tmp_path: Path) -> Path:
    """The checkout as a user has it (no venv, caches, git metadata), not via git: a fresh machine has no git."""
    copy = tmp_path / "tree"
    skip = shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "artifacts"
    )
    shutil.copytree(REPO, copy, ignore=skip, symlinks=True)  # copy2 keeps mtimes: the venv stamp stays newest
    (copy / ".venv").symlink_to(Path(sys.prefix))
    return copy


def stub_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir()
    for name, body in (("dpkg-query", FAKE_DPKG_QUERY), ("apt-get", FAKE_APT_GET)):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def asked_to_install(log: Path) -> set[str]:
    packages: set[str] = set()
    for line in log.read_text().splitlines():
        words = line.split()
        if "install" in words:
            packages |= {w for w in words[words.index("install") + 1 :] if not w.startswith("-")}
    return packages


@pytest.mark.parametrize(("ebpf", "groups"), [("", ("base",)), ("syscalls", ("base", "bpf"))])
def test_make_run_installs_only_what_running_needs(tmp_path: Path, ebpf: str, groups: tuple[str, ...]) -> None:
    require_root("deps.sh installs only as root; as another user it stops at the list")
    require_binary("make")
    copy, log = tree_copy(tmp_path), tmp_path / "apt.log"
    if not (copy / ".venv" / ".installed").exists():  # else make would pip install into the suite's own venv
        pytest.fail("the venv this suite runs in has no `make venv` stamp (.installed): run make venv")
    env = {**os.environ, "PATH": f"{stub_bin(tmp_path)}:{os.environ['PATH']}", "APT_LOG": str(log)}
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run", "LISTEN=127.0.0.1:0", f"EBPF={ebpf}"],
        cwd=copy, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "serving http://127.0.0.1:" in line or "error" in line:
                break
        assert any("serving http://127.0.0.1:" in line for line in seen), "".join(seen)
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    wanted = set().union(*(deps_group(g) for g in groups))
    asked = asked_to_install(log)
    assert asked == wanted, (asked - wanted, wanted - asked)
    for other in ("testing", "prom", "browser", "vm"):
        assert not (asked & deps_group(other)), other
