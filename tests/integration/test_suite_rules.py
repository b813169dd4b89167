"""The suite's rules (tests/suite_rules.py) proven on throwaway test files run by a child pytest.

Each case writes a small test file to a temporary directory and runs ``python -m pytest -p tests.suite_rules``
on it from the checkout, with CI set or unset, and reads the child's verdict: its exit code and its summary.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from tests.conftest import require_binary, require_root

REPO = Path(__file__).resolve().parents[2]


def run_pytest(tmp_path: Path, body: str, *, ci: bool, unit: bool = False) -> subprocess.CompletedProcess[str]:
    test = tmp_path / "test_throwaway.py"
    test.write_text(textwrap.dedent(body))
    env = {k: v for k, v in os.environ.items() if k != "CI" and not k.startswith("PYTEST_")}
    if ci:
        env["CI"] = "true"
    if unit:
        env["HYPERMESH_TEST_UNIT_DIR"] = str(tmp_path)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.suite_rules", "-q", "-rA", "--rootdir", str(tmp_path),
         "-c", os.devnull, "-p", "no:cacheprovider", str(test)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


SKIPS = {
    "skipif": """
        import pytest

        @pytest.mark.skipif(True, reason="not on this machine")
        def test_skipped():
            assert False
    """,
    "skip-call": """
        import pytest

        def test_skipped():
            pytest.skip("not on this machine")
    """,
    "skip-fixture": """
        import pytest

        @pytest.fixture
        def thing():
            pytest.skip("not on this machine")

        def test_skipped(thing):
            assert False
    """,
    "importorskip": """
        import pytest

        def test_skipped():
            pytest.importorskip("hypermesh_no_such_module")
    """,
    "importorskip-module": """
        import pytest

        pytest.importorskip("hypermesh_no_such_module")

        def test_skipped():
            assert False
    """,
}


@pytest.mark.parametrize("kind", sorted(SKIPS))
def test_a_skip_fails_under_ci_and_names_the_test(tmp_path: Path, kind: str) -> None:
    quiet = run_pytest(tmp_path, SKIPS[kind], ci=False)
    # A module skipped whole leaves no test collected: pytest's exit code 5, not a failure.
    assert quiet.returncode == (5 if kind == "importorskip-module" else 0), quiet.stdout + quiet.stderr
    assert "1 skipped" in quiet.stdout and "failed" not in quiet.stdout and "error" not in quiet.stdout

    ci = run_pytest(tmp_path, SKIPS[kind], ci=True)
    # 1: a test failed; 2: collection failed (the module-level skip), which stops the run just the same.
    assert ci.returncode == (2 if kind == "importorskip-module" else 1), ci.stdout + ci.stderr
    assert "skipped" not in ci.stdout.splitlines()[-1]  # the summary line counts no skip
    assert "nothing may skip" in ci.stdout
    assert "not on this machine" in ci.stdout or "hypermesh_no_such_module" in ci.stdout
    assert "test_throwaway.py" in ci.stdout  # the failure names the file (and the test where there is one)
    if kind != "importorskip-module":
        assert "test_throwaway.py::test_skipped" in ci.stdout


def test_xfail_is_left_as_it_is_under_ci(tmp_path: Path) -> None:
    body = """
        import pytest

        @pytest.mark.xfail(reason="known", strict=True)
        def test_known():
            assert False
    """
    ci = run_pytest(tmp_path, body, ci=True)
    assert ci.returncode == 0, ci.stdout
    assert "1 xfailed" in ci.stdout


def test_a_passing_test_stays_passing_under_ci(tmp_path: Path) -> None:
    ci = run_pytest(tmp_path, "def test_fine():\n    assert 1 + 1 == 2\n", ci=True)
    assert ci.returncode == 0 and "1 passed" in ci.stdout, ci.stdout


NETNS_TEST = """
    import subprocess
    {marks}
    def test_makes_a_namespace():
        subprocess.run(["ip", "netns", "add", "{name}"], check=True)
        subprocess.run(["ip", "netns", "del", "{name}"], check=True)
