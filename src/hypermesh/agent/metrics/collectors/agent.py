"""The agent's own health: samples taken, requests in flight and turned away, connections (``scrape.stats``)."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter, gauge
from hypermesh.agent.metrics.scrape import Scrape

__all__ = ["AgentCollector"]

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
        for reason, value in (
            ("in_flight", stats.rejected_in_flight),
            ("timeout", stats.rejected_timeout),
            ("unauthorized", stats.rejected_unauthorized),
        ):
            rejected.samples.append(((("reason", reason),), value))
        closed = CONNECTIONS_CLOSED.family()
        for reason, value in (
            ("header_timeout", stats.connections_header_timeout),
            ("send_timeout", stats.connections_send_timeout),
            ("evicted", stats.connections_evicted),
            ("refused", stats.connections_refused),
        ):
            closed.samples.append(((("reason", reason),), value))
        return [
            SAMPLES.value(stats.samples),
            IN_FLIGHT.value(stats.in_flight),
            rejected,
            CONNECTIONS.value(stats.connections),
            closed,
            ACCEPT_ERRORS.value(stats.accept_errors),
        ]
