"""Connections of the real agent on 127.0.0.1: idle and half-sent ones are closed, their number is capped, and a
flood of them under a low descriptor limit neither stops /healthz and /metrics nor floods the log."""

from __future__ import annotations

import contextlib
import resource
import socket
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import require_binary
from tests.fixtures.agent.agent_process import AgentProcess

HEADER_TIMEOUT_S = 1.0
# The sweep runs every header_timeout/4 (docs/agent.md): a connection is closed by 1.25 x the limit; the rest is
# margin for a loaded CI machine.
CLOSED_BY_S = HEADER_TIMEOUT_S * 1.25 + 1.0


def host_port(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


def seconds_until_closed(socks: dict[str, tuple[socket.socket, bytes]], limit: float = 10.0) -> dict[str, float]:
    """Seconds until the server closes each socket, measured together from now; a socket given bytes to trickle
    sends one of them every 0.1 s meanwhile (slowloris)."""
    start = time.monotonic()
    closed: dict[str, float] = {}
    sent = dict.fromkeys(socks, 0)
    for sock, _ in socks.values():
        sock.setblocking(False)
    while len(closed) < len(socks) and time.monotonic() - start < limit:
        for name, (sock, trickle) in socks.items():
            if name in closed:
                continue
            try:
                if sock.recv(4096) == b"":
                    closed[name] = time.monotonic() - start
                    continue
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed[name] = time.monotonic() - start
                continue
            if sent[name] < len(trickle):
                with contextlib.suppress(OSError):
                    sock.send(trickle[sent[name] : sent[name] + 1])
                sent[name] += 1
        time.sleep(0.1)
    return {name: closed.get(name, float("inf")) for name in socks}


def agent_metrics(url: str, **kwargs: object) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=10, **kwargs).text  # type: ignore[arg-type]
    return {
        s.name + "".join(f"[{v}]" for v in s.labels.values()): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("hypermesh_agent_http")
    }


def test_idle_and_half_sent_connections_are_closed_within_the_header_timeout():
    with AgentProcess("--header-timeout", str(HEADER_TIMEOUT_S)) as agent:
        address = host_port(agent.url)
        idle = socket.create_connection(address)
        # Slowloris: a byte of header every 0.2 s keeps the connection busy but never completes the request.
        trickling = socket.create_connection(address)
        after_response = socket.create_connection(address)
        after_response.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert after_response.recv(4096).startswith(b"HTTP/1.1 200")
        # A body that never ends after its request was answered (405): the server keeps reading it.
        endless_body = socket.create_connection(address)
        endless_body.sendall(b"POST /v1/sample HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\nab")
        assert endless_body.recv(4096).startswith(b"HTTP/1.1 405")
        header = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
        try:
            closed = seconds_until_closed(
                {
                    "idle": (idle, b""),
                    "trickling": (trickling, header),
                    # Idle again after a response (keep-alive): a partial next request does not extend the limit.
                    "after_response": (after_response, b"GET /metr"),
                    "endless_body": (endless_body, b"x" * 100),
                }
            )
        finally:
            for sock in (idle, trickling, after_response, endless_body):
                sock.close()
        assert all(seconds < CLOSED_BY_S for seconds in closed.values()), closed
        # ...and not before the limit (the clock started a little after they connected).
        assert all(seconds > HEADER_TIMEOUT_S - 0.3 for seconds in closed.values()), closed
        stats = agent_metrics(agent.url)
        assert stats["hypermesh_agent_http_connections_closed_total[header_timeout]"] >= 4
        # A connection that sends its request at once is served as before.
        assert httpx.get(f"{agent.url}/healthz", timeout=5).status_code == 200


def test_a_tls_connection_that_never_handshakes_is_closed_within_the_header_timeout(tmp_path):
    openssl = require_binary("openssl")
    cert, key = tmp_path / "agent.crt", tmp_path / "agent.key"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    config = tmp_path / "agent.toml"
    config.write_text(
        f'header_timeout = {HEADER_TIMEOUT_S}\n[tls_server_config]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
    )
    with AgentProcess("--config", str(config)) as agent:
        silent = socket.create_connection(host_port(agent.url))
        try:
            assert seconds_until_closed({"silent": (silent, b"")})["silent"] < CLOSED_BY_S
        finally:
            silent.close()
        context = ssl.create_default_context(cafile=str(cert))
        assert httpx.get(f"{agent.url}/healthz", verify=context, timeout=5).status_code == 200


IDLE_CONNECTIONS = 400
NOFILE = 384  # below IDLE_CONNECTIONS: without the cap the agent would run out of descriptors


