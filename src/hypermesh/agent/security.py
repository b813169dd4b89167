"""The agent's guard: in-flight caps, request timeout and basic auth, as one plain ASGI middleware.

Order matters and is deliberate; no anonymous flood can starve ``/healthz`` or an authenticated scrape:

1. A header block over MAX_HEADER_BYTES gets 431.
2. ``/healthz`` takes no slot at all (it is a dict lookup and reveals nothing), so a supervisor's liveness
   probe is never refused for load.
3. Basic auth (when users are configured) runs before any slot is taken. A verified (user, password)
   pair is remembered by its SHA-256 for the process lifetime, as exporter-toolkit does: Prometheus then
   costs one dict lookup per scrape. Unknown credentials need bcrypt (slow by design, ~0.2 s at cost 12):
   it runs in a worker thread, at most MAX_VERIFYING at once; past that the request gets 503 with
   ``Retry-After`` at once. Guessing passwords therefore fills only that small lane, never a request slot.
4. Lanes, each with its own cap, each answering 503 + ``Retry-After`` at once when full (before any work,
   so an overload cannot queue up and hang clients): ``/metrics`` (``max_in_flight``), ``/v1/stream``
   event streams (``max_streams``: they live as long as their client) and every other request
   (``max_in_flight``). A flood of /v1 requests or of open streams cannot take a scrape's slot.
5. A timeout bounds the time until the response starts: a stuck handler gets 503, not a hang.
   Streams (SSE) start their response at once and then live as long as their client.
6. A response body is handed to the server in pieces of ``connections.WRITE_CHUNK_BYTES``; uvicorn waits for
   the connection's buffer to drain between them, so the request keeps its slot until its body is sent and a
   client that does not read holds one piece of memory, not the whole body (the send timeout then drops it).
7. If the connection fails under a request (a client gone, a malformed body the server already answered
   with 400), the rest of the response is dropped quietly instead of logging a traceback per request.

Nothing here logs a header or a credential.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging

from hypermesh.agent.connections import WRITE_CHUNK_BYTES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping
    from typing import Any

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("hypermesh.agent")

OPEN_PATHS = frozenset({"/healthz"})
# Paths served without taking a slot (trivial, and what supervisors probe).
UNCAPPED_PATHS = frozenset({"/healthz"})
STREAM_PATHS = frozenset({"/v1/stream"})
METRICS_PATHS = frozenset({"/metrics"})
# bcrypt checks of credentials not yet verified, at once; more get 503 at once.
MAX_VERIFYING = 2
# Total size of request header names and values we accept (Go's net/http default is 1 MiB; our clients
# are Prometheus and browsers, whose headers are a few hundred bytes). uvicorn's h11 parser separately
# refuses an incomplete header block past 128 KiB.
MAX_HEADER_BYTES = 16 * 1024


class Stats:
    """Counters the guard keeps; exported by the agent collector."""

    __slots__ = (
        "accept_errors",
        "connections",
        "connections_evicted",
        "connections_header_timeout",
        "connections_refused",
        "connections_send_timeout",
        "in_flight",
        "rejected_in_flight",
        "rejected_timeout",
        "rejected_unauthorized",
    )

    def __init__(self) -> None:
        # Kept by connections.ConnectionLimits: open connections, and those closed or refused by the caps.
        self.connections = 0
        self.connections_evicted = 0
        self.connections_header_timeout = 0
        self.connections_refused = 0
        self.connections_send_timeout = 0
        self.accept_errors = 0
        self.in_flight = 0
        self.rejected_in_flight = 0
        self.rejected_timeout = 0
        self.rejected_unauthorized = 0


class Credentials:
    """Checks basic-auth credentials against bcrypt hashes, remembering verified pairs."""

    MAX_REMEMBERED = 4096

    def __init__(self, users: dict[str, str]) -> None:
        self._users = {user: hashed.encode() for user, hashed in users.items()}
        self._verified: dict[bytes, bool] = {}
        # Unknown users are checked against a real hash of the same cost, so the time an answer takes
        # does not tell which user names exist.
        self._dummy = b""
        if self._users:
            import bcrypt

            # The highest cost in use: an unknown user never answers faster than the slowest real one.
            cost = max(int(hashed[4:6]) for hashed in self._users.values())
            self._dummy = bcrypt.hashpw(b"hypermesh: no such user", bcrypt.gensalt(rounds=cost))

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    def _parse(self, header: bytes | None) -> tuple[bytes, bytes, bytes | None] | None:
        """(user, password, its hash or None) from an Authorization header, or None if malformed."""
        if header is None or header[:6].lower() != b"basic ":
            return None
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True)
        except ValueError:
            return None
        user_bytes, sep, password = decoded.partition(b":")
        if not sep:
            return None
        return user_bytes, password, self._users.get(user_bytes.decode("utf-8", "replace"))

    @staticmethod
    def _key(user: bytes, password: bytes, hashed: bytes | None) -> bytes:
        return hashlib.sha256(user + b"\0" + password + b"\0" + (hashed or b"")).digest()

    def cached(self, header: bytes | None) -> bool | None:
        """True/False if the answer is known without bcrypt (malformed or already verified), else None."""
        parsed = self._parse(header)
        if parsed is None:
            return False
        return self._verified.get(self._key(*parsed))

    async def check(self, header: bytes | None) -> bool:
        parsed = self._parse(header)
        if parsed is None:
            return False
        user_bytes, password, hashed = parsed
        key = self._key(user_bytes, password, hashed)
        known = self._verified.get(key)
        if known is not None:
            return known
        ok = await asyncio.to_thread(_bcrypt_check, password, hashed or self._dummy)
        ok = ok and hashed is not None
        if len(self._verified) >= self.MAX_REMEMBERED:
            self._verified.clear()
        self._verified[key] = ok
        return ok


def _bcrypt_check(password: bytes, hashed: bytes) -> bool:
    import bcrypt

    try:
        return bool(bcrypt.checkpw(password, hashed))
    except ValueError:
        return False


async def _send_plain(send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = (text + "\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: in-flight lanes, basic auth, timeout until the response starts (module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        max_in_flight: int,
        timeout_s: float,
        credentials: Credentials,
        stats: Stats,
        max_streams: int | None = None,
        max_verifying: int = MAX_VERIFYING,
    ) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.max_streams = max_in_flight if max_streams is None else max_streams
        self.max_verifying = max_verifying
        self.timeout_s = timeout_s
        self.credentials = credentials
        self.stats = stats
        self._lanes = {"metrics": 0, "stream": 0, "api": 0}
        self._verifying = 0

    def _cap(self, lane: str) -> int:
        return self.max_streams if lane == "stream" else self.max_in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        safe = _SafeSend(send)
        await self._guarded(scope, receive, safe)
        if safe.failed:
            # The server already closed the connection; wait (briefly) until it has noticed, so it does
            # not report "returned without completing response" as an error for every such request.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    while (await receive())["type"] != "http.disconnect":
                        pass

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        stats = self.stats
        path = scope["path"]
        if sum(len(name) + len(value) for name, value in scope["headers"]) > MAX_HEADER_BYTES:
            await _send_plain(send, 431, f"request headers exceed {MAX_HEADER_BYTES} bytes", [])
            return
        if self.credentials.enabled and path not in OPEN_PATHS and not await self._authorized(scope, send):
            return
        if path in UNCAPPED_PATHS:
            stats.in_flight += 1
            try:
                await self._call_with_timeout(scope, receive, send)
            finally:
                stats.in_flight -= 1
            return
        lane = "stream" if path in STREAM_PATHS else "metrics" if path in METRICS_PATHS else "api"
        if self._lanes[lane] >= self._cap(lane):
            stats.rejected_in_flight += 1
            await _send_plain(send, 503, "too many requests in flight; retry shortly", [(b"retry-after", b"1")])
            return
        self._lanes[lane] += 1
        stats.in_flight += 1
        try:
            await self._call_with_timeout(scope, receive, send)
        finally:
            self._lanes[lane] -= 1
            stats.in_flight -= 1

    async def _authorized(self, scope: Scope, send: Send) -> bool:
        """Checks basic auth holding no request slot; answers 401 or 503 itself and returns False."""
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        ok = self.credentials.cached(header)
        if ok is None:
            if self._verifying >= self.max_verifying:
                self.stats.rejected_in_flight += 1
                await _send_plain(send, 503, "too many logins being verified; retry shortly", [(b"retry-after", b"1")])
                return False
            self._verifying += 1
            try:
                ok = await self.credentials.check(header)
            finally:
                self._verifying -= 1
        if not ok:
            self.stats.rejected_unauthorized += 1
            await _send_plain(send, 401, "unauthorized", [(b"www-authenticate", b'Basic realm="hypermesh"')])
        return ok

    async def _call_with_timeout(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False
        deadline: asyncio.Timeout | None = None

        async def send_marking(message: Message) -> None:
            nonlocal started
            if not started and message["type"] == "http.response.start":
                started = True
                if deadline is not None:
                    deadline.reschedule(None)  # the response is under way: a stream may live on
            await send(message)

        try:
            async with asyncio.timeout(self.timeout_s) as deadline:
                await self.app(scope, receive, send_marking)
        except TimeoutError:
            if started:
                raise
            self.stats.rejected_timeout += 1
            await _send_plain(send, 503, "request timed out", [(b"retry-after", b"1")])


class _SafeSend:
    """``send`` that, once the connection has failed under it, drops the rest of the response quietly.

    The server (uvicorn/h11) refuses to send on a connection it has already answered with 400 (a malformed
    chunked body) or lost: without this every such request would log a long "Exception in ASGI
    application" traceback, and anyone could flood the log with them.
    """

    __slots__ = ("_send", "failed")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.failed = False

    async def __call__(self, message: Message) -> None:
        if self.failed:
            return
        try:
            body = message.get("body", b"") if message["type"] == "http.response.body" else b""
            if len(body) <= WRITE_CHUNK_BYTES:
                await self._send(message)
                return
            view = memoryview(body)
            more_body = message.get("more_body", False)
            for start in range(0, len(view), WRITE_CHUNK_BYTES):
                piece = view[start : start + WRITE_CHUNK_BYTES]
                last = start + WRITE_CHUNK_BYTES >= len(view)
                await self._send({"type": "http.response.body", "body": piece, "more_body": more_body or not last})
        except Exception as exc:  # the connection is unusable; nothing more can reach this client
            self.failed = True
            log.debug("response dropped, connection failed: %s", type(exc).__name__)
