"""The fan-out's own HTTP/1.1 client (hypermesh.cluster.http1 through fanout.Client) against real servers on
127.0.0.1: the agent (plain and TLS with basic auth), a black hole, a closed port, and small servers that answer
in the ways an agent never should (chunked, connection-close, oversized, dripping, not JSON).

Every answer our client reads is compared with what urllib (a client independent of ours) reads from the same
server; every failure kind is the one a person acts on.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from hypermesh.cluster.fanout import THREADED_NODES, Client, Node, collect, collect_async
from hypermesh.cluster.http1 import HttpFailure
from tests.fixtures.agent.agent_process import AgentProcess
from tests.integration.test_agent_security import HASH, PASSWORD, self_signed


def _on_an_event_loop(client: Client, nodes: list[Node], paths: tuple[str, ...]) -> list:
    return asyncio.run(collect_async(client, nodes, paths))


@pytest.fixture(params=["threads", "event loop"])
def fan(request) -> Callable[..., list]:
    """collect() asks up to THREADED_NODES nodes from threads over blocking sockets and more from one event loop
    (the agent's cluster page always does): every answer and failure must be the same both ways."""
    return collect if request.param == "threads" else _on_an_event_loop


@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    with AgentProcess("--interval", "0.5") as process:
        yield process


@pytest.fixture(scope="module")
def tls_agent(tmp_path_factory) -> Iterator[tuple[AgentProcess, str]]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(directory, "agent", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1")
    config = directory / "agent.toml"
    config.write_text(
        f'[tls_server_config]\ncert_file = "{cert}"\nkey_file = "{key}"\n\n[basic_auth_users]\nops = "{HASH}"\n'
    )
    with AgentProcess("--config", str(config), "--interval", "0.5") as process:
        assert process.url.startswith("https://127.0.0.1:")
        yield process, str(cert)


class RawServer:
    """A listener on 127.0.0.1 whose every connection is handed to ``serve(conn)`` in its own thread."""

    def __init__(self, serve: Callable[[socket.socket], None]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.serve = serve
        self.requests: list[bytes] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self.serve(conn)

    def read_request(self, conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = [
            int(v)
            for k, _, v in (line.partition(b":") for line in head.split(b"\r\n"))
            if k.lower() == b"content-length"
        ]
        while length and len(body) < length[0]:
            body += conn.recv(65536)
        self.requests.append(head + b"\r\n\r\n" + body)
        return head + b"\r\n\r\n" + body

    def close(self) -> None:
        # shutdown() first: close() alone leaves a thread blocked in accept() holding the port open (Linux).
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)


def urllib_json(url: str, context: ssl.SSLContext | None = None, auth: str | None = None) -> dict:
    headers = {"authorization": auth} if auth else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=10, context=context) as answer:
        return json.loads(answer.read())


def test_answers_match_an_independent_client_on_one_connection(agent):
    client = Client(timeout_s=10)
    ((profile, health),) = collect(client, [Node("a", agent.url)], ("/v1/profile", "/healthz"))
    assert profile.ok and health.ok, (profile.error, health.error)
    own = urllib_json(agent.url + "/v1/profile")
    assert profile.data["cpu"] == own["cpu"] and profile.data["memory"]["total_bytes"] == own["memory"]["total_bytes"]
    assert health.data["status"] == urllib_json(agent.url + "/healthz")["status"]
    # 30 nodes at once on one agent (past THREADED_NODES: one event loop): every one answers, in the order asked.
    assert THREADED_NODES < 30
    rows = collect(client, [Node(f"n{i}", agent.url) for i in range(30)], ("/healthz",))
    assert [row[0].node.node_id for row in rows] == [f"n{i}" for i in range(30)]
    assert all(row[0].ok and row[0].data["status"] == health.data["status"] for row in rows)


def test_refused_and_black_hole_are_named_and_cost_one_timeout(agent, fan):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: the kernel refuses
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)  # the kernel completes the handshake from the backlog; nobody ever answers
    try:
        nodes = [
            Node("ok", agent.url),
            Node("closed", f"http://127.0.0.1:{closed.getsockname()[1]}"),
            Node("hole", f"http://127.0.0.1:{hole.getsockname()[1]}"),
        ]
        started = time.monotonic()
        ok, refused, silent = fan(Client(timeout_s=1.0), nodes, ("/v1/sample", "/healthz"))
        elapsed = time.monotonic() - started
    finally:
        closed.close()
        hole.close()
    assert [a.ok for a in ok] == [True, True]
    assert [a.error_kind for a in refused] == ["refused", "refused"] and "refused" in (refused[0].error or "").lower()
    assert [a.error_kind for a in silent] == ["timed out", "timed out"]
    assert elapsed < 1.0 + 3  # one timeout for the whole fan-out, seconds of margin on a shared machine


def test_tls_trust_and_basic_auth(tls_agent, tmp_path, fan):
    process, cafile = tls_agent
    node = [Node("tls", process.url)]
    (untrusted,) = fan(Client(timeout_s=10), node, ("/healthz",))[0]
    assert untrusted.error_kind == "tls" and "certificate" in (untrusted.error or "").lower()
    (anonymous,) = fan(Client(timeout_s=10, cafile=cafile), node, ("/v1/sample",))[0]
    assert anonymous.error_kind == "auth" and "401" in (anonymous.error or "")
    (wrong,) = fan(Client(timeout_s=10, cafile=cafile, auth=("ops", "wrong")), node, ("/v1/sample",))[0]
    assert wrong.error_kind == "auth"
    sample, health = fan(Client(timeout_s=10, cafile=cafile, auth=("ops", PASSWORD)), node, ("/v1/sample", "/healthz"))[
        0
    ]
    assert sample.ok and health.ok, (sample.error, health.error)
    context = ssl.create_default_context(cafile=cafile)
    token = "Basic " + base64.b64encode(f"ops:{PASSWORD}".encode()).decode()
    assert set(sample.data) == set(urllib_json(process.url + "/v1/sample", context, token))
    (insecure,) = fan(Client(timeout_s=10, insecure=True, auth=("ops", PASSWORD)), node, ("/healthz",))[0]
    assert insecure.ok
    # send_sync (an allocation's writes) over its blocking socket: the same trust and credentials.
    with pytest.raises(HttpFailure) as untrusted_write:
        Client(timeout_s=10).send_sync(process.url + "/healthz", "GET")
    assert untrusted_write.value.kind == "tls" and "certificate" in str(untrusted_write.value).lower()
    status, answer = Client(timeout_s=10, cafile=cafile, auth=("ops", PASSWORD)).send_sync(
        process.url + "/v1/sample", "GET"
    )
    assert status == 200 and set(answer) == set(sample.data)
    assert Client(timeout_s=10, cafile=cafile).send_sync(process.url + "/v1/sample", "GET")[0] == 401
    # A plain-HTTP agent asked over https://: the handshake fails, and says so.
    plain = AgentProcess("--interval", "0.5").start()
    try:
        (mismatch,) = fan(Client(timeout_s=5), [Node("p", plain.url.replace("http:", "https:"))], ("/healthz",))[0]
    finally:
        plain.cleanup()
    assert mismatch.error_kind == "tls", mismatch.error


def test_chunked_connection_close_and_keep_alive_bodies_are_read_whole(fan):
    payload = {"status": "ok", "items": list(range(2000))}
    raw = json.dumps(payload).encode()

    def serve(conn: socket.socket) -> None:
        request = server.read_request(conn)
        if b"GET /chunked" in request:
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            chunks = b"".join(
                b"%x;ext=1\r\n%s\r\n" % (len(raw[i : i + 1000]), raw[i : i + 1000]) for i in range(0, len(raw), 1000)
            )
            conn.sendall(head + chunks + b"0\r\nX-Trailer: 1\r\n\r\n")
        elif b"GET /close" in request:
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + raw)  # no length: the body ends with the connection
        else:
            conn.sendall(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(raw), raw)
            )

    server = RawServer(serve)
    try:
        row = fan(Client(timeout_s=10), [Node("raw", server.url)], ("/chunked", "/close", "/length"))[0]
        # The same parsing over send_sync's blocking socket (no event loop).
        sent = [Client(timeout_s=10).send_sync(server.url + path, "GET") for path in ("/chunked", "/close", "/length")]
    finally:
        server.close()
    assert [a.error for a in row] == [None, None, None]
    assert [a.data for a in row] == [payload, payload, payload]
    assert sent == [(200, payload)] * 3
    # The server closes after each answer here: each path was asked on a connection of its own, Host given.
    assert len(server.requests) == 3 + 3 and all(b"\r\nHost: 127.0.0.1:" in r for r in server.requests)


