"""Ask many agents at once: one GET per node and path, in parallel, each bounded by its own deadline.

Every node's answer is either its JSON or a failure with a kind a person can act on:

    refused      nothing listens there (connection refused, host unreachable)
    timed out    no complete answer within the node's timeout (a black hole, a cut link, a slow node)
    tls          the TLS handshake failed (wrong CA, a plain-HTTP agent behind https://, an expired certificate)
    auth         401/403: credentials missing or wrong
    bad answer   anything else: a non-200 status, a body that is not the JSON asked for

The deadline is the whole request (connect, TLS, headers, body), enforced around it, not per read: a server that
drips one byte a second would pass every per-read timeout forever.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import ssl
import threading
import time

from hypermesh.cluster.http1 import Connection, HttpFailure, Target, basic_auth, run_blocking
from hypermesh.cluster.sockets import readable_now

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

__all__ = ["Answer", "Client", "Node", "collect", "collect_async"]

DEFAULT_TIMEOUT_S = 3.0
# One node's answer: a profile is ~10 KiB, a sample ~5 KiB; far past that is not an agent.
MAX_BODY_BYTES = 16 * 1024 * 1024


class Node:
    """An agent to ask: its id (from etcd, or its URL's host:port) and base URL."""

    __slots__ = ("labels", "node_id", "url")

    def __init__(self, node_id: str, url: str, labels: dict[str, str] | None = None) -> None:
        self.node_id, self.url, self.labels = node_id, url.rstrip("/"), labels or {}

    def __repr__(self) -> str:
        return f"Node({self.node_id!r}, {self.url!r})"


class Answer:
    """One node's answer to one path: ``data`` or (``error_kind``, ``error``)."""

    __slots__ = ("data", "elapsed_s", "error", "error_kind", "node", "path")

    def __init__(
        self,
        node: Node,
        path: str,
        data: Any = None,
        error_kind: str | None = None,
        error: str | None = None,
        elapsed_s: float = 0.0,
    ) -> None:
        self.node, self.path, self.data = node, path, data
        self.error_kind, self.error, self.elapsed_s = error_kind, error, elapsed_s

    @property
    def ok(self) -> bool:
        return self.error_kind is None


class Client:
    """What every request of one command shares: TLS trust, credentials, the per-node timeout."""

    def __init__(
        self,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        cafile: str | None = None,
        insecure: bool = False,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.auth = auth
        self._auth_line = basic_auth(auth)
        self._context: ssl.SSLContext | None = None
        if insecure:
            self.verify: ssl.SSLContext | bool = False
        else:
            self.verify = ssl.create_default_context(cafile=cafile) if cafile else True

    def ssl_context(self) -> ssl.SSLContext:
        """The context for https agents, made on first use: the system's CA bundle costs 20-30 ms to load."""
        if isinstance(self.verify, ssl.SSLContext):
            return self.verify
        if self._context is None:
            if self.verify:
                self._context = ssl.create_default_context()
            else:
                self._context = ssl.create_default_context()
                self._context.check_hostname = False
                self._context.verify_mode = ssl.CERT_NONE
        return self._context

    async def ask(self, node: Node, paths: Sequence[str]) -> list[Answer]:
        """The node's answers to ``paths``, asked in order on one connection, all within one timeout.

        In order, not at once: the first authenticated request verifies the credentials (one bcrypt run), and the
        agent shows /healthz in full only to credentials it has verified before."""
        answers: list[Answer] = []
        opened: list[Connection] = []
        start = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._exchange(node, paths, answers, opened, None)
        except TimeoutError:
            answers.append(self._timed_out(node, paths[len(answers)], start))
        finally:
            for connection in opened:
                connection.close()
        return _one_per_path(node, paths, answers)

    def ask_blocking(self, node: Node, paths: Sequence[str]) -> list[Answer]:
        """ask() over blocking sockets (http1.BlockingStream), in the calling thread, within the same deadline."""
        answers: list[Answer] = []
        opened: list[Connection] = []
        start = time.monotonic()
        try:
            run_blocking(self._exchange(node, paths, answers, opened, start + self.timeout_s))
        except TimeoutError:
            answers.append(self._timed_out(node, paths[len(answers)], start))
        except OSError as exc:  # the network under an open connection (what asyncio's streams report as a reset)
            broke = f"the connection broke: {exc.strerror or exc}"
            answers.append(Answer(node, paths[len(answers)], None, "bad answer", broke))
        finally:
            for connection in opened:
                connection.close()
        return _one_per_path(node, paths, answers)

    def _timed_out(self, node: Node, path: str, start: float) -> Answer:
        message = f"no answer within {self.timeout_s:g} s"
        return Answer(node, path, None, "timed out", message, time.monotonic() - start)

    async def _exchange(
        self, node: Node, paths: Sequence[str], answers: list[Answer], opened: list[Connection], deadline: float | None
    ) -> None:
        """Ask ``paths`` in turn, appending each answer; the first failure ends it. ``deadline`` (monotonic): over
        blocking sockets, each step ending by then; None: asyncio streams under the caller's timeout. Connections
        made are put in ``opened`` for the caller to close, whatever ends the exchange."""
        try:
            target = Target(node.url)
            context = self.ssl_context() if target.tls else None
        except HttpFailure as failure:  # the URL itself
            answers.append(Answer(node, paths[0], None, failure.kind, failure.message))
            return
        connection: Connection | None = None
        for path in paths:
            began = time.monotonic()
            try:
                connection, status, body = await self._get(connection, target, context, path, opened, deadline)
                data = _json_answer(status, body)
            except HttpFailure as failure:
                answers.append(Answer(node, path, None, failure.kind, failure.message, time.monotonic() - began))
                return
            answers.append(Answer(node, path, data, elapsed_s=time.monotonic() - began))

    async def _get(
        self,
        connection: Connection | None,
        target: Target,
        context: ssl.SSLContext | None,
        path: str,
        opened: list[Connection],
        deadline: float | None,
    ) -> tuple[Connection, int, bytes]:
        """GET ``path`` on the node's connection (opened first, or again if the server ended it)."""
        for _ in range(2):
            if connection is None or not connection.reusable:
                if connection is not None:
                    connection.close()
                if deadline is None:
                    connection = await Connection.open(target, context)
                else:
                    connection = Connection.open_blocking(target, context, deadline)
                opened.append(connection)
            try:
                status, body = await connection.request("GET", path, self._auth_line, None, MAX_BODY_BYTES)
                return connection, status, body
            except HttpFailure as failure:
                if failure.kind != "stale":
                    raise
        raise HttpFailure("bad answer", "the server closed two connections in a row without answering")

    def send_sync(
        self,
        url: str,
        method: str,
        body: Any = None,
        *,
        keep: dict[tuple[str, int, bool], Connection] | None = None,
        while_waiting: Callable[[], None] | None = None,
    ) -> tuple[int, Any]:
        """One request to an agent (allocations): (status, the JSON answer or None). Raises HttpFailure, with
        "timed out" past the timeout. Connection's own request and parsing over a blocking socket
        (http1.BlockingStream), within the whole-request deadline, without starting an event loop.

        ``keep``: connections kept between calls, one per agent, reused while the agent keeps them open (a fresh
        TCP connection is about a tenth of an exchange here). One the agent closed meanwhile is replaced and the
        request sent again: only for requests that may be repeated (an allocation's POST under its id, a DELETE).
        ``while_waiting``: run once the request is sent, before its answer is read."""
        target = Target(url)
        payload = None if body is None else json.dumps(body).encode()
        deadline = time.monotonic() + self.timeout_s
        try:
            status, raw = self._send(target, method, payload, deadline, keep, while_waiting)
        except TimeoutError:
            raise HttpFailure("timed out", f"no answer within {self.timeout_s:g} s") from None
        except OSError as exc:  # the network under an open connection (what asyncio's streams report as a reset)
            raise HttpFailure("bad answer", f"the connection broke: {exc.strerror or exc}") from None
        return status, _sent_answer(raw)

    def _send(
        self,
        target: Target,
        method: str,
        payload: bytes | None,
        deadline: float,
        keep: dict[tuple[str, int, bool], Connection] | None,
        while_waiting: Callable[[], None] | None,
    ) -> tuple[int, bytes]:
        key = (target.host, target.port, target.tls)
        kept = keep.pop(key, None) if keep is not None else None
        if kept is not None and _closed_by_peer(kept):
            kept.close()  # the agent closed it while it was idle (its keep-alive timeout): not worth a try
            kept = None
        if kept is not None:
            kept.target = target  # the same agent, this request's path
            kept.reader.deadline = deadline  # type: ignore[union-attr]  # a blocking stream (kept only those)
            try:
                status, raw = run_blocking(
                    kept.request(method, "", self._auth_line, payload, MAX_BODY_BYTES, while_waiting)
                )
            except HttpFailure as failure:
                kept.close()
                if failure.kind != "stale":
                    raise
                while_waiting = None  # it may have run: once is enough
            except BaseException:
                kept.close()
                raise
            else:
                self._keep_or_close(kept, keep, key)
                return status, raw
        try:
            connection = Connection.open_blocking(target, self.ssl_context() if target.tls else None, deadline)
        except HttpFailure as failure:
            if kept is None:
                raise
            # The request may have reached the agent on the kept connection before it went away: not "refused",
            # which would let an allocation be handed to another node.
            raise HttpFailure("bad answer", f"the connection broke, then {failure.message}") from None
        except TimeoutError:
            if kept is not None:
                raise
            raise HttpFailure("timed out", f"no connection within {self.timeout_s:g} s", sent=False) from None
        try:
            status, raw = run_blocking(
                connection.request(method, "", self._auth_line, payload, MAX_BODY_BYTES, while_waiting)
            )
        except BaseException:
            connection.close()
            raise
        self._keep_or_close(connection, keep, key)
        return status, raw

    @staticmethod
    def _keep_or_close(
        connection: Connection, keep: dict[tuple[str, int, bool], Connection] | None, key: tuple[str, int, bool]
    ) -> None:
        if keep is not None and connection.reusable:
            keep[key] = connection
        else:
            connection.close()


def _closed_by_peer(connection: Connection) -> bool:
    """Whether a kept blocking connection has something to read while no request is out: the agent's close (or
    bytes no request asked for, as unusable)."""
    stream = connection.reader
    sock = getattr(stream, "sock", None)
    if sock is None or sock.fileno() < 0:
        return True
    return readable_now(sock)


def _sent_answer(raw: bytes) -> Any:
    """The JSON answer to a write, or the start of a body that is not JSON (for the error message)."""
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw[:200].decode("utf-8", errors="replace")


def _one_per_path(node: Node, paths: Sequence[str], answers: list[Answer]) -> list[Answer]:
    """Paths not asked after a failure carry the same failure: every row has one answer per path."""
    failed = answers[-1]
    return answers + [Answer(node, p, None, failed.error_kind, failed.error) for p in paths[len(answers) :]]


def _json_answer(status: int, body: bytes) -> Any:
    if status in (401, 403):
        raise HttpFailure("auth", f"HTTP {status}; give --user and --password-file")
    if status != 200:
        raise HttpFailure("bad answer", f"HTTP {status} {_error_text(body)}".rstrip())
    try:
        return json.loads(body)
    except ValueError:
        raise HttpFailure("bad answer", "the body is not JSON") from None


def _error_text(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    return str(data.get("error", ""))[:200] if isinstance(data, dict) else ""


async def collect_async(client: Client, nodes: Sequence[Node], paths: Sequence[str]) -> list[list[Answer]]:
    """collect() for a caller already in an event loop (the agent). Agents are asked directly, never through an
    HTTP_PROXY meant for the internet (a proxy would turn "refused" and "timed out" into its own 502/404)."""
    if not nodes:
        return []
    return list(await asyncio.gather(*(client.ask(node, paths) for node in nodes)))


def collect(client: Client, nodes: Sequence[Node], paths: Sequence[str]) -> list[list[Answer]]:
    """For each node, its answers to ``paths`` (in order), all asked at once; never longer than the timeout.

    Up to THREADED_NODES nodes are asked from threads over blocking sockets, the calling thread asking one of them:
    an event loop costs about 1.2 ms to start and end, and its streams about 0.7 ms of CPU per node against 0.3 ms
    for a blocking exchange (bench machine), all of it on one core, where threads wait on the kernel in parallel.
    More nodes are asked from one event loop, which does not need a thread per node."""
    if not nodes:
        return []
    if len(nodes) > THREADED_NODES:
        return asyncio.run(collect_async(client, nodes, paths))
    futures = [_pool().submit(client.ask_blocking, node, paths) for node in nodes[1:]]
    first = client.ask_blocking(nodes[0], paths)
    return [first, *(future.result() for future in futures)]


THREADED_NODES = 16
_threads: list[concurrent.futures.ThreadPoolExecutor] = []
_threads_lock = threading.Lock()


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """The process's fan-out threads, started on first use and kept (threads left idle cost nothing)."""
    with _threads_lock:
        if not _threads:
            _threads.append(
                concurrent.futures.ThreadPoolExecutor(THREADED_NODES - 1, thread_name_prefix="hypermesh-fanout")
            )
        return _threads[0]