def test_many_idle_connections_under_a_low_descriptor_limit_leave_healthz_and_metrics_answering():
    prlimit = require_binary("prlimit")
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft > IDLE_CONNECTIONS + 64, "the test itself needs the descriptors for its connections"
    # The default header timeout (5 s): the idle connections stay for the whole test unless the cap closes them.
    with AgentProcess("--interval", "0.5", prefix=[prlimit, f"--nofile={NOFILE}:{NOFILE}", "--"]) as agent:
        address = host_port(agent.url)
        sockets = []
        try:
            start = time.monotonic()
            sockets.extend(socket.create_connection(address, timeout=5) for _ in range(IDLE_CONNECTIONS))
            opened_in = time.monotonic() - start
            # While all of them are open: the agent answers, promptly, on new connections.
            for path in ("/healthz", "/metrics", "/v1/sample", "/healthz", "/metrics"):
                start = time.monotonic()
                response = httpx.get(f"{agent.url}{path}", timeout=5)
                assert response.status_code == 200, (path, response.status_code)
                assert time.monotonic() - start < 2.0, path
            stats = agent_metrics(agent.url)
        finally:
            for sock in sockets:
                sock.close()
        log = agent.log()
    # The cap was fitted under the descriptor limit, said once; the oldest idle connections made room for new ones.
    assert "max_connections lowered from 512 to" in log
    assert stats["hypermesh_agent_http_connections"] < NOFILE
    assert stats["hypermesh_agent_http_connections_closed_total[evicted]"] > 0
    # No traceback per failed accept: a short log however many connections came in.
    assert "Traceback" not in log
    assert len(log) < 4000, log[-2000:]
    assert opened_in < 30


def test_past_the_cap_with_every_connection_busy_a_new_one_gets_503_at_once():
    with AgentProcess("--interval", "0.2", "--max-connections", "3", "--max-streams", "8") as agent:
        with contextlib.ExitStack() as stack:
            streams = [
                stack.enter_context(
                    stack.enter_context(httpx.Client(timeout=10)).stream("GET", f"{agent.url}/v1/stream")
                )
                for _ in range(3)
            ]
            assert [s.status_code for s in streams] == [200, 200, 200]
            start = time.monotonic()
            with socket.create_connection(host_port(agent.url), timeout=5) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 503"), answer
            assert b"retry-after: 1" in answer
            assert time.monotonic() - start < 2
        # The streams are gone: there is room again.
        deadline = time.monotonic() + 5
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{agent.url}/healthz", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert agent_metrics(agent.url)["hypermesh_agent_http_connections_closed_total[refused]"] >= 1


@pytest.mark.parametrize("key", ["header_timeout", "max_connections", "max_handshakes"])
def test_connection_limits_are_checked_config_keys(tmp_path, key):
    config = tmp_path / "agent.toml"
    config.write_text(f"{key} = -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "hypermesh.cli.main", "agent", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert f"config {config}: {key}:" in result.stderr


NON_READERS = 100
# What 100 clients that never read may cost (docs/agent.md): each holds at most its connection's buffer (32 KiB high
# water + one 32 KiB piece), a request in flight a list of references into the ring buffer. Before pieces and the
# send timeout, each held a whole multi-megabyte body (+300 MB). The bound is a share of that, measured in the test:
# what the agent would hold if every client kept its own copy of the body it asked for.
NON_READER_SHARE_OF_BODIES = 0.15


def test_clients_that_never_read_their_responses_cost_bounded_memory():
    # 500 Hz fills the ring buffer with megabytes of history in a few seconds.
    with AgentProcess(
        "--interval", "0.002", "--max-in-flight", "4", "--send-timeout", "2", "--header-timeout", "2"
    ) as agent:
        deadline = time.monotonic() + 15
        while (body_bytes := len(httpx.get(f"{agent.url}/v1/samples?since=0", timeout=10).content)) < 2 * 2**20:
            assert time.monotonic() < deadline, "history did not reach 2 MiB"
            time.sleep(0.5)
        rss_before = agent.rss_bytes()
        sockets = []
        try:
            for _ in range(NON_READERS):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(host_port(agent.url))
                sock.sendall(b"GET /v1/samples?since=0 HTTP/1.1\r\nHost: x\r\n\r\n")
                sockets.append(sock)
                time.sleep(0.01)
            time.sleep(3.0)  # past the send timeout: the first ones were dropped, later ones took their slots
            rss_during = agent.rss_bytes()
            # The agent still answers while they sit there.
            assert httpx.get(f"{agent.url}/healthz", timeout=5).status_code == 200
            stats = agent_metrics(agent.url)
        finally:
            for sock in sockets:
                sock.close()
        held_if_copied = NON_READERS * body_bytes
        assert rss_during - rss_before < NON_READER_SHARE_OF_BODIES * held_if_copied, (
            rss_before,
            rss_during,
            body_bytes,
        )
        # Non-readers were dropped: by the send timeout while the agent still held part of a body, or by the header
        # timeout once the kernel's send buffer (autotuned up to 4 MiB) had taken the whole body off its hands.
        dropped = (
            stats["hypermesh_agent_http_connections_closed_total[send_timeout]"]
            + stats["hypermesh_agent_http_connections_closed_total[header_timeout]"]
        )
        assert dropped >= 1, stats
        # And afterwards a reading client gets the whole history.
        response = httpx.get(f"{agent.url}/v1/samples?since=0", timeout=10)
        assert response.status_code == 200
        assert len(response.json()["samples"]) > 1000
