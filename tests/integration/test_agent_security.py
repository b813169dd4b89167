"""TLS, basic auth, the in-flight cap, timeouts and config errors of the real agent on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import http.client
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import bcrypt
import httpx
import pytest

from hypermesh.agent.guards import Stats
from hypermesh.agent.security import Credentials, Guard
from tests.conftest import require_binary
from tests.fixtures.agent.agent_process import AgentProcess

PASSWORD = "correct horse battery staple"
# Cost 4 keeps the test fast; the agent accepts any bcrypt cost from 4 to 31.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hypermesh.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def self_signed(directory: Path, name: str, *subject: str) -> tuple[Path, Path]:
    """A fresh self-signed certificate and its key from openssl: ``openssl req -x509`` with ``subject`` options."""
    openssl = require_binary("openssl")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *subject,
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    return self_signed(directory, "agent", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1")


@pytest.fixture(scope="module")
def secured_agent(tmp_path_factory, tls_files):
    cert, key = tls_files
    config = tmp_path_factory.mktemp("config") / "agent.toml"
    config.write_text(
        f'[tls_server_config]\ncert_file = "{cert}"\nkey_file = "{key}"\n\n[basic_auth_users]\nprometheus = "{HASH}"\n'
    )
    with AgentProcess("--config", str(config), "--interval", "0.5", "--access-log") as process:
        assert process.url.startswith("https://127.0.0.1:")
        yield process, ssl.create_default_context(cafile=str(cert))


# ----------------------------------------------------------------------------------- auth and TLS


@pytest.mark.parametrize(
    ("auth", "status"),
    [(None, 401), (("prometheus", "wrong"), 401), (("nobody", PASSWORD), 401), (("prometheus", PASSWORD), 200)],
)
def test_basic_auth_matrix_over_tls(secured_agent, auth, status):
    process, context = secured_agent
    response = httpx.get(f"{process.url}/metrics", verify=context, auth=auth, timeout=10)
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"] == 'Basic realm="hypermesh"'
    else:
        assert "hypermesh_cpu_seconds_total" in response.text


def test_malformed_authorization_headers_are_401(secured_agent):
    process, context = secured_agent
    for header in ("Basic !!!notbase64", "Bearer abc", "Basic " + "cHJvbWV0aGV1cw==", ""):
        response = httpx.get(f"{process.url}/v1/sample", verify=context, headers={"authorization": header}, timeout=10)
        assert response.status_code == 401, header


def test_healthz_is_open_without_credentials(secured_agent):
    process, context = secured_agent
    assert httpx.get(f"{process.url}/healthz", verify=context, timeout=10).status_code == 200


def test_plain_http_to_the_tls_port_fails_fast(secured_agent):
    process, _ = secured_agent
    url = process.url.replace("https://", "http://")
    start = time.monotonic()
    try:
        response = httpx.get(f"{url}/metrics", timeout=5)
    except httpx.HTTPError:
        pass  # the TLS server hangs up on a non-TLS client: also a refusal
    else:
        assert response.status_code >= 400
    assert time.monotonic() - start < 5


def test_an_untrusted_client_cannot_complete_the_handshake(secured_agent):
    process, _ = secured_agent
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{process.url}/healthz", timeout=5)  # default trust store does not know our cert


def test_secrets_never_reach_the_log(secured_agent):
    process, context = secured_agent
    httpx.get(f"{process.url}/metrics", verify=context, auth=("prometheus", PASSWORD), timeout=10)
    httpx.get(f"{process.url}/metrics", verify=context, auth=("prometheus", "wrong-secret"), timeout=10)
    time.sleep(0.2)
    log = process.log()
    assert '"GET /metrics HTTP/1.1" 200' in log  # the access log is on and shows requests...
    for secret in (PASSWORD, "wrong-secret", HASH, "Basic "):
        assert secret not in log  # ...but never a credential


def test_hash_password_prints_a_hash_that_verifies():
    result = run_cli("agent", "--hash-password", stdin="s3cret phrase\n")
    assert result.returncode == 0, result.stderr
    hashed = result.stdout.strip()
    assert bcrypt.checkpw(b"s3cret phrase", hashed.encode())
    assert not bcrypt.checkpw(b"s3cret phrasE", hashed.encode())


# --------------------------------------------------------------------------------------- limits


def test_stream_cap_answers_503_at_once_and_leaves_scrapes_and_healthz_alone():
    with (
        AgentProcess("--interval", "0.2", "--max-in-flight", "2", "--max-streams", "2") as process,
        httpx.Client(timeout=10) as client,
    ):
        with client.stream("GET", f"{process.url}/v1/stream"), client.stream("GET", f"{process.url}/v1/stream"):
            start = time.monotonic()
            refused = httpx.get(f"{process.url}/v1/stream", timeout=5)
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "1"
            assert time.monotonic() - start < 2  # at once, not after a queue
            # Two open streams fill their own lane only: health checks and scrapes are still served.
            assert httpx.get(f"{process.url}/healthz", timeout=5).status_code == 200
            assert httpx.get(f"{process.url}/v1/profile", timeout=5).status_code == 200
            response = httpx.get(f"{process.url}/metrics", timeout=5)
            assert response.status_code == 200
        assert 'hypermesh_agent_http_rejected_total{reason="in_flight"} 1.0' in response.text
        # Both streams closed: a new one is accepted again.
        deadline = time.monotonic() + 5
        while True:
            with client.stream("GET", f"{process.url}/v1/stream") as stream:
                if stream.status_code == 200:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.1)


def _flood(url: str, context: ssl.SSLContext | None, attack: Callable[[], None], clients: int) -> collections.Counter:
    """Runs ``attack`` in ``clients`` threads (bounded by FLOOD_S) while a scraper polls /metrics and /healthz."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    scraper: collections.Counter = collections.Counter()
    threads = [threading.Thread(target=attack, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)  # the flood is under way
        connection = (
            http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
            if context
            else http.client.HTTPConnection(host, int(port), timeout=10)
        )
        auth = {"Authorization": "Basic " + base64.b64encode(f"prometheus:{PASSWORD}".encode()).decode()}
        end = time.monotonic() + FLOOD_S - 1.0
        while time.monotonic() < end:
            for path in ("/metrics", "/healthz"):
                connection.request("GET", path, headers=auth if context else {})
                response = connection.getresponse()
                response.read()
                scraper[(path, response.status)] += 1
            time.sleep(0.1)
        connection.close()
    finally:
        for thread in threads:
            thread.join(15)
    return scraper


FLOOD_S = 4.0
# Cost 10 (~50 ms a check): guessing passwords is real work for the agent, as with production hashes.
SLOW_HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()


def test_a_password_guessing_flood_cannot_starve_an_authenticated_scraper(tmp_path, tls_files):
    cert, key = tls_files
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[tls_server_config]\ncert_file = "{cert}"\nkey_file = "{key}"\n\n'
        f'[basic_auth_users]\nprometheus = "{SLOW_HASH}"\n'
    )
    context = ssl.create_default_context(cafile=str(cert))
    attackers: collections.Counter = collections.Counter()
    with AgentProcess("--config", str(config), "--interval", "0.5", "--max-in-flight", "8") as process:
        # Prometheus's credentials are verified once (before the flood) and remembered.
        good = httpx.get(f"{process.url}/metrics", verify=context, auth=("prometheus", PASSWORD), timeout=10)
        assert good.status_code == 200
        host, port = process.url.split("://", 1)[1].rsplit(":", 1)
        stop_at = time.monotonic() + FLOOD_S

        def attack() -> None:
            connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
            try:
                while time.monotonic() < stop_at:
                    guess = base64.b64encode(b"prometheus:" + os.urandom(8).hex().encode()).decode()
                    try:
                        connection.request("GET", "/metrics", headers={"Authorization": "Basic " + guess})
                        response = connection.getresponse()
                        response.read()
                        attackers[response.status] += 1
                    except (OSError, http.client.HTTPException) as exc:
                        attackers[type(exc).__name__] += 1
                        connection.close()  # reconnects on the next request
            finally:
                connection.close()

        scraper = _flood(process.url, context, attack, clients=40)
    assert attackers[503] > 0 and attackers[401] > 0, attackers  # the bcrypt lane was full and did refuse
    assert set(scraper) == {("/metrics", 200), ("/healthz", 200)}, scraper
    assert scraper[("/metrics", 200)] >= 10, scraper


