"""schemathesis fuzzes the running agent from its own /openapi.json: no 5xx, responses match the schema."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from tests.conftest import require
from tests.fixtures.agent.agent_process import AgentProcess
from tests.integration.cluster_support import Etcd

pytestmark = pytest.mark.slow


# A schema-valid allocation request the agent may still answer 422: what JSON Schema cannot say across fields or
# kinds (a unit the kind does not take, "0" as a string, enforce without pid, a pid that is not running, a kind
# with several assets and no asset named). schemathesis's default for valid data leaves 422 out, and on a long run it
# warns that this operation "mostly rejected" what it generated: the same fact, so that one warning is not shown here.
CONFIG = """
[[operations]]
include-name = "POST /v1/allocations"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
warnings = [WARNINGS_BUT_VALIDATION_MISMATCH]

# Label names follow propertyNames in the schema, which the fuzzer's generator does not honour.
[[operations]]
include-name = "PUT /v1/config"
checks.positive_data_acceptance.expected-statuses = ["2xx", "401", "403", "422"]
"""
# A grant's id exists only once a POST made it: coverage and fuzzing meet only 404s there ("missing test data"), the
# stateful run follows the POST -> DELETE link with real ids and keeps the warning.
WITHOUT_IDS = """
[[operations]]
include-name = "DELETE /v1/allocations/{id}"
warnings = [WARNINGS_BUT_MISSING_TEST_DATA]
"""
EXCLUDED = (
    # event streams never end: not fuzzable; a CPU profile runs seconds each (tests/e2e/test_dashboard_profile.py)
    # and its flame graphs exist only after one (a steady 404 is a warning): both driven by that test instead
    "--exclude-path", "/v1/stream", "--exclude-path", "/v1/events", "--exclude-operation-id", "cpuProfile",
    "--exclude-path", "/v1/cpu-profile/{id}.svg",
)  # fmt: skip


def _warnings_but(left_out: str) -> str:
    from schemathesis.core.warnings import SchemathesisWarning

    return ", ".join(f'"{w.value}"' for w in SchemathesisWarning if w.value not in (left_out, "low_valid_rate"))


def _schemathesis(binary: str, url: str, where: Path, phases: str, config: str) -> str:
    """One schemathesis run of ``phases`` against the agent at ``url``; its output, asserted clean.

    Each run has its own time: one shared --max-time let a slow machine spend it in the coverage phase (11 of 15 s
    under load), the stateful phase then ran no scenario, and the DELETE's 404s became a warning."""
    where.mkdir()
    (where / "schemathesis.toml").write_text(config)
    result = subprocess.run(
        [binary, "run", f"{url}/openapi.json", "--checks", "all", "--phases", phases, "--max-examples", "40",
         "--max-time", "15", "--seed", "1", "--request-timeout", "10", *EXCLUDED],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "No issues found" in output, output[-4000:]
    return output


def test_schemathesis_finds_no_server_errors_and_no_schema_violations(tmp_path):
    binary = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    require(Path(binary).exists(), "schemathesis is not installed: make venv")
    config = CONFIG.replace("WARNINGS_BUT_VALIDATION_MISMATCH", _warnings_but("validation_mismatch"))
    # its own ledger: the fuzzer's grants (bound to pids such as 1) never reach the host's; registered in a real etcd,
    # so /v1/cluster answers too (without one it is a 404 on every call, which schemathesis reports as a warning)
    etcd = Etcd(tmp_path).start()
    with contextlib.ExitStack() as stack:
        stack.callback(etcd.stop)
        agent = stack.enter_context(
            AgentProcess("--interval", "0.5", "--state-dir", str(tmp_path / "state"), "--etcd", etcd.url)
        )
        schema = httpx.get(f"{agent.url}/openapi.json", timeout=10).json()
        without_ids = WITHOUT_IDS.replace("WARNINGS_BUT_MISSING_TEST_DATA", _warnings_but("missing_test_data"))
        output = _schemathesis(binary, agent.url, tmp_path / "generated", "coverage,fuzzing", config + without_ids)
        stateful = _schemathesis(binary, agent.url, tmp_path / "stateful", "stateful", config)
        # Release what the fuzzer was granted (an enforced grant leaves its cgroup until released).
        for grant in httpx.get(f"{agent.url}/v1/allocations", timeout=10).json():
            assert httpx.delete(f"{agent.url}/v1/allocations/{quote(grant['id'], safe='')}", timeout=10).is_success
    # The stateful phase followed the POST -> DELETE link with real ids (else every DELETE is a 404, a warning).
    scenarios = re.search(r"Scenarios:\s+(\d+)", stateful)
    assert scenarios and int(scenarios.group(1)) > 0, stateful[-3000:]
    # Every operation schemathesis counts was selected but the four excluded, the event streams and the profile's (its total is the
    # schema's operations, give or take the one it does not fuzz: /openapi.json, the document itself).
    counted = re.search(r"(\d+) selected / (\d+) total", output)
    assert counted, output[-2000:]
    selected, total = int(counted.group(1)), int(counted.group(2))
    methods = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
    operations = [(path, m) for path, item in schema["paths"].items() for m in item if m in methods]
    assert ("/v1/stream", "get") in operations
    assert ("/v1/events", "get") in operations
    assert selected == total - 4 and len(operations) - 1 <= total <= len(operations), (selected, total, operations)
