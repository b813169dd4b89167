"""200 concurrent clients for a bounded 10 s against the real agent on 127.0.0.1 (nowhere else).

Deliberate 503s (in-flight cap) are the only non-200 answers allowed; the agent's own count of refusals
must equal what the clients saw; memory stays bounded and the agent still answers afterwards.
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
PATHS = ("/metrics", "/v1/sample", "/v1/samples?since=0&limit=60", "/healthz", "/v1/profile")


async def client_loop(host: str, port: int, index: int, deadline: float, statuses: collections.Counter) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        i = index
        while time.monotonic() < deadline:
            path = PATHS[i % len(PATHS)]
            i += 1
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            statuses[status] += 1
    finally:
        writer.close()
        await writer.wait_closed()


async def run_load(url: str) -> tuple[collections.Counter, list[BaseException]]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    statuses: collections.Counter = collections.Counter()
    deadline = time.monotonic() + DURATION_S
    tasks = [client_loop(host, int(port), n, deadline, statuses) for n in range(CLIENTS)]
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), DURATION_S + 20)
    return statuses, [r for r in results if isinstance(r, BaseException)]


def test_200_concurrent_clients_get_answers_or_deliberate_503s():
    with AgentProcess("--interval", "0.5") as agent:
        time.sleep(1.0)
        rss_before = agent.rss_bytes()
        statuses, errors = asyncio.run(run_load(agent.url))
        rss_after = agent.rss_bytes()

        assert errors == [], errors[:3]
        assert set(statuses) <= {200, 503}, statuses
        assert statuses[200] > 1000, statuses  # it served, not just refused
        assert rss_after < 120 * 2**20, rss_after
        assert rss_after - rss_before < 60 * 2**20, (rss_before, rss_after)

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
        assert rejected["in_flight"] + rejected["timeout"] == statuses[503]
        assert rejected["unauthorized"] == 0
