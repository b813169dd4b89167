"""A small HTTP/1.1 client for asking agents: one connection, requests in turn, Content-Length or chunked; over
asyncio streams or over a blocking socket (BlockingStream), with one request and parsing code for both.

Why not httpx here: a fan-out is many short exchanges on fresh connections, and httpx's per-request machinery
(its connection pool rescans every connection on each request and each release, anyio wrappers, the auth and
redirect layers) cost 2-3 ms of CPU per request on the bench machine, against about 1 ms for the agent to answer:
100 nodes took 2 s, almost all of it in the client. What an agent needs asked is small: GET or POST/DELETE with a
JSON body, basic auth, TLS through an ``ssl.SSLContext``, answers of bounded size. Deadlines cover the whole
exchange (the caller's ``asyncio.timeout``, or BlockingStream's deadline), so a server that drips bytes cannot hold
a request forever.

Failures raise :class:`HttpFailure` with the kind a person acts on: ``refused``, ``tls``, ``bad answer``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import time
from typing import TypeVar
from urllib.parse import urlsplit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import Any

T = TypeVar("T")

__all__ = ["BlockingStream", "Connection", "HttpFailure", "Target", "basic_auth", "run_blocking"]

# Status line and headers of one answer; an agent's are a few hundred bytes.
MAX_HEAD_BYTES = 64 * 1024


class HttpFailure(Exception):
    """A request that got no usable answer: ``kind`` (refused, timed out, tls, auth, bad answer, stale) and a line
    for a person. ``sent`` is False only when the request surely never left (no connection, no TLS session): a
    write that failed after it may have been acted on."""

    def __init__(self, kind: str, message: str, sent: bool = True) -> None:
        super().__init__(message)
        self.kind, self.message, self.sent = kind, message, sent


class Target:
    """Where a base URL points: scheme, host, port and path prefix, parsed once per node."""

    __slots__ = ("base_path", "host", "host_header", "port", "tls")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpFailure("bad answer", f"{url!r} is not an http(s) URL", sent=False)
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        try:
            port = parts.port
        except ValueError:
            raise HttpFailure("refused", f"{url!r} has a bad port", sent=False) from None
        self.port = port if port is not None else (443 if self.tls else 80)
        self.host_header = parts.netloc.rpartition("@")[2]
        self.base_path = parts.path.rstrip("/")


def basic_auth(auth: tuple[str, str] | None) -> bytes:
    """The Authorization header line (with its CRLF), or nothing."""
    if auth is None:
        return b""
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode())
    return b"Authorization: Basic " + token + b"\r\n"


def _open_failure(exc: OSError, target: Target) -> HttpFailure:
    if isinstance(exc, ssl.SSLError):
        return HttpFailure("tls", f"TLS handshake failed: {getattr(exc, 'reason', None) or exc}", sent=False)
    if isinstance(exc, socket.gaierror):
        return HttpFailure("refused", f"cannot resolve {target.host}: {exc.strerror or exc}", sent=False)
    # A handshake the server cut (a plain-HTTP agent that closes on TLS garbage) is a TLS failure.
    if target.tls and isinstance(exc, ConnectionResetError | BrokenPipeError):
        return HttpFailure("tls", f"TLS handshake failed: {exc.strerror or exc}", sent=False)
    # asyncio's own text is "Connect call failed (address)": the errno says what happened.
    reason = os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
    return HttpFailure("refused", f"{reason} ({target.host}:{target.port})", sent=False)


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the request's deadline passed")
    return left


class BlockingStream:
    """A blocking socket with the asyncio stream methods Connection uses, as coroutines that never suspend: each
    read or write waits at most until the request's deadline (so a server that drips bytes cannot stretch it).
    run_blocking() drives Connection's own request and parsing over it with no event loop: for one request (an
    allocation's POST, one node of a small fan-out) asyncio.run and its streams cost about 0.8 ms more than the
    exchange itself here."""

    def __init__(self, sock: socket.socket, deadline: float, limit: int = MAX_HEAD_BYTES) -> None:
        self.sock, self.deadline, self.limit = sock, deadline, limit
        self.buffer = bytearray()
        self.transport = self  # Connection.close() aborts a TLS writer's transport

    def write(self, data: bytes) -> None:
        self.sock.settimeout(_left(self.deadline))
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    abort = close

    def _fill(self) -> bool:
        self.sock.settimeout(_left(self.deadline))
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def _take(self, n: int) -> bytes:
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    async def readuntil(self, separator: bytes) -> bytes:
        start = 0
        while (found := self.buffer.find(separator, start)) < 0:
            if len(self.buffer) > self.limit:
                raise asyncio.LimitOverrunError("separator not found within the limit", len(self.buffer))
            start = max(0, len(self.buffer) - len(separator) + 1)
            if not self._fill():
                raise asyncio.IncompleteReadError(self._take(len(self.buffer)), None)
        return self._take(found + len(separator))

    async def readexactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not self._fill():
                raise asyncio.IncompleteReadError(self._take(len(self.buffer)), n)
        return self._take(n)

    async def read(self, n: int) -> bytes:
        if not self.buffer:
            self._fill()
        return self._take(n)


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (its I/O is a BlockingStream's) to its end, without an event loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coroutine.close()
    raise RuntimeError("a coroutine over a blocking stream suspended")


class Connection:
    """One connection to one agent; :meth:`request` may be called again while the server keeps it open."""

    def __init__(
        self,
        reader: asyncio.StreamReader | BlockingStream,
        writer: asyncio.StreamWriter | BlockingStream,
        target: Target,
    ) -> None:
        self.reader, self.writer, self.target = reader, writer, target
        self.reusable = True
        self.answered = 0  # answers read on this connection

    @classmethod
    async def open(cls, target: Target, context: ssl.SSLContext | None) -> Connection:
        try:
            reader, writer = await asyncio.open_connection(
                target.host,
                target.port,
                ssl=context if target.tls else None,
                server_hostname=target.host if target.tls else None,
                limit=MAX_HEAD_BYTES,
            )
        except OSError as exc:
            raise _open_failure(exc, target) from None
        return cls(reader, writer, target)

    @classmethod
    def open_blocking(cls, target: Target, context: ssl.SSLContext | None, deadline: float) -> Connection:
        """A connection over a blocking socket, for run_blocking(); every step ends by ``deadline`` (monotonic),
        past it TimeoutError."""
        try:
            sock = socket.create_connection((target.host, target.port), timeout=_left(deadline))
        except TimeoutError:
            raise
        except OSError as exc:
            raise _open_failure(exc, target) from None
        if target.tls:
            assert context is not None
            try:
                sock.settimeout(_left(deadline))
                sock = context.wrap_socket(sock, server_hostname=target.host)
            except TimeoutError:
                sock.close()
                raise
            except OSError as exc:
                sock.close()
                raise _open_failure(exc, target) from None
        stream = BlockingStream(sock, deadline)
        return cls(stream, stream, target)

    def close(self) -> None:
        if self.target.tls:
            # close() would start TLS's close_notify exchange and leave the socket to a loop that asyncio.run()
            # ends right after (an unclosed socket): the answer is read whole, nothing is lost by cutting it.
            self.writer.transport.abort()
        else:
            self.writer.close()

    async def request(
        self,
        method: str,
        path: str,
        auth_line: bytes,
        body: bytes | None,
        max_body: int,
        while_waiting: Callable[[], None] | None = None,
    ) -> tuple[int, bytes]:
        """Send one request and read its whole answer: (status, body). ``while_waiting`` runs once the request is
        sent, before its answer is read (work that would otherwise wait its turn after it)."""
        head = f"{method} {self.target.base_path}{path} HTTP/1.1\r\nHost: {self.target.host_header}\r\n"
        extra = b"Accept: application/json\r\n" + auth_line
        if body is not None:
            extra += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        try:
            self.writer.write(head.encode("latin-1") + extra + b"\r\n" + (body or b""))
            if while_waiting is not None:
                while_waiting()
            answer = await self._answer(method, max_body)
            self.answered += 1
            return answer
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            self.reusable = False
            if self.answered and (not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial):
                # A kept-alive connection the server closed before reading this request (it may, at any time):
                # not an answer, the caller asks again on a fresh connection.
                raise HttpFailure("stale", "the server closed the kept-alive connection") from None
            detail = "closed before a whole answer" if isinstance(exc, asyncio.IncompleteReadError) else exc
            raise HttpFailure("bad answer", f"the connection broke: {detail}") from None
        except asyncio.LimitOverrunError:
            self.reusable = False
            raise HttpFailure("bad answer", f"headers longer than {MAX_HEAD_BYTES >> 10} KiB") from None
        except ssl.SSLError as exc:
            self.reusable = False
            raise HttpFailure("tls", f"TLS failed: {getattr(exc, 'reason', None) or exc}") from None

    async def _answer(self, method: str, max_body: int) -> tuple[int, bytes]:
        while True:
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            version, _, rest = lines[0].partition(" ")
            code = rest[:3]
            if not version.startswith("HTTP/1.") or not code.isdigit():
                self.reusable = False
                raise HttpFailure("bad answer", f"not an HTTP answer: {lines[0][:80]!r}")
            status = int(code)
            if status >= 200 or status == 101:
                break  # 1xx interim answers (100 Continue) come before the real one
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        if connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive"):
            self.reusable = False
        if method == "HEAD" or status in (204, 304):
            return status, b""
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return status, await self._chunked(max_body)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                self.reusable = False
                raise HttpFailure("bad answer", f"bad Content-Length {length[:40]!r}")
            if int(length) > max_body:
                self.reusable = False
                raise HttpFailure("bad answer", f"more than {max_body >> 20} MiB")
            return status, await self.reader.readexactly(int(length))
        self.reusable = False  # the body runs to the end of the connection
        body = await self.reader.read(max_body + 1)
        while body and len(body) <= max_body:
            more = await self.reader.read(max_body + 1 - len(body))
            if not more:
                break
            body += more
        if len(body) > max_body:
            raise HttpFailure("bad answer", f"more than {max_body >> 20} MiB")
        return status, body

    async def _chunked(self, max_body: int) -> bytes:
        body = bytearray()
        while True:
            size_line = await self.reader.readuntil(b"\r\n")
            size_text = size_line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                self.reusable = False
                raise HttpFailure("bad answer", f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return bytes(body)
            if len(body) + size > max_body:
                self.reusable = False
                raise HttpFailure("bad answer", f"more than {max_body >> 20} MiB")
            body += await self.reader.readexactly(size + 2)
            del body[-2:]
