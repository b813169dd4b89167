"""The agent's guard: in-flight cap, request timeout and basic auth, as one plain ASGI middleware.

Order matters and is deliberate:

1. In-flight cap first: past ``max_in_flight`` a request gets 503 with ``Retry-After`` at once, before
   any work (not even a bcrypt check), so an overload cannot queue up and hang clients.
2. A header block over MAX_HEADER_BYTES gets 431.
3. Basic auth (when users are configured): bcrypt is slow by design (~0.2 s at cost 12), so it runs
   in a worker thread, and a verified (user, password) pair is remembered by its SHA-256 for the
   process lifetime, as exporter-toolkit does; Prometheus then costs one dict lookup per scrape.
   ``/healthz`` stays open so a supervisor can probe liveness without credentials; it reveals nothing.
4. A timeout bounds the time until the response starts: a stuck handler gets 503, not a hang.
   Streams (SSE) start their response at once and then live as long as their client.

Nothing here logs a header or a credential.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping
    from typing import Any

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/healthz"})
# Total size of request header names and values we accept (Go's net/http default is 1 MiB; our clients
# are Prometheus and browsers, whose headers are a few hundred bytes). uvicorn's h11 parser separately
# refuses an incomplete header block past 128 KiB.
MAX_HEADER_BYTES = 16 * 1024


class Stats:
    """Counters the guard keeps; exported by the agent collector."""

    __slots__ = ("in_flight", "rejected_in_flight", "rejected_timeout", "rejected_unauthorized")

    def __init__(self) -> None:
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

            cost = int(next(iter(self._users.values()))[4:6])
            self._dummy = bcrypt.hashpw(b"hypermesh: no such user", bcrypt.gensalt(rounds=cost))

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    async def check(self, header: bytes | None) -> bool:
        if header is None or header[:6].lower() != b"basic ":
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True)
        except ValueError:
            return False
        user_bytes, sep, password = decoded.partition(b":")
        if not sep:
            return False
        user = user_bytes.decode("utf-8", "replace")
        hashed = self._users.get(user)
        key = hashlib.sha256(user_bytes + b"\0" + password + b"\0" + (hashed or b"")).digest()
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
    """ASGI middleware: in-flight cap, basic auth, timeout until the response starts."""

    def __init__(
        self,
        app: ASGIApp,
        max_in_flight: int,
        timeout_s: float,
        credentials: Credentials,
        stats: Stats,
    ) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.credentials = credentials
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stats = self.stats
        if stats.in_flight >= self.max_in_flight:
            stats.rejected_in_flight += 1
            await _send_plain(send, 503, "too many requests in flight; retry shortly", [(b"retry-after", b"1")])
            return
        stats.in_flight += 1
        try:
            if sum(len(name) + len(value) for name, value in scope["headers"]) > MAX_HEADER_BYTES:
                await _send_plain(send, 431, f"request headers exceed {MAX_HEADER_BYTES} bytes", [])
                return
            if self.credentials.enabled and scope["path"] not in OPEN_PATHS:
                header = None
                for name, value in scope["headers"]:
                    if name == b"authorization":
                        header = value
                        break
                if not await self.credentials.check(header):
                    stats.rejected_unauthorized += 1
                    await _send_plain(send, 401, "unauthorized", [(b"www-authenticate", b'Basic realm="hypermesh"')])
                    return
            await self._call_with_timeout(scope, receive, send)
        finally:
            stats.in_flight -= 1

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
