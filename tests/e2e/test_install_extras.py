"""A base install (`pip install hypermesh`, no extras) as a new user has it: commands that need an extra say so.

Built for real: a fresh virtualenv, the project installed from this checkout without its dependencies, then only its
base dependencies (psutil, rich). The agent's web stack is then truly absent, as on a user's machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL_HINT = "pip install 'hypermesh[agent]'"


@pytest.fixture(scope="module")
def base_install(tmp_path_factory) -> Path:
    """The bin/ directory of a virtualenv holding hypermesh and its base dependencies only."""
    venv = tmp_path_factory.mktemp("base-install") / "venv"
    env = _clean_env()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for packages in (["--no-deps", str(ROOT)], ["psutil", "rich"]):
        result = subprocess.run([*pip, *packages], capture_output=True, text=True, env=env, timeout=600)
        assert result.returncode == 0, result.stderr
    return venv / "bin"


def _clean_env() -> dict[str, str]:
    """This process's environment without what would let the new interpreter see the project's own virtualenv."""
    return {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    }


def _run(bin_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / "hypermesh"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd="/",  # not the checkout: its src/ must not be what gets imported
        timeout=60,
    )


@pytest.mark.slow
def test_the_base_install_lacks_the_agent_extra_and_still_runs_the_core(base_install):
    # The premise of the tests below, checked rather than assumed; and the base install is not broken.
    probe = "import importlib.util as u; print([m for m in ('starlette', 'uvicorn', 'prometheus_client', 'bcrypt') if u.find_spec(m)])"
    found = subprocess.run(
        [str(base_install / "python"), "-c", probe],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd="/",
        timeout=60,
    )
    assert found.stdout.strip() == "[]", found
    where = subprocess.run(
        [str(base_install / "python"), "-c", "import hypermesh; print(hypermesh.__file__)"],
        capture_output=True, text=True, env=_clean_env(), cwd="/", timeout=60,
    )  # fmt: skip
    assert where.stdout.startswith(str(base_install.parent)), where
    profile = _run(base_install, "profile", "--json")
    assert profile.returncode == 0, profile.stderr
    assert '"cpu"' in profile.stdout
    helped = _run(base_install, "agent", "--help")  # the command is listed and explained, extra or not
    assert helped.returncode == 0 and "pip install 'hypermesh[agent]'" in helped.stdout, helped.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "stdin", "module"),
    [
        # Was exit 1: "ModuleNotFoundError: No module named 'uvicorn'".
        (["agent", "--listen", "127.0.0.1:0"], "", "starlette"),
        (["agent", "--hash-password"], "a password\n", "bcrypt"),
    ],
)
def test_a_command_that_needs_the_agent_extra_exits_4_naming_it(base_install, args, stdin, module):
    result = _run(base_install, *args, stdin=stdin)
    assert result.returncode == 4, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hypermesh: error: hypermesh agent"), lines[0]
    assert module in lines[0] and "'agent' extra" in lines[0] and lines[0].endswith(INSTALL_HINT), lines[0]
    assert result.stdout == ""


@pytest.mark.slow
def test_cluster_views_need_no_extra_and_rollout_names_its_own(base_install, tmp_path):
    """The fan-out speaks HTTP/1.1 itself (cluster/http1.py): a base install asks agents, and only the roll-out
    (httpx) needs the 'cluster' extra. Port 1 on loopback refuses: the answer names the node and why."""
    probe = "import importlib.util as u; print(u.find_spec('httpx') is None)"
    found = subprocess.run(
        [str(base_install / "python"), "-c", probe], capture_output=True, text=True, env=_clean_env()
    )
    assert found.stdout.strip() == "True", found.stderr  # the premise
    status = _run(base_install, "cluster", "status", "--node", "http://127.0.0.1:1", "--json")
    assert "Traceback" not in status.stderr and "extra" not in status.stderr, status.stderr
    view = json.loads(status.stdout)
    assert status.returncode == 0, status.stderr  # a partial answer by default: what arrived, and who failed
    assert [(f["node_id"], f["kind"]) for f in view["summary"]["failed"]] == [("127.0.0.1:1", "refused")], view
    config = tmp_path / "agent.toml"
    config.write_text("interval = 1.0\n")
    rollout = _run(base_install, "cluster", "rollout", "--config", str(config), "--node", "http://127.0.0.1:1")
    assert rollout.returncode == 4, rollout.stderr
    line = rollout.stderr.strip().splitlines()
    assert len(line) == 1 and "httpx" in line[0] and "'cluster' extra" in line[0], rollout.stderr
