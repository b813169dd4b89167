"""Connections of the agent's HTTP server: how many, how long they may sit idle, how long a write may stall.

uvicorn bounds the time a request takes once its headers are complete, and the keep-alive time after a response,
but nothing else: a connection that sends nothing, or a few header bytes now and then (slowloris), stayed open
forever, and every such connection holds a file descriptor. Past RLIMIT_NOFILE ``accept()`` fails with EMFILE;
asyncio then logs a traceback for each of up to ``backlog`` tries per loop tick (thousands of lines a second), and
/healthz and /metrics can no longer connect. A client that sent requests and never read kept each response in
memory, however large, for ever (100 of them: 49 MB -> 356 MB). This module closes those gaps, in the spirit of Go's net/http
(``ReadHeaderTimeout``, ``WriteTimeout``) and nginx (idle keep-alive connections are reused under pressure):

- **Header timeout**: a connection must send a complete request header within ``header_timeout_s`` of
  connecting, and of its previous response ending; else it is closed. Trickling bytes does not extend it.
  Over TLS the handshake has the same limit (``ssl_handshake_timeout``; asyncio's default is 60 s), and so has
  the closing exchange of close_notify alerts (``ssl_shutdown_timeout``; asyncio's default is 30 s).
- **Connection cap**: at most ``max_connections`` open, TLS handshakes in progress included. A new connection
  past the cap closes the oldest TLS handshake in progress if there is one, else the connection that has been
  idle (waiting for a request) the longest; if every connection is busy with a request, the new one gets ``503``
  and is closed at once (over TLS after a close_notify alert, not with a bare TCP close). Idle connections
  therefore cannot lock out a scraper or a liveness probe. The cap is lowered to what RLIMIT_NOFILE leaves after
  the agent's own files.
- **Handshake cap**: at most ``max_handshakes`` TLS handshakes in progress; a new one past it aborts the oldest
  (a client that completes its handshake does so within a round trip or two, so the oldest is the likeliest to
  be an attacker's), so a flood of half-open handshakes holds a bounded number of descriptors and never evicts
  a connection that finished its handshake. A handshake that fails, times out or is aborted is released at once:
  asyncio leaves it in reference cycles (the exception's traceback holds the protocol, the accept task's waiter
  holds the exception) that only a full garbage collection frees, a few hundred kilobytes each; tls.py breaks
  them, gives each TLS connection a 16 KiB read buffer instead of asyncio's 256 KiB, and ends an aborted
  handshake with an alert where one can be sent.
- **Send timeout**: a connection whose writes stall (the output buffer above its high-water mark, or a closing
  connection with unsent data) for ``send_timeout_s`` is aborted and its buffer freed. The guard writes response
  bodies in pieces of WRITE_CHUNK_BYTES and uvicorn waits for the buffer to drain between pieces, so an unread
  response holds at most about WRITE_HIGH_WATER_BYTES + WRITE_CHUNK_BYTES of memory, and its request slot until
  its last piece is handed over (or the send timeout drops it).
- **Streams**: an event stream writes a little at a time, and Linux grows a socket's send buffer up to
  ``net.ipv4.tcp_wmem``'s maximum (4 MiB) on its own, so the output buffer of a stream whose client stopped
  reading reached its high-water mark after about an hour. Stream sockets get a fixed STREAM_SNDBUF_BYTES send
  buffer, and the sweep counts the bytes the kernel still holds for them (SIOCOUTQ): a stream with
  STREAM_STALL_BYTES or more unacknowledged for ``send_timeout_s`` is aborted like a stalled write.
- **Log floods**: "socket.accept() out of system resource" (EMFILE), and what uvicorn says for every malformed
  request and every WebSocket upgrade (a client can send thousands a second, before any authentication), are
  logged once per LOG_REPEAT_INTERVAL_S with a count, not once per event.

Timers are checked by one sweep every ``min(header_timeout_s, send_timeout_s) / 4`` (at most once a second),
so a connection is closed between the limit and 1.25 times it.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import logging
import os
import resource
import socket
import struct
import time

from uvicorn.protocols.http.h11_impl import H11Protocol

from hypermesh.agent.guards import WRITE_HIGH_WATER_BYTES, Stats

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar, Protocol

    class Handshake(Protocol):
        """A TLS handshake in progress (tls.Handshake), as the caps see it: something that can be abandoned."""

        def abandon(self) -> None: ...


__all__ = ["AgentProtocol", "ConnectionLimits", "RepeatedMessageFilter", "protocol_for"]


log = logging.getLogger("hypermesh.agent")

LOG_REPEAT_INTERVAL_S = 10.0
# Send buffer of an event-stream socket (Linux doubles what is asked, for its bookkeeping), and the unacknowledged
# bytes in it that mean the client is not reading: a sample event is a few kilobytes, and a client that reads
# acknowledges it within a round trip.
STREAM_SNDBUF_BYTES = 32 * 1024
STREAM_STALL_BYTES = 16 * 1024
# ioctl(SIOCOUTQ) (= TIOCOUTQ, linux/sockios.h): bytes in a TCP socket's send queue, not yet acknowledged.
SIOCOUTQ = 0x5411
# File descriptors kept free for the agent's own files beyond those open when the server starts: the node stats
# reader keeps a few sysfs files open per network interface and disk (~250 on a 32-CPU host with 23 interfaces),
# plus eBPF maps, the TLS files and statvfs workers.
RESERVED_FDS = 256
MIN_CONNECTIONS = 8
REFUSED_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 36\r\n"
    b"retry-after: 1\r\nconnection: close\r\n\r\ntoo many connections; retry shortly\n"
)


class ConnectionLimits:
    """What every connection of one server shares: the caps, the idle queue, the counters."""

    def __init__(
        self,
        max_connections: int,
        header_timeout_s: float,
        send_timeout_s: float,
        stats: Stats,
        *,
        max_handshakes: int | None = None,
        stream_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.max_connections = max_connections
        self.max_handshakes = max_connections if max_handshakes is None else max_handshakes
        self.header_timeout_s = header_timeout_s
        self.send_timeout_s = send_timeout_s
        self.stats = stats
        self.stream_paths = stream_paths
        self.open: set[AgentProtocol] = set()
        # TLS handshakes in progress, the oldest first (each holds a descriptor): held strongly and removed when the
        # handshake ends, succeeded or not. A WeakSet here counted failed handshakes for as long as the garbage
        # collector took to free them, and the agent, believing itself full, evicted healthy connections.
        self.handshaking: dict[Handshake, None] = {}
        # Connections waiting for a request, the longest-waiting first: who is closed on a timeout or to make room.
        self.idle: collections.OrderedDict[AgentProtocol, float] = collections.OrderedDict()
        self.sweep_interval_s = min(1.0, max(0.05, min(header_timeout_s, send_timeout_s) / 4))
        self._sweeper: asyncio.TimerHandle | None = None
        self._accept_errors = 0
        self._accept_error_logged = -LOG_REPEAT_INTERVAL_S

    # ------------------------------------------------------------------------------ set-up

    def fit_to_descriptor_limit(self) -> None:
        """Lower the cap to what RLIMIT_NOFILE leaves free, raising the soft limit to the hard one first if needed
        (as Go does at start): connections must never take the descriptors the agent needs for its own files."""
        try:
            in_use = len(os.listdir("/proc/self/fd"))
        except OSError:
            in_use = 32
        needed = self.max_connections + in_use + RESERVED_FDS
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < needed:
            target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
            except (OSError, ValueError):
                pass
        if soft != resource.RLIM_INFINITY and soft < needed:
            fitted = max(MIN_CONNECTIONS, soft - in_use - RESERVED_FDS)
            log.warning(
                "max_connections lowered from %d to %d: RLIMIT_NOFILE is %d and %d descriptors are in use "
                "(raise LimitNOFILE or ulimit -n)",
                self.max_connections,
                fitted,
                soft,
                in_use,
            )
            self.max_connections = fitted
        self.max_handshakes = min(self.max_handshakes, self.max_connections)

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start the sweep and take over the loop's reports of failed accepts (call from the running loop)."""
        self._sweeper = loop.call_later(self.sweep_interval_s, self._sweep, loop)
        default = loop.get_exception_handler()

        def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            # asyncio's words for an accept() that failed for want of descriptors or memory (selector_events.py).
            if context.get("message") == "socket.accept() out of system resource" and isinstance(exc, OSError):
                self.accept_failed(exc)
            elif default is not None:
                default(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handle)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def accept_failed(self, exc: OSError) -> None:
        """asyncio retries a failed accept a second later, up to ``backlog`` times per tick: count, log rarely."""
        self._accept_errors += 1
        self.stats.accept_errors += 1
        now = time.monotonic()
        if now - self._accept_error_logged >= LOG_REPEAT_INTERVAL_S:
            log.error(
                "cannot accept connections: %s (%d failed accepts since the last report; %d connections open, "
                "RLIMIT_NOFILE %d)",
                exc.strerror or exc,
                self._accept_errors,
                len(self.open),
                resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            )
            self._accept_error_logged = now
            self._accept_errors = 0

    # -------------------------------------------------------------------------- accounting

    def occupied(self) -> int:
        return len(self.open) + len(self.handshaking)

    def evict_idle(self) -> bool:
        """Close the connection that has waited for a request the longest; False if none is waiting."""
        while self.idle:
            oldest, _ = self.idle.popitem(last=False)
            oldest.waiting_since = None
            if not oldest.transport.is_closing():
                self.stats.connections_evicted += 1
                oldest.close_idle()
                return True
        return False

    def handshake_started(self, handshake: Handshake) -> None:
        """Count a new TLS handshake, making room first. Past either cap the oldest handshake in progress is
        aborted; only when none is in progress does the longest-idle connection make room. So a flood of
        handshakes never closes a connection that completed its own (a scraper's kept-alive one)."""
        full = self.occupied() >= self.max_connections
        if len(self.handshaking) >= self.max_handshakes or (full and self.handshaking):
            self._abort_oldest_handshake()
        elif full:
            self.evict_idle()
        self.handshaking[handshake] = None

    def handshake_ended(self, handshake: Handshake) -> None:
        self.handshaking.pop(handshake, None)

    def _abort_oldest_handshake(self) -> None:
        for oldest in self.handshaking:
            del self.handshaking[oldest]
            self.stats.connections_evicted += 1
            oldest.abandon()
            return

    def waiting(self, protocol: AgentProtocol) -> None:
        now = time.monotonic()
        protocol.waiting_since = now
        self.idle[protocol] = now

    def busy(self, protocol: AgentProtocol) -> None:
        protocol.waiting_since = None
        self.idle.pop(protocol, None)

    def forget(self, protocol: AgentProtocol) -> None:
        self.busy(protocol)
        self.open.discard(protocol)

    # ------------------------------------------------------------------------------- sweep

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        expired = now - self.header_timeout_s
        while self.idle:
            protocol, since = next(iter(self.idle.items()))
            if since > expired:
                break
            self.idle.popitem(last=False)
            protocol.waiting_since = None
            self.stats.connections_header_timeout += 1
            protocol.close_idle()
        stalled = now - self.send_timeout_s
        for protocol in list(self.open):
            protocol.check_stalled(now, stalled)
        self._sweeper = loop.call_later(self.sweep_interval_s, self._sweep, loop)