def test_a_stream_and_request_flood_cannot_starve_metrics_or_healthz():
    with AgentProcess("--interval", "0.2", "--max-in-flight", "4", "--max-streams", "4") as process:
        host, port = process.url.split("://", 1)[1].rsplit(":", 1)
        stop_at = time.monotonic() + FLOOD_S
        flood: collections.Counter = collections.Counter()

        def attack() -> None:
            # Holds an event stream open (or is refused), then hammers the API until the end.
            with contextlib.closing(http.client.HTTPConnection(host, int(port), timeout=10)) as connection:
                flood_one(connection)

        def flood_one(connection: http.client.HTTPConnection) -> None:
            connection.request("GET", "/v1/stream")
            response = connection.getresponse()
            flood[("stream", response.status)] += 1
            if response.status != 200:
                response.read()
                while time.monotonic() < stop_at:
                    connection.request("GET", "/v1/profile")
                    answer = connection.getresponse()
                    answer.read()
                    flood[("api", answer.status)] += 1
            else:
                while time.monotonic() < stop_at:
                    response.fp.readline()

        scraper = _flood(process.url, None, attack, clients=40)
    assert flood[("stream", 200)] == 4 and flood[("stream", 503)] == 36, flood
    assert set(scraper) == {("/metrics", 200), ("/healthz", 200)}, scraper
    assert scraper[("/metrics", 200)] >= 10, scraper


