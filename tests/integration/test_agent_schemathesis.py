"""schemathesis fuzzes the running agent from its own /openapi.json: no 5xx, responses match the schema."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import require
from tests.fixtures.agent.agent_process import AgentProcess

pytestmark = pytest.mark.slow


def test_schemathesis_finds_no_server_errors_and_no_schema_violations(tmp_path):
    binary = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    require(Path(binary).exists(), "schemathesis is not installed: make venv")
    with AgentProcess("--interval", "0.5") as agent:
        schema = httpx.get(f"{agent.url}/openapi.json", timeout=10).json()
        result = subprocess.run(
            [binary, "run", f"{agent.url}/openapi.json", "--checks", "all", "--phases", "coverage,fuzzing",
             "--max-examples", "40", "--max-time", "15", "--seed", "1", "--request-timeout", "10",
             "--exclude-path", "/v1/stream", "--exclude-path", "/v1/events"],  # event streams never end: not fuzzable
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "No issues found" in output
    # Every operation schemathesis counts was selected but the two excluded, the event streams (its total is the
    # schema's operations, give or take the one it does not fuzz: /openapi.json, the document itself).
    counted = re.search(r"(\d+) selected / (\d+) total", output)
    assert counted, output[-2000:]
    selected, total = int(counted.group(1)), int(counted.group(2))
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    operations = [(path, m) for path, item in schema["paths"].items() for m in item if m in methods]
    assert ("/v1/stream", "get") in operations
    assert ("/v1/events", "get") in operations
    assert selected == total - 2 and len(operations) - 1 <= total <= len(operations), (selected, total, operations)
