"""What the agent says when it starts, and what it tells clients it has not authenticated: warnings for settings that
work but expose the machine, TLS file errors that name the real problem, /healthz under auth, slash redirects."""

from __future__ import annotations

import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import bcrypt
import httpx
import pytest

import hypermesh
from hypermesh.agent.config import AgentConfig, reaches_beyond_loopback, startup_warnings
from tests.conftest import require_binary, require_root
from tests.fixtures.agent.agent_process import AgentProcess, wait_until
from tests.integration.test_agent_security import _one_line_error, self_signed

PASSWORD = "the scraper's password"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hypermesh.cli.main", *args], capture_output=True, text=True, timeout=30
    )


def warnings_before_serving(process: AgentProcess) -> list[str]:
    """The agent's stderr lines up to its 'serving' line."""
    lines = process.log().splitlines()
    end = next(i for i, line in enumerate(lines) if "serving" in line)
    return lines[:end]


@pytest.fixture(scope="module")
def rsa_pair(tmp_path_factory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("rsa"), "agent", "-subj", "/CN=127.0.0.1")


# ------------------------------------------------------------------------------------- warnings


@pytest.mark.parametrize(
    ("host", "beyond"),
    [
        ("127.0.0.1", False),
        ("127.1.2.3", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("::", True),
        ("192.0.2.7", True),
        ("fe80::1%lo", True),
    ],
)
def test_what_counts_as_beyond_loopback(host, beyond):
    assert reaches_beyond_loopback(host) is beyond


def test_the_start_up_warnings_of_a_config():
    quiet = startup_warnings(AgentConfig(host="127.0.0.1", port=0))
    assert quiet == []
    [open_warning] = startup_warnings(AgentConfig(host="0.0.0.0", port=0))
    assert "neither basic auth nor TLS" in open_warning and "0.0.0.0" in open_warning
    # Either one quiets it (basic auth alone gets its own warning about clear-text passwords).
    assert startup_warnings(AgentConfig(host="0.0.0.0", port=0, tls_cert_file="/nonexistent")) == []
    [clear_text] = startup_warnings(AgentConfig(host="0.0.0.0", port=0, basic_auth_users={"p": HASH}))
    assert "clear text" in clear_text


@pytest.mark.root
@pytest.mark.netns
def test_listening_beyond_loopback_without_auth_or_tls_warns_once_at_start():
    require_root()
    # In a network namespace of its own, where only lo exists: 0.0.0.0 there reaches nobody.
    unshare = require_binary("unshare")
    with AgentProcess("--listen", "0.0.0.0:0", prefix=[unshare, "--net"]) as process:
        [warning] = warnings_before_serving(process)
    assert warning.startswith("hypermesh: warning: listening on 0.0.0.0 (beyond loopback) with neither basic auth")
    with AgentProcess("--listen", "127.0.0.1:0") as process:  # the default stays quiet
        assert warnings_before_serving(process) == []


def test_a_world_readable_private_key_warns_once_at_start(tmp_path, rsa_pair):
    cert, key = rsa_pair
    readable = tmp_path / "readable.key"
    readable.write_bytes(key.read_bytes())
    readable.chmod(0o644)
    assert stat.S_IMODE(key.stat().st_mode) & stat.S_IROTH == 0  # openssl writes keys 0600: the control
    config = tmp_path / "agent.toml"
    config.write_text(f"[tls_server_config]\ncert_file = '{cert}'\nkey_file = '{key}'\n")
    with AgentProcess("--config", str(config)) as process:
        assert warnings_before_serving(process) == []
    config.write_text(f"[tls_server_config]\ncert_file = '{cert}'\nkey_file = '{readable}'\n")
    with AgentProcess("--config", str(config)) as process:
        [warning] = warnings_before_serving(process)
    assert warning == (
        f"hypermesh: warning: the TLS private key {readable} is readable by every user (mode 0644); chmod o-r {readable}"
    )


def test_an_empty_basic_auth_table_warns_that_it_asks_no_password(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text("[basic_auth_users]\n")  # today silently: no authentication at all
    with AgentProcess("--config", str(config)) as process:
        [warning] = warnings_before_serving(process)
        # The warning tells the truth: no password is asked.
        assert httpx.get(f"{process.url}/v1/sample", timeout=10).status_code in (200, 503)
    assert warning.startswith(f"hypermesh: warning: config {config}: basic_auth_users is empty, so no password")


def test_a_config_error_is_one_line_without_warnings_first(tmp_path):
    # A world-readable junk key is refused (exit 2, one line), not warned about and then refused.
    (tmp_path / "agent.key").write_text("not a key\n")
    (tmp_path / "agent.key").chmod(0o644)
    (tmp_path / "agent.crt").write_text("not a certificate\n")
    config = tmp_path / "agent.toml"
    config.write_text("listen = '0.0.0.0:0'\n[tls_server_config]\ncert_file = 'agent.crt'\nkey_file = 'agent.key'\n")
    result = run_cli("agent", "--config", str(config))
    assert result.returncode == 2
    assert "agent.crt" in _one_line_error(result)


# ------------------------------------------------------------------------------------ TLS files


@pytest.mark.parametrize(
    "algorithm", [["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"], ["-algorithm", "ed25519"]]
)
def test_a_key_of_another_type_than_the_certificate_does_not_match(tmp_path, rsa_pair, algorithm):
    # Was "is not a PEM private key (NO_CERTIFICATE_ASSIGNED)": the key is a fine key, for another certificate.
    openssl = require_binary("openssl")
    cert, _ = rsa_pair
    key = tmp_path / "other-type.key"
    subprocess.run([openssl, "genpkey", *algorithm, "-out", str(key)], check=True, capture_output=True, timeout=60)
    config = tmp_path / "agent.toml"
    config.write_text(f"listen = '127.0.0.1:0'\n[tls_server_config]\ncert_file = '{cert}'\nkey_file = '{key}'\n")
    result = run_cli("agent", "--config", str(config))
    assert result.returncode == 2
    line = _one_line_error(result)
    assert f"tls_server_config.key_file: {key} does not match the certificate in cert_file {cert}" in line, line
    assert "another type" in line


@pytest.mark.parametrize("key", ["cert_file", "key_file"])
def test_a_tls_path_in_a_symlink_loop_says_so(tmp_path, rsa_pair, key):
    # Was "file ... does not exist": os.path.exists() is False for a loop as for a missing file.
    os.symlink("loop-b", tmp_path / "loop-a")
    os.symlink("loop-a", tmp_path / "loop-b")
    files = {"cert_file": str(rsa_pair[0]), "key_file": str(rsa_pair[1]), key: "loop-a"}
    config = tmp_path / "agent.toml"
    config.write_text(f"[tls_server_config]\ncert_file = '{files['cert_file']}'\nkey_file = '{files['key_file']}'\n")
    result = run_cli("agent", "--config", str(config))
    assert result.returncode == 2
    line = _one_line_error(result)
    assert f"tls_server_config.{key}: {tmp_path / 'loop-a'} is a symbolic link loop" in line, line
    with pytest.raises(OSError, match="Too many levels of symbolic links"):  # what the kernel says: ELOOP
        (tmp_path / "loop-a").stat()


# --------------------------------------------------------------------------------------- /healthz


@pytest.fixture(scope="module")
def auth_agent(tmp_path_factory):
    config = tmp_path_factory.mktemp("auth") / "agent.toml"
    config.write_text(f"[basic_auth_users]\nprometheus = '{HASH}'\n")
    with AgentProcess("--config", str(config), "--interval", "0.2") as process:
        assert wait_until(lambda: httpx.get(f"{process.url}/healthz", timeout=5).json()["last_sample_age_s"], 10)
        yield process


def test_healthz_under_auth_tells_an_anonymous_client_only_whether_the_agent_is_well(auth_agent):
    url = f"{auth_agent.url}/healthz"
    anonymous = httpx.get(url, timeout=10)
    assert anonymous.status_code == 200
    # Was version, uptime_s, samples_taken and sampler_error too, while docs/agent.md said it reveals nothing.
    assert anonymous.json().keys() == {"status", "last_sample_age_s"}
    assert anonymous.json()["status"] == "ok"
    assert hypermesh.__version__ not in anonymous.text
    wrong = httpx.get(url, auth=("prometheus", "wrong"), timeout=10)
    assert wrong.json().keys() == {"status", "last_sample_age_s"}
    # An authenticated client (its credentials verified by a request the guard checked) still sees it all.
    assert httpx.get(f"{auth_agent.url}/metrics", auth=("prometheus", PASSWORD), timeout=10).status_code == 200
    full = httpx.get(url, auth=("prometheus", PASSWORD), timeout=10).json()
    assert full["version"] == hypermesh.__version__
    assert full["uptime_s"] > 0 and full["samples_taken"] >= 1 and full["sampler_error"] is None


def test_healthz_without_auth_keeps_its_whole_body():
    with AgentProcess("--interval", "0.2") as process:
        body = httpx.get(f"{process.url}/healthz", timeout=10).json()
    assert body.keys() == {
        "status", "version", "uptime_s", "samples_taken", "last_sample_age_s", "sampler_error",
        "config_generation", "config_hash", "samples_since_config",
    }  # fmt: skip
    assert body["version"] == hypermesh.__version__


# ----------------------------------------------------------------------------------- redirects


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/metrics/", "/metrics"),
        ("/v1/samples/?limit=1", "/v1/samples?limit=1"),
        ("/metrics//", "/metrics"),
        ("/static", "/static/"),
    ],
)
def test_a_slash_redirect_stays_on_the_host_the_client_reached(auth_agent, path, location):
    # Was "location: http://evil.example/metrics": Starlette built it from the request's Host header.
    auth = ("prometheus", PASSWORD)
    response = httpx.get(f"{auth_agent.url}{path}", headers={"host": "evil.example"}, auth=auth, timeout=10)
    assert response.status_code == 307
    assert response.headers["location"] == location
    if location != "/static/":
        followed = httpx.get(f"{auth_agent.url}{path}", auth=auth, follow_redirects=True, timeout=10)
        assert followed.status_code == 200 and str(followed.url) == f"{auth_agent.url}{location}"