def test_a_malformed_chunked_request_gets_400_and_logs_no_traceback():
    with AgentProcess("--interval", "0.5") as process:
        host, port = process.url.removeprefix("http://").rsplit(":", 1)
        for _ in range(3):
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                answer = b""
                while chunk := sock.recv(4096):
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
        assert httpx.get(f"{process.url}/healthz", timeout=5).status_code == 200  # still serving
        time.sleep(0.3)
        log = process.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
    assert "ERROR" not in log, log[-3000:]


def test_every_check_runs_a_dummy_at_each_configured_cost():
    # The timing itself is proven against a real agent in test_agent_login_flood.py.
    cheap = bcrypt.hashpw(b"a", bcrypt.gensalt(rounds=4)).decode()
    dear = bcrypt.hashpw(b"b", bcrypt.gensalt(rounds=6)).decode()
    dummies = Credentials({"cheap": cheap, "dear": dear, "also_cheap": cheap})._dummies
    assert [hashed[:7] for hashed in dummies.values()] == [b"$2b$04$", b"$2b$06$"]


def test_a_handler_that_overruns_the_timeout_gets_503():
    async def slow_app(scope, receive, send):
        await asyncio.sleep(5)

    async def started_app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.3)  # past the timeout, but the response has started: a stream lives on
        await send({"type": "http.response.body", "body": b"done"})

    async def main():
        results = []
        for app in (slow_app, started_app):
            stats = Stats()
            guard = Guard(app, max_in_flight=4, timeout_s=0.1, credentials=Credentials({}), stats=stats)
            transport = httpx.ASGITransport(app=guard)
            async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
                start = time.monotonic()
                response = await client.get("/anything")
                results.append((response.status_code, response.text, time.monotonic() - start, stats))
        return results

    (slow_status, _, slow_elapsed, slow_stats), (ok_status, ok_body, _, _) = asyncio.run(main())
    assert slow_status == 503 and slow_elapsed < 2 and slow_stats.rejected_timeout == 1
    assert slow_stats.in_flight == 0
    assert ok_status == 200 and ok_body == "done"


