"""200 concurrent clients for a bounded 10 s against the real agent on 127.0.0.1 (nowhere else).

The mix has the page (/) and event streams (/v1/stream) besides the API and /metrics. Deliberate 503s (in-flight
and stream caps) are the only non-200 answers allowed; the agent's own count of refusals must equal what the clients
saw; a scraper polling /metrics meanwhile is answered promptly; memory stays bounded and the agent still answers
afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.agent.agent_process import AgentProcess

pytestmark = pytest.mark.slow

CLIENTS = 200
DURATION_S = 10.0
PATHS = ("/metrics", "/v1/sample", "/v1/samples?since=0&limit=60", "/healthz", "/v1/profile", "/", "/v1/stream")
MAX_STREAMS = 8  # well under the ~28 clients asking for a stream at any moment: the cap is reached for sure
STREAM_EVENTS = 2  # a stream client reads this many events, then leaves and comes back


async def read_head(reader: asyncio.StreamReader) -> tuple[int, int]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = -1
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, length


async def one_stream(host: str, port: int, statuses: collections.Counter) -> None:
    """A dashboard's stream: its own connection, a few events, gone (the stream never ends by itself)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(f"GET /v1/stream HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        status, length = await read_head(reader)
        if status == 200:
            events = 0
            while events < STREAM_EVENTS:
                events += (await reader.readuntil(b"\n\n")).count(b"data: ")
        else:
            await reader.readexactly(length)
        statuses[("/v1/stream", status)] += 1
    finally:
        writer.close()
        await writer.wait_closed()


async def client_loop(host: str, port: int, index: int, deadline: float, statuses: collections.Counter) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        i = index
        while time.monotonic() < deadline:
            path = PATHS[i % len(PATHS)]
            i += 1
            if path == "/v1/stream":
                await one_stream(host, port, statuses)
                continue
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            status, length = await read_head(reader)
            await reader.readexactly(length)
            statuses[(path, status)] += 1
    finally:
        writer.close()
        await writer.wait_closed()


async def scraper(host: str, port: int, deadline: float, scrapes: list[tuple[int, float]]) -> None:
    """Prometheus' view: one keep-alive connection, a scrape every 0.25 s, each timed."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await asyncio.sleep(1.0)  # the load is under way
        while time.monotonic() < deadline - 0.5:
            start = time.monotonic()
            writer.write(f"GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            status, length = await read_head(reader)
            await reader.readexactly(length)
            scrapes.append((status, time.monotonic() - start))
            await asyncio.sleep(0.25)
    finally:
        writer.close()
        await writer.wait_closed()


async def run_load(url: str) -> tuple[collections.Counter, list[tuple[int, float]], list[BaseException]]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    statuses: collections.Counter = collections.Counter()
    scrapes: list[tuple[int, float]] = []
    deadline = time.monotonic() + DURATION_S
    tasks = [client_loop(host, int(port), n, deadline, statuses) for n in range(CLIENTS)]
    tasks.append(scraper(host, int(port), deadline, scrapes))
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), DURATION_S + 20)
    return statuses, scrapes, [r for r in results if isinstance(r, BaseException)]


async def idle_scrapes(url: str) -> list[tuple[int, float]]:
    """The control: the same scraper against the same agent with nothing else running, just before the load."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    scrapes: list[tuple[int, float]] = []
    await scraper(host, int(port), time.monotonic() + 3.0, scrapes)
    return scrapes


def test_200_concurrent_clients_get_answers_or_deliberate_503s():
    with AgentProcess("--interval", "0.5", "--max-streams", str(MAX_STREAMS)) as agent:
        time.sleep(1.0)
        idle = sorted(took for _, took in asyncio.run(idle_scrapes(agent.url)))
        rss_before = agent.rss_bytes()
        statuses, scrapes, errors = asyncio.run(run_load(agent.url))
        rss_after = agent.rss_bytes()

        assert errors == [], errors[:3]
        assert {status for _, status in statuses} <= {200, 503}, statuses
        assert sum(n for (_, status), n in statuses.items() if status == 200) > 1000, statuses  # it served
        for path in PATHS:
            assert statuses[(path, 200)] > 0, (path, statuses)  # every kind of request was served at times
        # More streams were asked for than --max-streams allows: those were refused at once, the others streamed.
        assert statuses[("/v1/stream", 503)] > 0, statuses
        # The scraper's answers came promptly however busy the rest was: served, or refused at once when the ~28 load
        # clients asking for /metrics filled its lane (measured: 10 of 23 served, median 0.10 s against 5 ms idle,
        # slowest 0.26 s; docs/agent.md). Against the idle scrapes of the same agent a minute before (the control),
        # the median stays within 50x; a scrape that queued behind the load would take seconds.
        times = sorted(took for _, took in scrapes)
        assert len(idle) >= 4 and len(scrapes) >= 10, (idle, scrapes)  # ~25 in the 8.5 s it polls
        assert times[len(times) // 2] < 50 * idle[len(idle) // 2], (times, idle)
        assert times[-1] < 5.0, times  # the deadline a Prometheus scrape_timeout would set, with seconds to spare
        assert any(status == 200 for status, _ in scrapes), scrapes
        # Memory under load: bounded relative to the agent's own size at rest (measured: ~50 MiB, +20 MiB under load).
        assert rss_after < 2 * rss_before, (rss_before, rss_after)

        response = httpx.get(f"{agent.url}/metrics", timeout=10)
        assert response.status_code == 200
        assert httpx.get(f"{agent.url}/healthz", timeout=10).json()["status"] == "ok"
        rejected = {
            s.labels["reason"]: s.value
            for f in text_string_to_metric_families(response.text)
            for s in f.samples
            if s.name == "hypermesh_agent_http_rejected_total"
        }
        # Every 503 the clients saw is one the agent counted as deliberate (in-flight cap or timeout).
        refused = sum(n for (_, status), n in statuses.items() if status == 503)
        refused += sum(status == 503 for status, _ in scrapes)
        assert rejected["in_flight"] + rejected["timeout"] == refused
        assert rejected["unauthorized"] == 0