@pytest.mark.parametrize("path", ["//metrics/", "/nowhere/", "//evil.example/"])
def test_paths_with_no_slash_twin_are_404_not_redirects(auth_agent, path):
    response = httpx.get(f"{auth_agent.url}{path}", auth=("prometheus", PASSWORD), timeout=10)
    assert response.status_code == 404
    assert "location" not in response.headers


# ----------------------------------------------------------------------------- addresses that cannot be bound


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "HYPERMESH_VIA_MAKE"}
    return {**env, **extra}


def _agent_error(*args: str, env: dict[str, str]) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-m", "hypermesh.cli.main", "agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return result.returncode, _one_line_error(result)


def test_a_port_another_program_holds_names_the_fix():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        code, line = _agent_error("--listen", f"127.0.0.1:{port}", env=_cli_env())
        code_make, line_make = _agent_error("--listen", f"127.0.0.1:{port}", env=_cli_env(HYPERMESH_VIA_MAKE="1"))
    assert code == code_make == 1  # documented: 1 runtime error (e.g. the port is already in use)
    assert line == (
        f"hypermesh: error: 127.0.0.1:{port} is already in use by another program: "
        "stop it or use --listen 127.0.0.1:0 (any free port)"
    )
    assert line_make.endswith("stop it or use `make run LISTEN=127.0.0.1:0` (any free port)"), line_make


