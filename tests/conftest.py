"""Shared test rules.

A test may skip only when a capability is truly absent on this machine *and* CI is unset: under
CI=true a missing capability is a failure, because CI runs as root on a machine that has them all.
Use ``require(condition, "what is missing and how to get it")`` instead of ``pytest.skip``. The hooks of
tests/suite_rules.py make any other skip fail under CI=true too, and check each test's markers against what it did.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.suite_rules import (  # noqa: F401 - pytest finds hooks by name in a conftest
    IN_CI,
    needs,
    pytest_configure,
    pytest_make_collect_report,
    pytest_runtest_makereport,
    pytest_runtest_protocol,
)

# A suite started in the background (`nohup make test &`) gets SIGINT and SIGQUIT ignored from its shell, Python
# keeps Ctrl-C ignored then, and every process the tests start inherits that: the tests that press Ctrl-C on the CLI
# and the agent saw a hang (10 failures in one such run). Ctrl-C is put back as a terminal delivers it; a process
# started from here gets the default disposition (a handler is reset at exec, an ignored signal is not).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGQUIT) is signal.SIG_IGN:
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def require(condition: object, missing: str) -> None:
    """Skip (outside CI) or fail (in CI) when ``condition`` is false."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"capability missing in CI, where it must be present: {missing}")
    pytest.skip(missing)


def require_root(why: str = "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)") -> None:
    needs("root", "require_root()")
    require(os.geteuid() == 0, why)


def require_binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
    require(path, f"{name} not installed: run 'make deps' as root")
    return path or ""


@pytest.fixture
def requires() -> object:
    """The ``require`` helper as a fixture, for tests that prefer injection."""
    return require


@pytest.fixture
def block_device_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory on a real block device (an ext4 loop device), whatever / sits on: see tests/block_device.py."""
    from tests.block_device import mounted_block_device

    with mounted_block_device(tmp_path) as directory:
        yield directory