@pytest.mark.parametrize(
    ("answer", "kind", "says"),
    [
        (
            b'HTTP/1.1 500 Internal Server Error\r\nContent-Length: 23\r\n\r\n{"error": "disk full"}  ',
            "bad answer",
            "HTTP 500 disk full",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "bad answer", "not JSON"),
        (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", "auth", "403"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n", "bad answer", "MiB"),
        (b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"a":', "bad answer", "connection broke"),
        (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "bad answer", "not an HTTP answer"),
    ],
)
def test_answers_no_agent_gives_are_bad_answers(answer, kind, says, fan):
    def serve(conn: socket.socket) -> None:
        server.read_request(conn)
        conn.sendall(answer)

    server = RawServer(serve)
    try:
        (got,) = fan(Client(timeout_s=5), [Node("raw", server.url)], ("/v1/sample",))[0]
    finally:
        server.close()
    assert got.error_kind == kind and says in (got.error or ""), got.error


def test_a_dripping_server_is_cut_at_the_deadline_and_post_bodies_arrive(fan):
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        server.read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        while not stop.wait(0.2):  # one byte every 0.2 s: every read succeeds, the whole never arrives in time
            conn.sendall(b" ")

    server = RawServer(drip)
    try:
        started = time.monotonic()
        (got,) = fan(Client(timeout_s=1.0), [Node("drip", server.url)], ("/v1/sample",))[0]
        elapsed = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(HttpFailure) as blocking:  # send_sync's blocking socket: the same whole deadline
            Client(timeout_s=1.0).send_sync(server.url + "/v1/allocations", "POST", {"kind": "cpu"})
        blocking_elapsed = time.monotonic() - started
    finally:
        stop.set()
        server.close()
    assert got.error_kind == "timed out" and elapsed < 1.0 + 3
    assert blocking.value.kind == "timed out" and 1.0 <= blocking_elapsed < 1.0 + 3

    def echo(conn: socket.socket) -> None:
        request = server.read_request(conn)
        body = json.dumps({"got": json.loads(request.partition(b"\r\n\r\n")[2])}).encode()
        conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    server = RawServer(echo)
    try:
        client = Client(timeout_s=5, auth=("ops", "pw:with:colons"))
        status, answer = client.send_sync(server.url + "/v1/allocations", "POST", {"kind": "cpu", "amount": 0.5})
    finally:
        server.close()
    assert status == 201 and answer == {"got": {"kind": "cpu", "amount": 0.5}}
    request = server.requests[0]
    assert request.startswith(b"POST /v1/allocations HTTP/1.1\r\n")
    assert b"Authorization: Basic " + base64.b64encode(b"ops:pw:with:colons") in request
    with pytest.raises(HttpFailure) as refused:
        client.send_sync(server.url + "/v1/allocations", "DELETE")  # the server is closed now
    assert refused.value.kind == "refused"


def _answer_echo(server: RawServer, conn: socket.socket) -> bool:
    """Read one request and answer it with its own JSON body; False when the client closed instead."""
    request = server.read_request(conn)
    if not request:
        return False
    body = json.dumps({"got": json.loads(request.partition(b"\r\n\r\n")[2])}).encode()
    conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return True


def test_kept_connections_are_reused_and_replaced_once_the_server_closed_them():
    """send_sync(keep=...) (an Allocator's grants): one connection for many requests; one the server closed after
    its third answer is replaced, and every request reaches the server exactly once."""
    accepted = []

    def three_then_close(conn: socket.socket) -> None:
        accepted.append(conn)
        for _ in range(3):
            if not _answer_echo(server, conn):
                return

    server = RawServer(three_then_close)
    kept: dict = {}
    waited = []
    try:
        client = Client(timeout_s=5)
        for i in range(7):
            status, answer = client.send_sync(
                server.url + "/v1/allocations", "POST", {"n": i}, keep=kept, while_waiting=lambda: waited.append(1)
            )
            assert (status, answer) == (201, {"got": {"n": i}})
    finally:
        server.close()
    assert len(accepted) == 3  # 3 + 3 + 1 requests
    assert [json.loads(r.partition(b"\r\n\r\n")[2])["n"] for r in server.requests] == list(range(7))
    assert len(waited) == 7  # once per request, between sending it and reading its answer
    assert len(kept) == 1
    for connection in kept.values():
        connection.close()


def test_a_kept_connection_lost_after_sending_is_never_reported_as_refused():
    """The server reads the second request, then closes it and stops listening: that request may have been acted
    on, so the failure is not "refused" (which would let an allocation be handed to another node)."""
    seen = []

    def answer_one_then_vanish(conn: socket.socket) -> None:
        _answer_echo(server, conn)
        seen.append(server.read_request(conn))  # the second request arrives...
        with contextlib.suppress(OSError):
            server.sock.shutdown(socket.SHUT_RDWR)  # ...and the server goes away without answering it
        server.sock.close()

    server = RawServer(answer_one_then_vanish)
    kept: dict = {}
    try:
        client = Client(timeout_s=5)
        assert client.send_sync(server.url + "/v1/allocations", "POST", {"n": 1}, keep=kept)[0] == 201
        with pytest.raises(HttpFailure) as lost:
            client.send_sync(server.url + "/v1/allocations", "POST", {"n": 2}, keep=kept)
    finally:
        server.close()
    assert seen and b'{"n": 2}' in seen[0]  # it did reach the server
    assert lost.value.kind == "bad answer" and "refused" in lost.value.message
    assert kept == {}