# ------------------------------------------------------------------------------------ bad input


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hypermesh: error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("content", "key", "problem"),
    [
        ("listne = '127.0.0.1:1'\n", "listne", "unknown key"),
        ("listen = 'nohost'\n", "listen", "HOST:PORT"),
        ("interval = 'fast'\n", "interval", "number of seconds"),
        ("interval = -1\n", "interval", "positive"),
        ("max_in_flight = 0\n", "max_in_flight", "1 or more"),
        ("[basic_auth_users]\nalice = 'plaintext-password'\n", "basic_auth_users.alice", "not a bcrypt hash"),
        ("[tls_server_config]\ncert_file = 'missing.crt'\nkey_file = 'missing.key'\n", "tls_server_config.cert_file", "does not exist"),
        ("[tls_server_config]\ncert_file = '/dev/null'\nkey_file = 'x.key'\n", "tls_server_config.cert_file", "/dev/null is not a regular file"),
        ("[tls_server_config]\ncert_file = 'x'\n[tls_server_config.y]\n", "tls_server_config.y", "unknown key"),
        ("listen = \n", "", "not valid TOML"),
        ("interval = 2e6\n", "interval", "at most"),
        ("interval = 1e-6\n", "interval", "at least 0.001"),
        ("max_streams = 0\n", "max_streams", "1 or more"),
        (f"[basic_auth_users]\nalice = '{HASH[:-1]}!'\n", "basic_auth_users.alice", "not a bcrypt hash"),
        (f"[basic_auth_users]\nalice = '{HASH[:4]}31{HASH[6:]}'\n", "basic_auth_users.alice", "cost 31"),
        # the cluster keys: each names the file and says what to give instead
        ("etcd = 'localhost:2379'\n", "etcd", "give one like http://127.0.0.1:2379"),
        ("etcd = 2379\n", "etcd", "must be a string"),
        ("advertise = 'ftp://10.0.0.5'\n", "advertise", "give one like http://10.0.0.5:9137"),
        ("advertise = 'http://10.0.0.5:99999'\n", "advertise", "bad port; give one like"),
        ("node_id = 'a/b'\n", "node_id", "use 1-128 letters, digits"),
        ("etcd_ttl = 1\n", "etcd_ttl", "2..3600"),
        ("labels = 'gpu'\n", "labels", 'must be a table of name = "value"'),
        ("[labels]\n'rack 1' = 'a'\n", "labels", "1-64 ASCII letters, digits or '_'"),
        ('[labels]\nrack = "a\\u0001"\n', "labels.rack", "none of them control characters"),
        ("state_dir = 'agent.toml'\n", "state_dir", "give a directory for the ledger"),
    ],
)  # fmt: skip
def test_config_errors_name_the_file_the_key_and_the_problem(tmp_path, content, key, problem):
    config = tmp_path / "agent.toml"
    config.write_text(content)
    result = run_cli("agent", "--config", str(config))
    assert result.returncode == 2
    line = _one_line_error(result)
    assert str(config) in line and key in line and problem in line
    assert "plaintext-password" not in result.stderr  # a misplaced secret is not echoed back


