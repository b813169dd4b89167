"""What the agent's two guards share: the connection guard (connections.py: caps, timeouts) and the request guard
(security.py: lanes, auth, chunked writes). The counters they keep (``Stats``, exported as ``hypermesh_agent_*``)
and the write sizes they agree on live here, so neither guard imports the other.
"""

from __future__ import annotations

from hypermesh.model import record

__all__ = ["MAX_BODY_BYTES", "WRITE_CHUNK_BYTES", "WRITE_HIGH_WATER_BYTES", "AgentStats", "Stats"]

# Output buffered per connection before uvicorn waits for the client to read (asyncio's default is 64 KiB), and
# the size of the pieces a response body is written in: together they bound an unread response's memory.
WRITE_HIGH_WATER_BYTES = 32 * 1024
WRITE_CHUNK_BYTES = 32 * 1024
# Largest request body read (POST /v1/allocations: an object of eight short fields is under 1 KiB); past it, 413.
# Half a write chunk: a request never holds more memory than its answer may.
MAX_BODY_BYTES = 16 * 1024


@record
class AgentStats:
    """The agent's counters as one scrape reads them (``Stats.snapshot``): what the agent collector exports."""

    samples: int = 0
    in_flight: int = 0
    rejected_in_flight: int = 0
    rejected_timeout: int = 0
    rejected_unauthorized: int = 0
    connections: int = 0
    connections_header_timeout: int = 0
    connections_send_timeout: int = 0
    connections_evicted: int = 0
    connections_refused: int = 0
    accept_errors: int = 0


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

    def snapshot(self, samples: int) -> AgentStats:
        """The counters now, with the sampler's count, as an immutable record."""
        return AgentStats(
            samples,
            self.in_flight,
            self.rejected_in_flight,
            self.rejected_timeout,
            self.rejected_unauthorized,
            self.connections,
            self.connections_header_timeout,
            self.connections_send_timeout,
            self.connections_evicted,
            self.connections_refused,
            self.accept_errors,
        )