class AgentProtocol(H11Protocol):
    """uvicorn's h11 protocol with the limits of ConnectionLimits; ``limits`` is set by ``protocol_for``."""

    limits: ClassVar[ConnectionLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting_since: float | None = None
        self._refused = False
        self._paused_since: float | None = None
        self._closing_since: float | None = None
        # An event stream's socket, once its request is seen, and since when its kernel queue has been backed up.
        self._stream_socket: socket.socket | None = None
        self._queued_since: float | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        limits = self.limits
        assert isinstance(transport, asyncio.Transport)
        # Counted without the handshakes still in progress: in a burst, asyncio accepts many connections before
        # any of them is connected, and those would otherwise refuse each other.
        if len(limits.open) >= limits.max_connections and not limits.evict_idle():
            self._refused = True
            limits.stats.connections_refused += 1
            transport.write(REFUSED_RESPONSE)
            transport.close()
            return
        super().connection_made(transport)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER_BYTES)
        limits.open.add(self)
        limits.stats.connections = len(limits.open)
        limits.waiting(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self.limits.forget(self)
        self.limits.stats.connections = len(self.limits.open)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            # Over TLS, a request that came with the handshake's last flight is still delivered while the 503 and
            # its close_notify go out; uvicorn, never told of the connection, ran it and failed with a traceback.
            return
        super().data_received(data)
        self._follow_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_state()

    def _follow_state(self) -> None:
        # Waiting = no response in progress: nothing received yet, or the last response sent. The latter includes
        # a request body still trickling in after its answer (a 405 to a POST of "Content-Length: 10**9"): h11 keeps
        # reading it, and only a new complete header (a new cycle) makes the connection busy again.
        cycle = self.cycle
        waiting = (cycle is None or cycle.response_complete) and not self.transport.is_closing()
        if waiting and self.waiting_since is None:
            self.limits.waiting(self)
        elif not waiting and self.waiting_since is not None:
            self.limits.busy(self)
            if cycle is not None and self._stream_socket is None and cycle.scope["path"] in self.limits.stream_paths:
                self._bound_send_buffer()

    def _bound_send_buffer(self) -> None:
        sock = self.transport.get_extra_info("socket")
        if sock is None:
            return
        try:
            # Setting it also stops the kernel from growing it (SOCK_SNDBUF_LOCK), for the life of the connection.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_SNDBUF_BYTES)
        except OSError:
            return
        self._stream_socket = sock

    def pause_writing(self) -> None:
        self._paused_since = time.monotonic()
        super().pause_writing()

    def resume_writing(self) -> None:
        self._paused_since = None
        super().resume_writing()

    def close_idle(self) -> None:
        """Close a connection that has no request in progress: at once, dropping unsent data the client did not read."""
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.timeout_keep_alive_handler()  # uvicorn's own close of an idle keep-alive connection

    def check_stalled(self, now: float, stalled_before: float) -> None:
        """Abort the connection if its writes made no progress since ``stalled_before`` (a client that does not read)."""
        transport = self.transport
        if transport.is_closing():
            # close() waits until the buffer is sent, which is never if the client does not read.
            if self._closing_since is None:
                self._closing_since = now
            elif self._closing_since <= stalled_before and transport.get_write_buffer_size():
                self.limits.stats.connections_send_timeout += 1
                transport.abort()
        elif self._paused_since is not None and self._paused_since <= stalled_before:
            self.limits.stats.connections_send_timeout += 1
            transport.abort()
        elif self._stream_socket is not None:
            self._check_stream_queue(now, stalled_before)

    def _check_stream_queue(self, now: float, stalled_before: float) -> None:
        """Abort a stream whose kernel send queue stayed backed up since ``stalled_before``: a client that reads
        acknowledges each event within a round trip, one that does not leaves them queued."""
        assert self._stream_socket is not None
        try:
            queued = struct.unpack("i", fcntl.ioctl(self._stream_socket.fileno(), SIOCOUTQ, b"\0" * 4))[0]
        except OSError:  # closed meanwhile
            return
        if queued < STREAM_STALL_BYTES:
            self._queued_since = None
        elif self._queued_since is None:
            self._queued_since = now
        elif self._queued_since <= stalled_before:
            self.limits.stats.connections_send_timeout += 1
            self.transport.abort()


def protocol_for(limits: ConnectionLimits) -> type[AgentProtocol]:
    """An AgentProtocol class bound to ``limits`` (uvicorn instantiates the class it is given per connection)."""
    return type("AgentProtocol", (AgentProtocol,), {"limits": limits})


# What uvicorn logs (logger "uvicorn.error") for every malformed request and every Upgrade: websocket it cannot
# serve, as message prefix -> the line kept (None: dropped, its event is already counted by the other line).
REPEATED_MESSAGES: dict[str, str | None] = {
    "Invalid HTTP request received.": "invalid HTTP requests (answered 400)",
    "Unsupported upgrade request.": "upgrade requests refused (the agent serves no WebSocket)",
    "No supported WebSocket library detected.": None,
}


class RepeatedMessageFilter(logging.Filter):
    """Lets one of each REPEATED_MESSAGES through per LOG_REPEAT_INTERVAL_S, saying how many there were: a client
    sending malformed requests as fast as it can wrote 160 KB of log a second, before any authentication."""

    def __init__(self, interval_s: float = LOG_REPEAT_INTERVAL_S) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._counts: collections.Counter[str] = collections.Counter()
        self._logged: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if not isinstance(message, str):
            return True
        prefix = next((known for known in REPEATED_MESSAGES if message.startswith(known)), None)
        if prefix is None:
            return True
        line = REPEATED_MESSAGES[prefix]
        if line is None:
            return False
        self._counts[prefix] += 1
        now = time.monotonic()
        if now - self._logged.get(prefix, -self.interval_s) < self.interval_s:
            return False
        record.msg = "%s: %d since the last report (logged at most every %gs)"
        record.args = (line, self._counts.pop(prefix), self.interval_s)
        record.exc_info = None
        self._logged[prefix] = now
        return True
