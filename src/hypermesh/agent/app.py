"""The node agent's web application: the routes, served by Starlette behind the request guard (security.py).

- Every endpoint reads the shared AgentState (state.py): ``/v1/sample``, ``/v1/samples?since=`` and the
  ``/v1/stream`` SSE feed read its ring buffer of serialized samples; ``/metrics`` asks it for a scrape;
  ``/v1/events`` streams the exec events of the agent's execsnoop program (exec_feed.py), a bounded queue each.
- Every data endpoint answers GET and HEAD only; anything else is 405 (Starlette's routing does it). The
  exceptions write: POST /v1/allocations and DELETE /v1/allocations/{id} (allocations.py), PUT /v1/config
  (live_config.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import time
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Match, Mount, Route, Router
from starlette.staticfiles import StaticFiles

from hypermesh.agent import live_config, metrics
from hypermesh.agent.allocations import AllocationRoutes, json_body, write_refusal
from hypermesh.agent.cpu_profile import SVG_HEADERS, CpuProfiles, profile_support
from hypermesh.agent.guards import WRITE_CHUNK_BYTES
from hypermesh.agent.openapi import JSON_TYPE, MAX_SAMPLES_PER_RESPONSE, MAX_SEQUENCE, openapi_schema
from hypermesh.agent.security import Credentials, Guard
from hypermesh.agent.state import AgentState
from hypermesh.errors import HypermeshError, InvalidInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from typing import Any

    from hypermesh.agent.cluster_view import ClusterView

__all__ = ["build_app"]


log = logging.getLogger("hypermesh.agent")

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
# Query numbers: ASCII digits, an optional sign, fraction and exponent for since; nothing else (no spaces, no "_").
DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
WHOLE = re.compile(r"[0-9]{1,19}")
# The page loads only its own files: no inline script, no third party, not framable.
PAGE_HEADERS = {
    "cache-control": "no-cache",
    "content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
}


# ---------------------------------------------------------------------------------- endpoints


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
        if scope["type"] == "http" and path.startswith("/v1/"):
            # The API answers JSON, unmatched paths too: a DELETE /v1/allocations/{id} whose id holds a newline
            # matches no route (a path parameter stops at one), and schemathesis saw a text/plain 404 there.
            await _json_error(404, "no such API path: see /openapi.json for the API")(scope, receive, send)
            return
        await router.not_found(scope, receive, send)

    return not_found_or_redirect


def _json_error(status: int, message: str) -> Response:
    return JSONResponse({"error": message}, status_code=status)


def _config_view(state: AgentState) -> dict[str, Any]:
    view = live_config.live_view(state.config)
    return dict(view, generation=state.config_generation, hash=live_config.config_hash(view))


def _cluster_view(state: AgentState) -> ClusterView | None:
    if state.config.etcd_url is None:
        return None
    import socket

    from hypermesh.agent.cluster_view import ClusterView

    return ClusterView(state.config.etcd_url, state.config.node_id or socket.gethostname())


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

    async def events_endpoint(request: Request) -> Response:
        feed = state.programs.exec_feed()
        if feed is None:
            return _json_error(404, "exec events need the execsnoop program: start the agent with --ebpf execsnoop")
        if request.method == "HEAD":  # as /v1/stream's: headers only, no slot held by a body nobody reads
            head = Response(media_type="text/event-stream", headers={"cache-control": "no-store"})
            del head.headers["content-length"]
            return head
        subscriber = feed.subscribe(asyncio.get_running_loop())

        async def events() -> AsyncIterator[bytes]:
            try:
                quiet_since = time.monotonic()
                yield b": exec events of this machine, one per data line\n\n"  # the headers go out at once
                while not state.closing():
                    try:
                        data = await asyncio.wait_for(subscriber.queue.get(), 1.0)
                    except TimeoutError:
                        if time.monotonic() - quiet_since > 15.0:
                            quiet_since = time.monotonic()
                            yield b": keep-alive\n\n"
                        continue
                    quiet_since = time.monotonic()
                    dropped, subscriber.dropped = subscriber.dropped, 0
                    if dropped:  # this client fell behind: say how many it missed, in the event itself
                        data = data[:-1] + b',"dropped":%d}' % dropped
                    yield b"data: %s\n\n" % data
            finally:
                feed.unsubscribe(subscriber)

        return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-store"})

    async def assets_endpoint(request: Request) -> Response:
        # a thread: the storage adapter's statvfs of a mount may wait on its device
        return JSONResponse(await asyncio.to_thread(state.assets))

    async def ebpf_endpoint(request: Request) -> Response:
        return JSONResponse(dict(state.ebpf_status.to_dict(), programs=state.programs.summary()))

    credentials = Credentials(dict(state.config.basic_auth_users))
    cluster = _cluster_view(state)

    async def cluster_endpoint(request: Request) -> Response:
        if cluster is None:
            return _json_error(404, "this agent was not started with --etcd: it knows no cluster (docs/cluster.md)")
        return JSONResponse(await cluster.get())

    async def write_json(request: Request, action: str, what: str) -> Any:
        """The JSON of a write (PUT /v1/config, POST /v1/cpu-profile), or the Response refusing it: 403 from beyond
        loopback without auth, 415/413/400 for the body."""
        refusal = write_refusal(credentials.enabled, request, action)
        if refusal is not None:
            return refusal
        body = await json_body(request, what)
        if isinstance(body, Response):
            return body
        try:
            return json.loads(body)
        except ValueError:
            return _json_error(400, "the body is not JSON")

    config_lock = asyncio.Lock()

    async def config_endpoint(request: Request) -> Response:
        if request.method == "PUT":
            data = await write_json(request, "change the configuration", "a configuration")
            if isinstance(data, Response):
                return data
            async with config_lock:  # one change at a time: each is checked against the config it replaces
                try:
                    new = live_config.updated(state.config, data)
                except InvalidInput as exc:
                    return _json_error(422, str(exc))
                await asyncio.to_thread(state.apply_config, new)
        return JSONResponse(_config_view(state))

    profiles = CpuProfiles(state.config.request_timeout_s)

    async def cpu_profile_endpoint(request: Request) -> Response:
        available, why = profile_support(state.ebpf_status.available, state.ebpf_status.reason)
        if request.method != "POST":
            return JSONResponse(
                {"available": available, "reason": why, "max_seconds": profiles.max_seconds, "running": profiles.busy}
            )
        data = await write_json(request, "profile this node", "a profile request")
        if isinstance(data, Response):
            return data
        seconds = data.get("seconds", 5.0) if isinstance(data, dict) else None
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 < seconds <= profiles.max_seconds:
            return _json_error(422, f"seconds: a number of seconds in (0, {profiles.max_seconds:g}], e.g. 5")
        if not available:
            return _json_error(409, f"this agent cannot profile: {why}")
        if profiles.busy:
            return _json_error(409, "a profile is running; wait for it to finish")
        try:
            return JSONResponse(await profiles.run(float(seconds)))
        except HypermeshError as exc:
            return _json_error(409, f"the profile failed: {exc}")

    async def cpu_profile_svg(request: Request) -> Response:
        svg = profiles.svg(request.path_params["id"])
        if svg is None:
            return _json_error(404, f"no flame graph {request.path_params['id']!r}; the agent keeps the last 4")
        return Response(svg, media_type="image/svg+xml", headers=SVG_HEADERS)

    async def cluster_page(request: Request) -> Response:
        return FileResponse(f"{STATIC_DIR}/cluster.html", headers=PAGE_HEADERS)

    allocations = AllocationRoutes(state.node_assets, auth=credentials.enabled)

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
            "config_generation": state.config_generation,
            "config_hash": live_config.config_hash(live_config.live_view(state.config)),
            "samples_since_config": state.samples_since_config,
        }
        # /healthz is open to anyone, so with auth on an anonymous client learns only whether the agent is well: the
        # version names the exploits worth trying, uptime (and samples_taken, uptime over the interval) when the host
        # was last rebooted or patched, a sampler error paths on the host. Credentials verified before see it all
        # (only cached ones: a bcrypt run here would bypass the guard's cap on logins being checked).
        if credentials.enabled and credentials.lookup(_authorization(request)) is not True:
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
        Route("/v1/events", events_endpoint, methods=get),
        Route("/v1/assets", assets_endpoint, methods=get),
        Route("/v1/ebpf", ebpf_endpoint, methods=get),
        Route("/v1/cluster", cluster_endpoint, methods=get),
        Route("/cluster", cluster_page, methods=get),
        Route("/v1/config", config_endpoint, methods=["GET", "PUT"]),
        Route("/v1/cpu-profile", cpu_profile_endpoint, methods=["GET", "POST"]),
        Route("/v1/cpu-profile/{id}.svg", cpu_profile_svg, methods=get),
        # One route for both methods: a 405 then lists both in its Allow header.
        Route("/v1/allocations", allocations.list_or_create, methods=["GET", "POST"]),
        # :path, so an id with a slash in it ("/run/netns", sent as %2F) can be released too
        Route("/v1/allocations/{id:path}", allocations.delete, methods=["DELETE"]),
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