def test_a_second_agent_on_a_busy_port_says_another_agent_serves_it():
    with AgentProcess("--interval", "1") as first:
        port = first.url.rsplit(":", 1)[1].strip("/")
        code, line = _agent_error("--listen", f"127.0.0.1:{port}", env=_cli_env(HYPERMESH_VIA_MAKE="1"))
        code_cli, line_cli = _agent_error("--listen", f"127.0.0.1:{port}", env=_cli_env())
    assert code == code_cli == 1
    assert line == (
        f"hypermesh: error: another agent already serves 127.0.0.1:{port}: "
        "stop it or use `make run LISTEN=127.0.0.1:0` (any free port)"
    )
    assert line_cli.endswith("stop it or use --listen 127.0.0.1:0 (any free port)"), line_cli


def test_a_second_agent_on_a_tls_agents_port_says_another_agent_serves_it(tmp_path):
    # A self-signed certificate for another name: the probe recognises the agent without trusting it.
    cert, key = self_signed(tmp_path, "other", "-subj", "/CN=agent.invalid")
    config = tmp_path / "agent.toml"
    hashed = bcrypt.hashpw(b"a password", bcrypt.gensalt(rounds=4)).decode()
    config.write_text(
        f'[tls_server_config]\ncert_file = "{cert}"\nkey_file = "{key}"\n\n[basic_auth_users]\nprometheus = "{hashed}"\n'
    )
    with AgentProcess("--config", str(config), "--interval", "1", "--access-log") as first:
        assert first.url.startswith("https://127.0.0.1:")
        port = first.url.rsplit(":", 1)[1].strip("/")
        code, line = _agent_error("--listen", f"127.0.0.1:{port}", env=_cli_env())
        probed = wait_until(lambda: "/healthz" in first.log(), 5)
        log = first.log()
    assert code == 1
    assert line == (
        f"hypermesh: error: another agent already serves 127.0.0.1:{port}: "
        "stop it or use --listen 127.0.0.1:0 (any free port)"
    )
    assert probed, log
    assert "401" not in log  # the probe asked /healthz, which needs no credentials, and sent none


