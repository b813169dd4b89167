"""The agent's own health: samples taken, requests in flight and turned away, connections (``scrape.stats``)."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter, gauge
from hypermesh.agent.metrics.scrape import Scrape

CONNECTION_CLOSE_REASONS = ("header_timeout", "send_timeout", "evicted", "refused")

SAMPLES = counter("hypermesh_agent_samples_total", "Samples the agent's sampler has taken since start.")
IN_FLIGHT = gauge(
    "hypermesh_agent_http_requests_in_flight", "HTTP requests being served right now, this scrape included."
)
REJECTED = counter(
    "hypermesh_agent_http_rejected_total",
    "HTTP requests refused, by reason: in_flight (limit reached), timeout, unauthorized.",
)
CONNECTIONS = gauge("hypermesh_agent_http_connections", "HTTP connections open right now (after their TLS handshake).")
CONNECTIONS_CLOSED = counter(
    "hypermesh_agent_http_connections_closed_total",
    "HTTP connections the agent closed or refused, by reason: header_timeout (no complete request in "
    "time), send_timeout (the client did not read its response in time), evicted (the longest idle connection or "
    "oldest TLS handshake, to make room), refused (503, all busy at max_connections).",
)
ACCEPT_ERRORS = counter(
    "hypermesh_agent_http_accept_errors_total",
    "Connections the kernel could not hand over (accept failed: EMFILE, ENFILE, ENOBUFS, ENOMEM).",
)


class AgentCollector:
    area = "agent"

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.stats
        rejected = REJECTED.family()
        for reason in ("in_flight", "timeout", "unauthorized"):
            rejected.samples.append(((("reason", reason),), stats.get(f"rejected_{reason}", 0.0)))
        closed = CONNECTIONS_CLOSED.family()
        for reason in CONNECTION_CLOSE_REASONS:
            closed.samples.append(((("reason", reason),), stats.get(f"connections_{reason}", 0.0)))
        return [
            SAMPLES.value(stats.get("samples", 0.0)),
            IN_FLIGHT.value(stats.get("in_flight", 0.0)),
            rejected,
            CONNECTIONS.value(stats.get("connections", 0.0)),
            closed,
            ACCEPT_ERRORS.value(stats.get("accept_errors", 0.0)),
        ]
