"""The agent's guard: in-flight caps, request timeout and basic auth, as one plain ASGI middleware.

Order matters and is deliberate; no anonymous flood can starve ``/healthz`` or an authenticated scrape:

1. A header block over MAX_HEADER_BYTES gets 431.
2. ``/healthz`` takes no slot at all (it is a dict lookup and reveals nothing), so a supervisor's liveness
   probe is never refused for load.
3. Basic auth (when users are configured) runs before any slot is taken. What is known without bcrypt is
   answered at once, on the event loop: a malformed header or a password over 72 bytes (bcrypt cannot
   check it) gets 401; a verified (user, password) pair, remembered by its SHA-256 for the process lifetime
   as exporter-toolkit does, passes, so Prometheus costs one set lookup per scrape and never waits behind
   a login; a refused pair remembered among the last MAX_FAILED gets 401. Refusals are kept apart from
   verified pairs, so no flood of failures can push a verified pair out. Anything else needs bcrypt
   (slow by design, ~0.3 s at cost 12 here) in the ``LoginLane``: one check at a time, at most
   VERIFY_CPU_SHARE of one core on average, a short queue served round-robin over client addresses
   (bounded per address, in all and in time, then 503 + ``Retry-After``), so a login from an address that
   is not flooding gets through in about one check per flooding address. Every check runs bcrypt once at
   each configured cost (the user's hash at its cost, dummies at the others; only dummies for an unknown
   name), so answers take the same time whichever user is named, known or not. See ``LoginLane``.
4. Lanes, each with its own cap, each answering 503 + ``Retry-After`` at once when full (before any work,
   so an overload cannot queue up and hang clients): ``/metrics`` (``max_in_flight``), ``/v1/stream``
   and ``/v1/events`` event streams (``max_streams``: they live as long as their client) and every other request
   (``max_in_flight``). A flood of /v1 requests or of open streams cannot take a scrape's slot.
5. A timeout bounds the time until the response starts: a stuck handler gets 503, not a hang.
   Streams (SSE) start their response at once and then live as long as their client.
6. A response body is handed to the server in pieces of ``guards.WRITE_CHUNK_BYTES``; uvicorn waits for
   the connection's buffer to drain between them, so the request keeps its slot until its body is sent and a
   client that does not read holds one piece of memory, not the whole body (the send timeout then drops it).
7. If the connection fails under a request (a client gone, a malformed body the server already answered
   with 400), the rest of the response is dropped quietly instead of logging a traceback per request.

Nothing here logs a header or a credential.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import functools
import hashlib
import ipaddress
import logging
import secrets
import time

from hypermesh.agent.guards import WRITE_CHUNK_BYTES, Stats

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping
    from typing import Any

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

__all__ = [
    "MAX_PASSWORD_BYTES",
    "STREAM_PATHS",
    "VERIFY_BURST_S",
    "VERIFY_CPU_SHARE",
    "Credentials",
    "Guard",
    "LoginLane",
    "client_source",
]

log = logging.getLogger("hypermesh.agent")

OPEN_PATHS = frozenset({"/healthz"})
# Paths served without taking a slot (trivial, and what supervisors probe).
UNCAPPED_PATHS = frozenset({"/healthz"})
STREAM_PATHS = frozenset({"/v1/stream", "/v1/events"})
METRICS_PATHS = frozenset({"/metrics"})
# bcrypt checks only the first 72 bytes; bcrypt 5 refuses a longer password (in ~1 µs, which made such
# guesses a cheap way to fill the old shared cache), older releases silently cut it. Refused before queueing.
MAX_PASSWORD_BYTES = 72
# The login lane (LoginLane): credentials not yet verified cost bcrypt, one check at a time, using at most
# this share of one core on average, after a burst of this many CPU seconds (a few logins at once when idle).
# A quarter core: a monitoring agent must not become the host's load, and new logins are rare (Prometheus
# logs in once, a browser once a session), so even at cost 12 (~0.3 s) this answers ~0.8 new logins a
# second beyond the burst of ~3, and a login from an address that is not flooding waits ~1.5 s at worst.
VERIFY_CPU_SHARE = 0.25
VERIFY_BURST_S = 1.0
# Logins waiting for a check: per client address, in all, and how long one may wait before 503.
MAX_WAITING_PER_SOURCE = 4
MAX_WAITING = 64
MAX_WAIT_S = 5.0
# Total size of request header names and values we accept (Go's net/http default is 1 MiB; our clients
# are Prometheus and browsers, whose headers are a few hundred bytes). uvicorn's h11 parser separately
# refuses an incomplete header block past 128 KiB.
MAX_HEADER_BYTES = 16 * 1024


class Login:
    """Credentials from one Authorization header that no answer is known for yet."""

    __slots__ = ("cost", "hashed", "key", "password")

    def __init__(self, password: bytes, hashed: bytes | None, cost: int | None, key: bytes) -> None:
        self.password = password
        self.hashed = hashed  # None: no such user
        self.cost = cost
        self.key = key


class Credentials:
    """Checks basic-auth credentials against bcrypt hashes, remembering answers (module docstring, point 3)."""

    # Verified pairs: only a right password gets in, so this holds about one entry per user; the cap only
    # guards against a user whose clients send many spellings of the right credentials. Past it a new
    # pair is still answered, just not remembered; nothing already verified is ever dropped.
    MAX_VERIFIED = 4096
    # Refused pairs, so a client with a stale password costs one bcrypt check, not one per request.
    # Anyone can fill this (a new guess is a new entry), which is why it is a separate structure whose
    # oldest entries make room: it can never push out a verified pair.
    MAX_FAILED = 1024

    def __init__(self, users: dict[str, str]) -> None:
        self._users = {user: (hashed.encode(), int(hashed[4:6])) for user, hashed in users.items()}
        self._verified: set[bytes] = set()
        self._failed: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        # One dummy hash per cost in use, cheapest first. Every check runs bcrypt once at every cost: at the
        # user's cost against the user's hash, at every other cost against that cost's dummy. An unknown
        # name runs all the dummies. So every check costs the same work whoever is named (the sum over the
        # costs, less than twice the dearest since each cost step doubles the work), and the time an answer
        # takes tells nothing about which names exist or how dear their hashes are. Padding with sleep
        # to the dearest cost's time instead would depend on an estimate that load changes under it.
        self._dummies: dict[int, bytes] = {}
        if self._users:
            import bcrypt

            for cost in sorted({cost for _, cost in self._users.values()}):
                secret = secrets.token_hex(16).encode()
                self._dummies[cost] = bcrypt.hashpw(secret, bcrypt.gensalt(rounds=cost))

    @property
    def enabled(self) -> bool:
        return bool(self._users)

    def lookup(self, header: bytes | None) -> bool | Login:
        """The answer if it is known without bcrypt, else the ``Login`` to ``verify``.

        Known at once: a malformed header, a password bcrypt cannot check (over MAX_PASSWORD_BYTES: bcrypt
        5 refuses it in ~1 µs, older releases silently cut it), and pairs remembered from earlier checks.
        """
        if header is None or header[:6].lower() != b"basic ":
            return False
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True)
        except ValueError:
            return False
        user_bytes, sep, password = decoded.partition(b":")
        if not sep or len(password) > MAX_PASSWORD_BYTES:
            return False
        hashed, cost = self._users.get(user_bytes.decode("utf-8", "replace"), (None, None))
        key = hashlib.sha256(user_bytes + b"\0" + password + b"\0" + (hashed or b"")).digest()
        if key in self._verified:
            return True
        if key in self._failed:
            return False
        return Login(password, hashed, cost, key)

    def verify(self, login: Login) -> bool:
        """Runs bcrypt at every configured cost (blocking: call it in a worker thread)."""
        ok = False
        for cost, dummy in self._dummies.items():
            if cost == login.cost:
                assert login.hashed is not None
                ok = _bcrypt_check(login.password, login.hashed)
            else:
                _bcrypt_check(login.password, dummy)
        return ok

    def remember(self, login: Login, ok: bool) -> None:
        """Keeps the answer of ``verify`` (on the event loop, so the sets are only touched from one thread)."""
        if ok:
            if len(self._verified) < self.MAX_VERIFIED:
                self._verified.add(login.key)
            return
        self._failed[login.key] = None
        if len(self._failed) > self.MAX_FAILED:
            self._failed.popitem(last=False)


def _bcrypt_check(password: bytes, hashed: bytes) -> bool:
    import bcrypt

    try:
        return bool(bcrypt.checkpw(password, hashed))
    except ValueError:
        return False


def client_source(scope: Scope) -> str:
    """The client address a login is queued under: the IPv4 address, or the IPv6 /64 (one host's share)."""
    client = scope.get("client")
    if not client:
        return "local"  # a Unix socket
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return str(client[0])
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        # One IPv6 host commonly holds a whole /64 and can send from any address in it.
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class _Waiter:
    __slots__ = ("future", "job", "started")

    def __init__(self, job: Callable[[], bool], future: asyncio.Future[bool]) -> None:
        self.job = job
        self.future = future
        self.started = False


class LoginLane:
    """bcrypt checks of credentials not yet verified: one at a time, CPU-bounded, fair across client addresses.

    Why this shape (an unknown-user flood must neither eat the host nor lock a new legitimate login out):

    - One check at a time, and a token bucket on the CPU time the checks really use (measured in the
      worker thread): over any window they use at most ``cpu_share`` of one core plus ``burst_s`` plus one
      check. An idle agent still answers a few new logins at once (the burst); under a flood the lane
      pauses between checks.
    - Requests wait in a short queue instead of getting 503 at once, so a login is not refused merely
      because a flood's request got there a millisecond earlier. The queue is bounded three ways: per client
      address (``per_source``; more get 503 at once), in total (``max_waiting``) and in time (``max_wait_s``,
      then 503), so waiting requests cannot pile up memory or hang clients.
    - The next check is taken round-robin over client addresses (each address's own requests in order), so a
      login from an address that is not flooding waits for at most one check per flooding address.
    - Nothing is preferred by user name: serving known names first would let an attacker who floods learn
      which names exist from which of his probes come back quickly. An attacker on the same address as a
      legitimate client (a shared NAT) is not told apart: that client may get 503 until the flood ends;
      Prometheus itself is unaffected once verified, because verified pairs never reach this lane.
    """

    def __init__(
        self,
        cpu_share: float = VERIFY_CPU_SHARE,
        burst_s: float = VERIFY_BURST_S,
        per_source: int = MAX_WAITING_PER_SOURCE,
        max_waiting: int = MAX_WAITING,
        max_wait_s: float = MAX_WAIT_S,
    ) -> None:
        self.cpu_share = cpu_share
        self.burst_s = burst_s
        self.per_source = per_source
        self.max_waiting = max_waiting
        self.max_wait_s = max_wait_s
        # source -> its waiters; dict order is the round-robin order (a served source moves to the end).
        self._queues: dict[str, collections.deque[_Waiter]] = {}
        self._waiting = 0
        self._tokens = burst_s
        self._refilled = time.monotonic()
        self._dispatcher: asyncio.Task[None] | None = None

    async def run(self, source: str, job: Callable[[], bool]) -> bool | None:
        """``job()``'s answer once the lane has run it in a worker thread, or None if refused (answer 503)."""
        queue = self._queues.get(source)
        if self._waiting >= self.max_waiting or (queue is not None and len(queue) >= self.per_source):
            return None
        waiter = _Waiter(job, asyncio.get_running_loop().create_future())
        if queue is None:
            queue = self._queues[source] = collections.deque()
        queue.append(waiter)
        self._waiting += 1
        if self._dispatcher is None:
            self._dispatcher = asyncio.create_task(self._dispatch())
        try:
            async with asyncio.timeout(self.max_wait_s):
                return await asyncio.shield(waiter.future)
        except TimeoutError:
            if waiter.started:  # its check is under way: the answer is at most one check away
                return await waiter.future
            self._forget(source, waiter)
            return None
        except asyncio.CancelledError:
            if not waiter.started:
                self._forget(source, waiter)
            raise

    def _forget(self, source: str, waiter: _Waiter) -> None:
        queue = self._queues.get(source)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            self._waiting -= 1
            if not queue:
                del self._queues[source]

    async def _dispatch(self) -> None:
        try:
            while self._queues:
                await self._await_budget()
                if not self._queues:
                    break  # every waiter gave up during the pause
                source = next(iter(self._queues))
                queue = self._queues.pop(source)
                waiter = queue.popleft()
                if queue:
                    self._queues[source] = queue  # its next request goes after every other address's
                self._waiting -= 1
                waiter.started = True
                try:
                    ok, cpu_s = await asyncio.to_thread(_timed, waiter.job)
                except Exception as exc:
                    if not waiter.future.done():
                        waiter.future.set_exception(exc)
                    continue
                self._tokens -= cpu_s
                if not waiter.future.done():
                    waiter.future.set_result(ok)
        finally:
            self._dispatcher = None

    async def _await_budget(self) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(self.burst_s, self._tokens + (now - self._refilled) * self.cpu_share)
            self._refilled = now
            if self._tokens >= 0:
                return
            await asyncio.sleep(-self._tokens / self.cpu_share)


def _timed(job: Callable[[], bool]) -> tuple[bool, float]:
    """``job()`` and the CPU time this thread spent in it (bcrypt runs here with the GIL released)."""
    started = time.thread_time()
    ok = job()
    return ok, time.thread_time() - started


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
        login_lane: LoginLane | None = None,
    ) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.max_streams = max_in_flight if max_streams is None else max_streams
        self.login_lane = LoginLane() if login_lane is None else login_lane
        self.timeout_s = timeout_s
        self.credentials = credentials
        self.stats = stats
        self._lanes = {"metrics": 0, "stream": 0, "api": 0}

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
        found = self.credentials.lookup(header)
        if isinstance(found, Login):
            ok = await self.login_lane.run(client_source(scope), functools.partial(self.credentials.verify, found))
            if ok is None:
                self.stats.rejected_in_flight += 1
                await _send_plain(send, 503, "too many logins being verified; retry shortly", [(b"retry-after", b"1")])
                return False
            self.credentials.remember(found, ok)
        else:
            ok = found
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