def _host_addresses() -> set[str]:
    """This host's addresses as ip(8) lists them: the independent source."""
    require_binary("ip")
    out = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines()}


@pytest.mark.parametrize(("listen", "every"), [("192.0.2.254:0", "0.0.0.0"), ("[2001:db8::77]:0", "::")])
def test_an_address_this_host_does_not_have_names_the_ones_it_has(listen, every):
    host = listen.rpartition(":")[0].strip("[]")
    assert host not in _host_addresses()  # TEST-NET / documentation addresses: on no interface here
    code, line = _agent_error("--listen", listen, env=_cli_env())
    assert code == 2  # bad input, as an unresolvable name is
    assert line.startswith(f"hypermesh: error: --listen {listen}: {host} is not an address of this host"), line
    assert "127.0.0.1" in line and f"or {every} for all" in line
    listed = line.split("its addresses: ", 1)[1]
    for address in _host_addresses() - {host}:
        if not address.startswith("fe80:"):  # link-local ones are listed with their %interface scope
            assert address in listed, (address, listed)


# ------------------------------------------------------------------------------------- Ctrl-C during the start


def _until_ctrl_c_is_held(proc: subprocess.Popen[str]) -> list[str]:
    """Read the child's ``-X importtime`` lines until the import of ``hypermesh.cli.hold_ctrl_c`` has completed: from
    then on Ctrl-C is held (the module holds it as it is imported). Before that Python itself handles SIGINT (the
    process dies of it, or prints a traceback), which no code of the CLI can change. Returns what was read. Reads
    the descriptor itself: a buffered reader may hold the line while poll() says there is nothing more."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    ready = select.poll()
    ready.register(fd, select.POLLIN)
    deadline = time.monotonic() + 30
    read = b""
    while time.monotonic() < deadline:
        if not ready.poll(1000):
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        read += chunk
        if b" hypermesh.cli.hold_ctrl_c\n" in read:
            return read.decode().splitlines(keepends=True)
    raise AssertionError(f"the CLI never imported hypermesh.cli.hold_ctrl_c: {read.decode()[-2000:]}")


def ctrl_c_after_the_hold(args: list[str], delay: float) -> tuple[int, str, str]:
    """Start ``python -m hypermesh.cli.main ARGS``, wait until Ctrl-C is held, send SIGINT ``delay`` s later: (exit
    code, stdout, stderr without the import-time lines); never leaves the process behind."""
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "hypermesh.cli.main", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        before = _until_ctrl_c_is_held(proc)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    said = [line for line in ("".join(before) + err).splitlines(keepends=True) if not line.startswith("import time:")]
    return proc.returncode, out, "".join(said)


def test_ctrl_c_at_any_moment_of_the_agent_start_exits_0_quietly():
    """Was exit 130 with a traceback in the first quarter second (imports, config, bind). Each run waits until the
    CLI's first module has been imported (Ctrl-C held from there on), then sends SIGINT after 0, 20, 50 or 100 ms
    (the first 100 ms of the CLI), 250 or 500 ms (web stack, bind). It once waited for a CPU time measured on
    another run instead, and CI's slower start met the signal before Python's own handler was in place (-2). Then a
    KeyboardInterrupt raised inside an import's weakref callback was dropped and the agent kept serving (CI: killed
    after 20 s); the agent now keeps Ctrl-C held until its own stop handler takes it over."""
    for delay in (0.0, 0.02, 0.05, 0.1, 0.25, 0.5):
        code, out, err = ctrl_c_after_the_hold(["agent", "--listen", "127.0.0.1:0"], delay)
        assert code == 0, (delay, err[-3000:])
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, (delay, err[-3000:])
        assert out == ""
        said = [line for line in err.splitlines() if "serving" not in line]
        assert said == [], (delay, said)