def test_missing_config_file(tmp_path):
    result = run_cli("agent", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "nope.toml: no such file" in _one_line_error(result)


def test_config_that_is_not_a_regular_file_is_refused_at_once(tmp_path):
    fifo = tmp_path / "agent.toml"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    for path in (str(fifo), "/dev/zero"):
        result = run_cli("agent", "--config", path)
        assert result.returncode == 2
        assert path in (line := _one_line_error(result)) and "not a regular file" in line


def test_oversized_config_is_refused(tmp_path):
    config = tmp_path / "agent.toml"
    config.write_text("# padding\n" * 200_000)  # 2 MB of comments: valid TOML, but no config is that large
    result = run_cli("agent", "--config", str(config))
    assert result.returncode == 2
    assert "larger than" in _one_line_error(result)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [(b"\xef\xbb\xbfinterval = 1.0\n", "byte order mark"), (b"# caf\xe9\ninterval = 1.0\n", "not UTF-8")],
)
def test_config_encoding_errors_are_one_line(tmp_path, raw, problem):
    config = tmp_path / "agent.toml"
    config.write_bytes(raw)
    result = run_cli("agent", "--config", str(config))
    assert result.returncode == 2
    assert problem in _one_line_error(result)


@pytest.mark.parametrize(("stdin", "problem"), [("x" * 73 + "\n", "73 bytes"), ("\n", "no password")])
def test_hash_password_refuses_what_bcrypt_would_silently_truncate(stdin, problem):
    result = run_cli("agent", "--hash-password", stdin=stdin)
    assert result.returncode == 2
    assert problem in _one_line_error(result)


def test_garbage_certificate_is_a_config_error(tmp_path):
    (tmp_path / "bad.crt").write_text("not a certificate")
    (tmp_path / "bad.key").write_text("not a key")
    config = tmp_path / "agent.toml"
    config.write_text("listen = '127.0.0.1:0'\n[tls_server_config]\ncert_file = 'bad.crt'\nkey_file = 'bad.key'\n")
    result = run_cli("agent", "--config", str(config))
    assert result.returncode == 2
    assert "bad.crt" in _one_line_error(result)


@pytest.fixture(scope="module")
def other_pair(tmp_path_factory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("other"), "other", "-subj", "/CN=other")


JUNK_KEY = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
JUNK_CERT = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    ("cert", "key", "blamed", "problem"),
    [
        ("junk", "key", "cert_file", "is not a PEM certificate"),
        ("junk_cert", "key", "cert_file", "is not a PEM certificate"),
        ("key", "key", "cert_file", "is not a PEM certificate (it holds a private key)"),
        ("cert", "junk", "key_file", "is not a PEM private key"),
        ("cert", "junk_key", "key_file", "is not a PEM private key"),
        ("cert", "cert", "key_file", "is not a PEM private key (it holds a certificate)"),
        ("cert", "other_key", "key_file", "does not match the certificate in cert_file"),
    ],
)
def test_tls_file_errors_name_the_config_key_and_the_problem(
    tmp_path, tls_files, other_pair, cert, key, blamed, problem
):
    # All of these said "TLS certificate/key <cert>, <key>: [SSL] PEM lib (_ssl.c:3926)": not which file, not why.
    (tmp_path / "junk.pem").write_text("not a PEM file at all\n")
    (tmp_path / "junk_key.pem").write_text(JUNK_KEY)
    (tmp_path / "junk_cert.pem").write_text(JUNK_CERT)
    files = {
        "cert": tls_files[0],
        "key": tls_files[1],
        "other_key": other_pair[1],
        "junk": tmp_path / "junk.pem",
        "junk_key": tmp_path / "junk_key.pem",
        "junk_cert": tmp_path / "junk_cert.pem",
    }
    config = tmp_path / "agent.toml"
    config.write_text(
        f"listen = '127.0.0.1:0'\n[tls_server_config]\ncert_file = '{files[cert]}'\nkey_file = '{files[key]}'\n"
    )
    result = run_cli("agent", "--config", str(config))
    assert result.returncode == 2
    line = _one_line_error(result)
    blamed_file = files[cert] if blamed == "cert_file" else files[key]
    assert line.startswith(f"hypermesh: error: config {config}: tls_server_config.{blamed}: {blamed_file} {problem}"), (
        line
    )
    assert "PEM lib" not in line.split(problem, 1)[0]


