"""The CLI as user nobody from a checkout that sits under a directory nobody may not enter (/root is 0700)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import require_binary, require_root
from tests.world_readable import REPO, command_for_others, reachable_by_others

pytestmark = pytest.mark.root


def as_nobody(command: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    setpriv = require_binary("setpriv")
    return subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--", *command, *args],
        capture_output=True, text=True, timeout=60, cwd="/", check=False,
    )  # fmt: skip


def test_a_checkout_under_a_private_directory_runs_as_nobody_through_the_helper() -> None:
    require_root()
    python = Path(sys.executable).absolute()
    if not Path(sys.prefix).is_relative_to(REPO):
        pytest.fail(f"the suite's venv {sys.prefix} is outside the checkout: this test hides the checkout only")
    private = Path(tempfile.mkdtemp(prefix="hypermesh-private-"))  # 0700, like /root on a fresh machine
    checkout = private / "project"
    checkout.mkdir()
    subprocess.run(["mount", "--bind", str(REPO), str(checkout)], check=True)
    try:
        assert not reachable_by_others(checkout)
        hidden_python = checkout / python.relative_to(REPO)
        # What a user of the old tests got: the interpreter or the package out of reach.
        plain = as_nobody([str(hidden_python), "-m", "hypermesh.cli.main"], "profile", "--json")
        assert plain.returncode != 0 and ("Permission denied" in plain.stderr or "ModuleNotFound" in plain.stderr)

        command = command_for_others(checkout, hidden_python, checkout / Path(sys.prefix).relative_to(REPO))
        assert "/hypermesh-world-" in command[0]  # through the bind mount
        fixed = as_nobody(command, "profile", "--json")
        assert fixed.returncode == 0, fixed.stderr
        assert json.loads(fixed.stdout)["os"]["hostname"] == os.uname().nodename
    finally:
        subprocess.run(["umount", str(checkout)], check=True)
        checkout.rmdir()
        private.rmdir()