"""


@pytest.mark.netns
@pytest.mark.root
def test_a_test_that_creates_a_namespace_without_its_marker_fails(tmp_path: Path) -> None:
    require_root()
    require_binary("ip")
    name = f"hm-rules-{uuid.uuid4().hex[:8]}"
    unmarked = run_pytest(tmp_path, NETNS_TEST.format(marks="", name=name), ci=False)
    assert unmarked.returncode == 1, unmarked.stdout
    assert "missing marker(s) netns, root" in unmarked.stdout and f"ip netns add {name}" in unmarked.stdout
    assert "test_throwaway.py::test_makes_a_namespace" in unmarked.stdout

    half = "import pytest\n    @pytest.mark.netns"  # netns without root: still one marker short
    unrooted = run_pytest(tmp_path, NETNS_TEST.format(marks=half, name=name), ci=False)
    assert unrooted.returncode == 1 and "missing marker(s) root" in unrooted.stdout, unrooted.stdout

    marks = "import pytest\n    @pytest.mark.netns\n    @pytest.mark.root"
    marked = run_pytest(tmp_path, NETNS_TEST.format(marks=marks, name=name), ci=False)
    assert marked.returncode == 0 and "1 passed" in marked.stdout, marked.stdout
    assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


EBPF_TEST = """
    import hypermesh.ebpf
    {marks}
    def test_loads_a_program():
        with hypermesh.ebpf.load("syscalls") as program:
            assert program is not None
"""


@pytest.mark.ebpf
@pytest.mark.root
def test_a_test_that_loads_a_bpf_program_without_its_marker_fails(tmp_path: Path) -> None:
    require_root()
    unmarked = run_pytest(tmp_path, EBPF_TEST.format(marks=""), ci=True)
    assert unmarked.returncode == 1, unmarked.stdout
    assert "missing marker(s) ebpf, root" in unmarked.stdout
    # load() probes the program type first (itself a load into the kernel), then loads the object.
    assert "libbpf_probe_bpf_prog_type()" in unmarked.stdout or "bpf_object__load()" in unmarked.stdout

    marks = "import pytest\n    @pytest.mark.ebpf\n    @pytest.mark.root"
    marked = run_pytest(tmp_path, EBPF_TEST.format(marks=marks), ci=True)
    assert marked.returncode == 0 and "1 passed" in marked.stdout, marked.stdout


def test_an_unknown_marker_fails_collection(tmp_path: Path) -> None:
    body = """
        import pytest

        @pytest.mark.netnss
        def test_typo():
            pass
    """
    test = tmp_path / "test_throwaway.py"
    test.write_text(textwrap.dedent(body))
    # The project's own configuration (strict markers), as `make test` runs it.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(REPO / "pyproject.toml"),
         "--rootdir", str(REPO), str(test)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and "'netnss' not found in `markers`" in result.stdout, result.stdout


LIVE_UNIT_TESTS = {
    "proc": "def test_reads_the_kernel():\n    assert open('/proc/loadavg').read()\n",
    "sys": "import os\ndef test_reads_sysfs():\n    os.close(os.open('/sys/kernel/uevent_seqnum', os.O_RDONLY))\n",
    "spawn": "import subprocess\ndef test_spawns():\n    subprocess.run(['true'], check=True)\n",
}


@pytest.mark.parametrize("kind", sorted(LIVE_UNIT_TESTS))
def test_a_unit_test_that_touches_the_live_system_fails(tmp_path: Path, kind: str) -> None:
    as_unit = run_pytest(tmp_path, LIVE_UNIT_TESTS[kind], ci=False, unit=True)
    assert as_unit.returncode == 1, as_unit.stdout
    assert "a unit test touches the live system" in as_unit.stdout and "move it to tests/integration" in as_unit.stdout
    # The same file outside tests/unit is an integration test and passes.
    elsewhere = run_pytest(tmp_path, LIVE_UNIT_TESTS[kind], ci=False)
    assert elsewhere.returncode == 0 and "1 passed" in elsewhere.stdout, elsewhere.stdout


def test_a_pure_unit_test_passes_under_the_unit_rule(tmp_path: Path) -> None:
    body = "import json\ndef test_pure(tmp_path):\n    (tmp_path / 'x').write_text('[1]')\n    assert json.loads((tmp_path / 'x').read_text()) == [1]\n"
    assert run_pytest(tmp_path, body, ci=True, unit=True).returncode == 0