def test_an_encrypted_key_is_a_one_line_config_error_not_a_passphrase_prompt(tmp_path, tls_files):
    # OpenSSL asked for the passphrase on the controlling terminal: an agent started from a shell hung there, and
    # without a terminal it failed with "[Errno 22] Invalid argument" after printing the prompt twice.
    openssl = require_binary("openssl")
    cert, key = tls_files
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(
        [openssl, "pkey", "-in", str(key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    config = tmp_path / "agent.toml"
    config.write_text(f"listen = '127.0.0.1:0'\n[tls_server_config]\ncert_file = '{cert}'\nkey_file = '{encrypted}'\n")
    result = run_cli("agent", "--config", str(config))  # no terminal
    assert result.returncode == 2
    line = _one_line_error(result)
    assert str(encrypted) in line and "encrypted with a passphrase" in line
    # With a controlling terminal (an operator's shell) it must not sit at a prompt either.
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        os.execv(sys.executable, [sys.executable, "-m", "hypermesh.cli.main", "agent", "--config", str(config)])
    output = b""
    deadline = time.monotonic() + 20
    status = None
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                ready = select.select([fd], [], [], 0.2)[0]
                if ready:
                    output += os.read(fd, 4096)
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status = code
                break
    finally:
        if status is None or not os.WIFEXITED(status):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    assert status is not None and os.WIFEXITED(status), f"still running after 20 s: {output!r}"
    assert os.WEXITSTATUS(status) == 2
    assert b"pass phrase" not in output.lower()


@pytest.mark.parametrize(
    ("flags", "code", "text"),
    [
        (["--listen", "127.0.0.1:99999"], 2, "out of range"),
        (["--listen", "localhost"], 2, "HOST:PORT"),
        (["--interval", "0"], 2, "positive"),
        (["--max-in-flight", "-3"], 2, "1 or more"),
        (["--root", "/nonexistent-root"], 2, "not a directory"),
        (["--root", "/etc"], 2, "has no proc/stat"),
        (["--interval", "1e308"], 2, "at most 1e+06"),
        (["--interval", "0.0001"], 2, "at least 0.001"),
        (["--listen", "no-such-host.invalid:9137"], 2, "cannot resolve"),
        (["--listen", "[::1"], 2, "opens '[' and never closes it"),
        (["--listen", "[::1:9137"], 2, "opens '[' and never closes it"),
    ],
)
def test_bad_flags_are_one_line_errors(flags, code, text):
    result = run_cli("agent", *flags)
    assert result.returncode == code
    assert text in _one_line_error(result)


def test_port_in_use_is_a_runtime_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli("agent", "--listen", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"127.0.0.1:{port} is already in use by another program" in _one_line_error(result)


def test_sigterm_with_an_open_stream_shuts_down_promptly():
    agent = AgentProcess("--interval", "0.5").start()
    try:
        with httpx.Client(timeout=10) as client, client.stream("GET", f"{agent.url}/v1/stream") as stream:
            next(stream.iter_lines())  # the stream is live
            start = time.monotonic()
            agent.proc.terminate()
            agent.proc.wait(15)
        assert time.monotonic() - start < 8  # not held open by the stream until a timeout
        assert "Traceback" not in agent.log()
    finally:
        agent.cleanup()


@pytest.mark.parametrize(("text", "seconds"), [("'2s'", 2.0), ('"0.5s"', 0.5), ("3", 3.0), ("0.25", 0.25)])
def test_config_takes_seconds_as_the_command_line_does(tmp_path, text, seconds):
    from hypermesh.agent import config as agent_config

    path = tmp_path / "agent.toml"
    path.write_text(f"interval = {text}\nhistory = {text}\n")
    loaded = agent_config.load(str(path))
    assert loaded["interval_s"] == seconds and loaded["history_s"] == seconds
