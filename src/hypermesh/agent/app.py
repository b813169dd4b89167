"""The node agent's web application: one Sampler shared by every endpoint, served by Starlette.

- A sampler thread takes a Sample every ``interval`` and keeps the last ones in a ring buffer,
  already serialized to JSON: a sample is encoded once, not once per client, so 200 dashboards cost
  200 byte copies. ``/v1/sample``, ``/v1/samples?since=`` and the ``/v1/stream`` SSE feed read it.
- ``/metrics`` does a fresh read of the raw counters per scrape (``Sampler.counters()``), never the
  rates: Prometheus computes rates from ``_total`` counters itself.
- The profile and the eBPF status are read once at start (they describe the machine, not its load).
- Every data endpoint answers GET and HEAD only; anything else is 405 (Starlette's routing does it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import os
import re
import threading
import time
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Match, Mount, Route, Router
from starlette.staticfiles import StaticFiles

from hypermesh.agent import metrics
from hypermesh.agent.config import AgentConfig
from hypermesh.agent.connections import WRITE_CHUNK_BYTES
from hypermesh.agent.programs import NOT_PROBED, AgentPrograms, EbpfStatus, read_ebpf_status
from hypermesh.agent.security import Credentials, Guard, Stats

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from typing import Any

    from hypermesh.model import Counters, Sample, SystemProfile
    from hypermesh.sampling.sampler import Sampler

log = logging.getLogger("hypermesh.agent")

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
MAX_SAMPLES_PER_RESPONSE = 3600
# Query numbers: ASCII digits, an optional sign, fraction and exponent for since; nothing else (no spaces, no "_").
DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
WHOLE = re.compile(r"[0-9]{1,19}")
MAX_SEQUENCE = 2**63 - 1  # the schema's maximum for after=, far past any count
# A collector that keeps failing is logged again this often (and when its failure changes or ends).
FAILURE_LOG_INTERVAL_S = 600.0
# The page loads only its own files: no inline script, no third party, not framable.
PAGE_HEADERS = {
    "cache-control": "no-cache",
    "content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
}


class AgentState:
    """What every endpoint shares: the sampler, its history, the profile, the eBPF status, the stats."""

    def __init__(
        self,
        config: AgentConfig,
        sampler: Sampler,
        version: str,
        profile_reader: Callable[[], SystemProfile] | None = None,
        ebpf_reader: Callable[[], EbpfStatus] | None = None,
    ) -> None:
        self.config = config
        self.sampler = sampler
        self.version = version
        self.started = time.time()
        self.stats = Stats()
        self.samples_taken = 0
        self.sampler_error: str | None = None
        # (Unix time, JSON, sequence number). Streams follow the sequence number, not the time: the wall clock can
        # step back (NTP, a resumed VM), and a stream waiting for a later time would stall until the clock caught up.
        self._history: collections.deque[tuple[float, bytes, int]] = collections.deque(maxlen=config.history_samples)
        self._sequence = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._new_sample: asyncio.Event | None = None
        # Requests waiting in next_sample(): the sampler thread wakes the event loop only for them. At 100 Hz a wake
        # per sample with nobody waiting cost a loop iteration and two thread switches each time.
        self._waiters = 0
        self._profile_reader = profile_reader
        self._ebpf_reader = ebpf_reader or read_ebpf_status
        self.profile: SystemProfile | None = None
        self.profile_json = b"null"
        self.profile_error: str | None = None
        self.ebpf_status = NOT_PROBED
        self.programs = AgentPrograms(list(config.ebpf_programs))
        # Set by the server: true once it is shutting down (streams end then).
        self.closing: Callable[[], bool] = lambda: False
        self.collectors = metrics.default_collectors(version)
        self.writer = metrics.TextWriter()
        self._failures_logged: dict[str, tuple[str, float]] = {}
        self._scrape: asyncio.Future[tuple[list[metrics.Family], list[str]]] | None = None

    # ------------------------------------------------------------------------------ life cycle

    def start(self) -> None:
        """Read the profile and eBPF status, then start sampling (call from the event loop)."""
        self._loop = asyncio.get_running_loop()
        self._new_sample = asyncio.Event()
        reader = self._profile_reader
        if reader is None:
            from hypermesh import profile

            reader = profile
        try:
            self.profile = reader()
            self.profile_json = json.dumps(as_dict(self.profile)).encode()
        except Exception as exc:  # the agent still serves samples and metrics without a profile
            self.profile_error = f"{type(exc).__name__}: {exc}"
            log.warning("profile unavailable: %s", self.profile_error)
        self.ebpf_status = self._ebpf_reader()
        self.programs.start()
        self._thread = threading.Thread(target=self._run_sampler, name="hypermesh-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.interval_s + 2.0)
        self.programs.close()
        self.sampler.close()

    def _run_sampler(self) -> None:
        while not self._stop.is_set():
            try:
                for sample in self.sampler.stream(self.config.interval_s, stop=self._stop):
                    self._record(sample)
                    if self._stop.is_set():
                        return
            except Exception as exc:  # keep sampling: a transient read error must not kill the agent
                self.sampler_error = f"{type(exc).__name__}: {exc}"
                log.warning("sampler error (retrying): %s", self.sampler_error)
                self._stop.wait(max(self.config.interval_s, 1.0))

    def _record(self, sample: Sample) -> None:
        data = json.dumps(as_dict(sample), separators=(",", ":")).encode()
        with self._lock:
            self._sequence += 1
            self._history.append((sample.timestamp, data, self._sequence))
            self.samples_taken += 1
        self.sampler_error = None
        loop = self._loop
        # A waiter counts itself before it looks at the history (next_sample): either it is counted here, or it
        # sees the sample just appended. The loop may close between the check and the call (shutdown): nothing to
        # wake then.
        if self._waiters and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        event = self._new_sample
        self._new_sample = asyncio.Event()
        if event is not None:
            event.set()

    # --------------------------------------------------------------------------------- reading

    def latest(self) -> tuple[float, bytes, int] | None:
        with self._lock:
            return self._history[-1] if self._history else None

    def since(self, since: float, limit: int, after: int = 0) -> tuple[list[bytes], int]:
        """Samples taken after Unix time ``since`` and numbered after ``after`` (at most the last ``limit``), and
        the latest sequence number.

        ``after`` follows the agent's own count, which the wall clock cannot disturb: a poller asking since=its last
        timestamp got nothing after the agent's clock stepped back, until the clock caught up.
        """
        with self._lock:
            items = list(self._history)
            latest = self._sequence
        newer = [data for ts, data, sequence in items if sequence > after and ts > since]
        return newer[-limit:], latest

    async def next_sample(self, after: int, timeout: float) -> tuple[float, bytes, int] | None:
        """The first sample after sequence number ``after``, waiting up to ``timeout`` seconds for one."""
        deadline = time.monotonic() + timeout
        self._waiters += 1  # before looking: see _record
        try:
            while True:
                latest = self.latest()
                if latest is not None and latest[2] > after:
                    return latest
                remaining = deadline - time.monotonic()
                event = self._new_sample
                if remaining <= 0 or event is None:
                    return None
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    return None
        finally:
            self._waiters -= 1

    def counters(self) -> Counters:
        return self.sampler.counters()

    def scrape(self) -> tuple[list[metrics.Family], list[str]]:
        stats = self.stats
        scrape = metrics.Scrape(
            self.counters,
            self.profile,
            self.ebpf_status,
            {
                "samples": float(self.samples_taken),
                "in_flight": float(stats.in_flight),
                "rejected_in_flight": float(stats.rejected_in_flight),
                "rejected_timeout": float(stats.rejected_timeout),
                "rejected_unauthorized": float(stats.rejected_unauthorized),
                "connections": float(stats.connections),
                "connections_header_timeout": float(stats.connections_header_timeout),
                "connections_evicted": float(stats.connections_evicted),
                "connections_refused": float(stats.connections_refused),
                "connections_send_timeout": float(stats.connections_send_timeout),
                "accept_errors": float(stats.accept_errors),
            },
            self.programs.readings,
            self.sampler.node_stats,
            self.sampler.unreadable_sources,
        )
        return metrics.collect(self.collectors, scrape)

    def report_failures(self, failures: list[str]) -> None:
        """Log each collector's failure when it starts or changes, and again every FAILURE_LOG_INTERVAL_S while it
        lasts; and when it ends. Prometheus scrapes every few seconds: a line per scrape would drown the log."""
        now = time.monotonic()
        failing = {}
        for failure in failures:
            area = failure.split(":", 1)[0]
            failing[area] = failure
            logged = self._failures_logged.get(area)
            if logged is None or logged[0] != failure or now - logged[1] >= FAILURE_LOG_INTERVAL_S:
                log.warning("collector failed: %s", failure)
                self._failures_logged[area] = (failure, now)
        for area in [a for a in self._failures_logged if a not in failing]:
            del self._failures_logged[area]
            log.warning("collector %s works again", area)

    async def scrape_shared(self) -> tuple[list[metrics.Family], list[str]]:
        """``scrape()`` in a worker thread, one at a time: scrapes that arrive while one runs share its result.

        A scrape can take a while by design (statvfs of a hung network mount waits up to 1 s per call); on the event
        loop it held up every endpoint, /healthz included, and no request timeout could interrupt it. Here the loop
        stays free and the guard's timeout answers 503; the thread finishes on its own and later scrapes join it
        instead of piling up more threads behind a stuck read.

        Where nothing in it can wait on anything but the kernel (no network or FUSE filesystem as of the last
        scrape, none running), the scrape runs on the loop itself: procfs, sysfs and bpf() answer in microseconds,
        and the hop to a thread and back costs 0.25-0.5 ms, a tenth of the whole scrape.
        """
        running = self._scrape
        if running is None and not self.sampler.node_stats_may_block():
            return self.scrape()
        if running is None:
            running = asyncio.ensure_future(asyncio.to_thread(self.scrape))
            self._scrape = running

            def finished(future: asyncio.Future[tuple[list[metrics.Family], list[str]]]) -> None:
                if self._scrape is future:
                    self._scrape = None
                if not future.cancelled():
                    future.exception()  # retrieved here, raised to the waiters: no "never retrieved" warning

            running.add_done_callback(finished)
        # shield: a waiter that times out must not cancel the scrape the others are waiting for.
        return await asyncio.shield(running)

    def assets(self) -> dict[str, Any]:
        return assets_from_profile(self.profile)


def as_dict(record: object) -> Any:
    """A model record as JSON builtins (``@record`` adds ``to_dict`` at run time, unseen by mypy)."""
    return record.to_dict()  # type: ignore[attr-defined,unused-ignore]


def assets_from_profile(profile: SystemProfile | None) -> dict[str, Any]:
    """Capacities from the system profile, until the assets module exists (documented in docs/agent.md)."""
    if profile is None:
        return {"source": "unavailable", "cpu": None, "memory": None, "storage": [], "network": [], "gpu": []}
    return {
        "source": "profile",
        "cpu": {
            "model": profile.cpu.model,
            "logical_cores": profile.cpu.logical_cores,
            "physical_cores": profile.cpu.physical_cores,
        },
        "memory": {
            "total_bytes": profile.memory.total_bytes,
            "swap_total_bytes": profile.memory.swap_total_bytes,
        },
        "storage": [
            {"name": d.name, "kind": d.kind, "size_bytes": d.size_bytes, "model": d.model} for d in profile.storage
        ],
        "network": [
            {"name": n.name, "kind": n.kind, "up": n.up, "speed_mbps": n.speed_mbps, "mtu": n.mtu}
            for n in profile.network
        ],
        "gpu": list(profile.gpus),
    }


# ---------------------------------------------------------------------------------- endpoints

JSON_TYPE = "application/json"


class PartsResponse(Response):
    """A body made of already-encoded parts (the ring buffer's samples), sent in pieces without joining it whole.

    An hour of samples is megabytes; joined per request, every client that does not read kept its own copy (100
    of them: +300 MB). The parts are the ring buffer's own bytes, so a request costs a list of references and
    one piece of WRITE_CHUNK_BYTES at a time.
    """

    def __init__(self, parts: list[bytes], media_type: str) -> None:
        super().__init__(b"", media_type=media_type)
        self.parts = parts
        self.headers["content-length"] = str(sum(len(part) for part in parts))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        piece: list[bytes] = []
        size = 0
        for part in self.parts:
            piece.append(part)
            size += len(part)
            if size >= WRITE_CHUNK_BYTES:
                await send({"type": "http.response.body", "body": b"".join(piece), "more_body": True})
                piece, size = [], 0
        await send({"type": "http.response.body", "body": b"".join(piece), "more_body": False})


def _authorization(request: Request) -> bytes | None:
    for name, value in request.headers.raw:
        if name == b"authorization":
            return value
    return None


def _slash_redirect(router: Router) -> Callable[..., Awaitable[None]]:
    """404, or a redirect to the same path with its trailing slash added or removed when that path exists."""

    async def not_found_or_redirect(scope: dict[str, Any], receive: Any, send: Any) -> None:
        path: str = scope["path"]
        if scope["type"] == "http" and path != "/":
            other = path.rstrip("/") if path.endswith("/") else path + "/"
            # Never "//...": a Location that starts so names another host.
            if other.startswith("/") and not other.startswith("//"):
                probe = dict(scope, path=other)
                if any(route.matches(probe)[0] is not Match.NONE for route in router.routes):
                    location = quote(other, safe="/:@!$&'()*+,;=")
                    query = scope.get("query_string", b"").decode("latin-1")
                    response = Response(
                        status_code=307, headers={"location": f"{location}?{query}" if query else location}
                    )
                    await response(scope, receive, send)
                    return
        await router.not_found(scope, receive, send)

    return not_found_or_redirect


def _json_error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def build_app(state: AgentState) -> Guard:
    async def metrics_endpoint(request: Request) -> Response:
        families, failures = await state.scrape_shared()
        state.report_failures(failures)
        if metrics.wants_openmetrics(request.headers.get("accept", "")):
            return Response(state.writer.render(families, openmetrics=True), media_type=metrics.OPENMETRICS_TYPE)
        return Response(state.writer.render(families), media_type=metrics.TEXT_TYPE)

    async def profile_endpoint(request: Request) -> Response:
        if state.profile is None:
            return _json_error(503, f"profile unavailable: {state.profile_error}")
        return Response(state.profile_json, media_type=JSON_TYPE)

    async def sample_endpoint(request: Request) -> Response:
        latest = state.latest()
        if latest is None:
            latest = await state.next_sample(0, min(state.config.interval_s * 2 + 1.0, 5.0))
        if latest is None:
            return _json_error(503, "no sample taken yet; retry in a second")
        return Response(latest[1], media_type=JSON_TYPE)

    async def samples_endpoint(request: Request) -> Response:
        params = request.query_params
        extra = sorted(set(params) - {"since", "after", "limit"})
        if extra:
            return _json_error(400, f"unknown query parameter {extra[0]!r}; known: since, after, limit")
        for name in ("since", "after", "limit"):
            if len(params.getlist(name)) > 1:
                return _json_error(400, f"{name} is given twice; give it once")
        # Checked against a plain decimal grammar first: Python's float() and int() also take "1_000", " 5 " and
        # "²", which no client means.
        since_text = params.get("since", "0")
        if not DECIMAL.fullmatch(since_text):
            return _json_error(400, "since must be a Unix time in seconds, e.g. since=1700000000.5")
        since = float(since_text)
        if not math.isfinite(since):
            return _json_error(400, "since must be a finite Unix time in seconds")
        limit_text = params.get("limit", str(MAX_SAMPLES_PER_RESPONSE))
        if not WHOLE.fullmatch(limit_text) or not 1 <= int(limit_text) <= MAX_SAMPLES_PER_RESPONSE:
            return _json_error(400, f"limit must be a whole number 1..{MAX_SAMPLES_PER_RESPONSE}")
        limit = int(limit_text)
        after_text = params.get("after", "0")
        if not WHOLE.fullmatch(after_text) or int(after_text) > MAX_SEQUENCE:
            return _json_error(400, f"after must be a sequence number 0..{MAX_SEQUENCE}, e.g. after=1234")
        items, latest = state.since(since, limit, int(after_text))
        parts = [b'{"interval_s":%s,"sequence":%d,"samples":[' % (repr(state.config.interval_s).encode(), latest)]
        for index, item in enumerate(items):
            if index:
                parts.append(b",")
            parts.append(item)
        parts.append(b"]}")
        return PartsResponse(parts, media_type=JSON_TYPE)

    async def stream_endpoint(request: Request) -> Response:
        if request.method == "HEAD":
            # Headers only, and the response ends here. Streaming to a HEAD would send nothing (the server drops
            # a HEAD's body), so the client could never reuse its connection, and the stream (and its slot) would
            # live on until the server noticed the client gone, which it never does once that client has sent
            # its next request on the connection.
            head = Response(media_type="text/event-stream", headers={"cache-control": "no-store"})
            del head.headers["content-length"]  # as the GET's: no length, the body is open-ended
            return head

        async def events() -> AsyncIterator[bytes]:
            after = 0
            latest = state.latest()
            if latest is not None:
                after = latest[2]
                yield b"data: %s\nid: %d\n\n" % (latest[1], after)
            quiet_since = time.monotonic()
            # Checked every second: an open stream must not hold up the server's graceful shutdown.
            while not state.closing():
                item = await state.next_sample(after, 1.0)
                if item is None:
                    if time.monotonic() - quiet_since > 15.0:
                        quiet_since = time.monotonic()
                        yield b": keep-alive\n\n"  # lets proxies and the client see a live connection
                    continue
                after = item[2]
                quiet_since = time.monotonic()
                # id: the sample's sequence number (EventSource's lastEventId), what a poller gives as after=.
                yield b"data: %s\nid: %d\n\n" % (item[1], after)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-store"})

    async def assets_endpoint(request: Request) -> Response:
        return JSONResponse(state.assets())

    async def ebpf_endpoint(request: Request) -> Response:
        return JSONResponse(dict(state.ebpf_status.to_dict(), programs=state.programs.summary()))

    credentials = Credentials(dict(state.config.basic_auth_users))

    async def health_endpoint(request: Request) -> Response:
        latest = state.latest()
        age = None if latest is None else round(time.time() - latest[0], 3)
        healthy = state.sampler_error is None
        body = {
            "status": "ok" if healthy else "degraded",
            "version": state.version,
            "uptime_s": round(time.time() - state.started, 3),
            "samples_taken": state.samples_taken,
            "last_sample_age_s": age,
            "sampler_error": state.sampler_error,
        }
        # /healthz is open to anyone, so with auth on an anonymous client learns only whether the agent is well: the
        # version names the exploits worth trying, uptime (and samples_taken, uptime over the interval) when the host
        # was last rebooted or patched, a sampler error paths on the host. Credentials verified before see it all
        # (only cached ones: a bcrypt run here would bypass the guard's cap on logins being checked).
        if credentials.enabled and credentials.cached(_authorization(request)) is not True:
            body = {"status": body["status"], "last_sample_age_s": age}
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def openapi_endpoint(request: Request) -> Response:
        return JSONResponse(openapi_schema(state.version))

    async def index_endpoint(request: Request) -> Response:
        return FileResponse(f"{STATIC_DIR}/index.html", headers=PAGE_HEADERS)

    get = ["GET"]  # Starlette adds HEAD to every GET route
    routes = [
        Route("/", index_endpoint, methods=get),
        Route("/metrics", metrics_endpoint, methods=get),
        Route("/healthz", health_endpoint, methods=get),
        Route("/openapi.json", openapi_endpoint, methods=get),
        Route("/v1/profile", profile_endpoint, methods=get),
        Route("/v1/sample", sample_endpoint, methods=get),
        Route("/v1/samples", samples_endpoint, methods=get),
        Route("/v1/stream", stream_endpoint, methods=get),
        Route("/v1/assets", assets_endpoint, methods=get),
        Route("/v1/ebpf", ebpf_endpoint, methods=get),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.start()
        try:
            yield
        finally:
            await asyncio.to_thread(state.stop)

    app = Starlette(routes=routes, lifespan=lifespan)
    # Starlette's own slash redirect writes an absolute URL built from the request's Host header into Location: a
    # client (or a proxy's cache) could be sent to any host it named. Ours is relative, on the same host.
    app.router.redirect_slashes = False
    app.router.default = _slash_redirect(app.router)
    return Guard(
        app,
        state.config.max_in_flight,
        state.config.request_timeout_s,
        credentials,
        state.stats,
        max_streams=state.config.max_streams,
    )


# ------------------------------------------------------------------------------------- OpenAPI


def openapi_schema(version: str) -> dict[str, Any]:
    def get(
        path: str,
        summary: str,
        content: str | list[str],
        schema: dict[str, Any],
        params: list[dict[str, Any]] | None = None,
    ) -> Any:
        types = [content] if isinstance(content, str) else content
        responses: dict[str, Any] = {
            "200": {"description": summary, "content": {kind: {"schema": schema} for kind in types}}
        }
        if params:
            responses["400"] = {
                "description": "a query value is malformed",
                "content": {JSON_TYPE: {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        if path != "/healthz":
            responses["401"] = {"$ref": "#/components/responses/Unauthorized"}
        responses["405"] = {"$ref": "#/components/responses/MethodNotAllowed"}
        responses["431"] = {"$ref": "#/components/responses/HeadersTooLarge"}
        responses["503"] = {"$ref": "#/components/responses/Unavailable"}
        op: dict[str, Any] = {"summary": summary, "responses": responses}
        if params:
            op["parameters"] = params
        return {"get": op}

    obj = {"type": "object"}
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "hypermesh node agent",
            "version": version,
            "description": "Samples, profile, eBPF status and Prometheus metrics of one machine.",
        },
        "paths": {
            "/healthz": get("/healthz", "liveness and sampler health", JSON_TYPE, obj),
            "/metrics": get(
                "/metrics",
                "Prometheus text format 0.0.4, or OpenMetrics 1.0 when the Accept header prefers it",
                [metrics.TEXT_TYPE.split(";")[0], metrics.OPENMETRICS_TYPE.split(";")[0]],
                {"type": "string"},
            ),
            "/v1/profile": get("/v1/profile", "what this machine is (SystemProfile)", JSON_TYPE, obj),
            "/v1/sample": get("/v1/sample", "the latest sample (rates over the last interval)", JSON_TYPE, obj),
            "/v1/samples": get(
                "/v1/samples",
                "samples newer than `since` (Unix time) and numbered after `after`, oldest first; with `limit`, the newest "
                "`limit` of them",
                JSON_TYPE,
                {
                    "type": "object",
                    "required": ["interval_s", "sequence", "samples"],
                    "properties": {
                        "interval_s": {"type": "number"},
                        "sequence": {"type": "integer", "description": "the latest sample's sequence number"},
                        "samples": {"type": "array", "items": obj},
                    },
                },
                [
                    {
                        "name": "since",
                        "in": "query",
                        "required": False,
                        "description": "Unix time in seconds; only samples taken after it",
                        "schema": {"type": "number"},
                    },
                    {
                        "name": "after",
                        "in": "query",
                        "required": False,
                        "description": "sequence number (the stream's event id); only samples numbered after it",
                        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_SEQUENCE},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_SAMPLES_PER_RESPONSE},
                    },
                ],
            ),
            "/v1/stream": get(
                "/v1/stream",
                "server-sent events: one `data: <Sample JSON>` line pair per new sample, until the client leaves",
                "text/event-stream",
                {"type": "string"},
            ),
            "/": get("/", "the live dashboard (HTML; its files are under /static/)", "text/html", {"type": "string"}),
            "/v1/assets": get("/v1/assets", "capacities: cpu, memory, storage, network, gpu", JSON_TYPE, obj),
            "/v1/ebpf": get("/v1/ebpf", "eBPF availability and feature probe", JSON_TYPE, obj),
            "/openapi.json": get("/openapi.json", "this document", JSON_TYPE, obj),
        },
        "components": {
            "responses": {
                "Unauthorized": {
                    "description": "basic auth is configured and the credentials are missing or wrong",
                    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                },
                "MethodNotAllowed": {
                    "description": "never for GET or HEAD: every other method gets 405 (listed here for completeness)"
                },
                "HeadersTooLarge": {"description": "the request headers exceed 16 KiB"},
                "Unavailable": {
                    "description": "overloaded (in-flight or connection cap), timed out, or no data yet; retry "
                    "after Retry-After seconds",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                }
            },
        },
    }
