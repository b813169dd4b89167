"""TLS connections of the agent's server: asyncio's server-side TLS protocol, made fit to face the open network.

asyncio (3.11) gave every TLS connection a 256 KiB read buffer for its whole life (``SSLProtocol.max_size``), left
every failed handshake in reference cycles that only a full garbage collection frees, and closed an aborted
handshake without a word. The agent's event loop (AgentEventLoop) builds AgentSSLProtocol instead, through the
loop's own hook for TLS transports (``_make_ssl_transport``), not by patching asyncio: each handshake is counted in
connections.ConnectionLimits (``max_handshakes``, ``max_connections``) until it ends, freed as it fails, and told
with an alert when the caps or its timeout abort it.
"""

from __future__ import annotations

import asyncio
import socket
from asyncio import sslproto

from hypermesh.agent.connections import AgentProtocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["AgentEventLoop", "event_loop_factory"]

# Read buffer of a TLS connection: a TLS record holds at most 16 KiB of data, and the agent's requests are a few
# hundred bytes. asyncio's 256 KiB made 386 idle TLS connections exceed a 128 MiB MemoryMax; with 16 KiB, 400 take
# about 50 MB (docs/agent.md, Hardening).
TLS_READ_BUFFER_BYTES = 16 * 1024
# A fatal TLS alert record, internal_error (RFC 8446 sections 5.1 and 6: content type 21, legacy version 3.3, length
# 2, level 2, description 80), sent in the clear to a handshake aborted before the agent sent anything: until the
# server's first flight there are no keys, and that is the only time an unencrypted alert is valid.
PLAINTEXT_FATAL_ALERT = bytes((21, 3, 3, 0, 2, 2, 80))


class AgentSSLProtocol(sslproto.SSLProtocol):
    """asyncio's server-side TLS protocol with a smaller read buffer, counted in ConnectionLimits while it
    handshakes, and released as soon as a handshake fails (asyncio leaves a failed one in reference cycles)."""

    max_size = TLS_READ_BUFFER_BYTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = self._app_protocol
        self._limits = app.limits if isinstance(app, AgentProtocol) else None
        self._abandoned = False
        self._flight_sent = False
        if self._limits is not None:
            self._limits.handshake_started(self)

    def abandon(self) -> None:
        """Abort the handshake to make room: at once, or when the socket is handed over (in the same loop tick)."""
        self._abandoned = True
        if isinstance(self._transport, asyncio.Transport):
            self._refuse(self._transport)

    def _refuse(self, transport: asyncio.Transport) -> None:
        # With an alert where one can be sent (a bare close reads as ECONNRESET or a truncated handshake); the
        # socket's buffer is empty before the first flight, so the write completes at once and abort() drops
        # nothing.
        if not self._flight_sent:
            transport.write(PLAINTEXT_FATAL_ALERT)
        transport.abort()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._abandoned and isinstance(transport, asyncio.Transport):
            self._transport = transport
            self._refuse(transport)
            return
        super().connection_made(transport)

    # Private to asyncio's SSLProtocol (3.11+) and not in typeshed: where every byte of TLS output goes to the socket.
    def _process_outgoing(self) -> None:
        if self._outgoing.pending:  # type: ignore[attr-defined]
            self._flight_sent = True
        super()._process_outgoing()  # type: ignore[misc]

    def _check_handshake_timeout(self) -> None:
        handshaking = self._state == sslproto.SSLProtocolState.DO_HANDSHAKE  # type: ignore[attr-defined]
        if handshaking and isinstance(self._transport, asyncio.Transport):
            self._refuse(self._transport)  # connection_lost follows, as after asyncio's own abort
            return
        super()._check_handshake_timeout()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._limits is not None:
            self._limits.handshake_ended(self)
        super().connection_lost(exc)

    # handshake_exc is an exception, None, or the class ConnectionResetError (what eof_received passes).
    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if self._limits is not None:
            self._limits.handshake_ended(self)
        try:
            super()._on_handshake_complete(handshake_exc)
        finally:
            # The failure was raised again in the frame that holds it (a cycle: exception -> traceback -> frame ->
            # exception), and that frame holds this protocol, its buffers and OpenSSL's state.
            if isinstance(handshake_exc, BaseException):
                handshake_exc.__traceback__ = None

    def _wakeup_waiter(self, exc: BaseException | None = None) -> None:
        # The accept task awaits this waiter: an exception set on it is raised there, and its traceback holds the
        # task's frame, which holds the waiter, which holds the exception (another cycle). Cancelling tells the
        # task the same thing (it closes the transport and returns) without storing an exception anywhere.
        if exc is not None and self._waiter is not None:
            waiter = self._waiter
            self._waiter = None  # type: ignore[assignment]
            waiter.cancel()
            return
        super()._wakeup_waiter(exc)


class AgentEventLoop(asyncio.SelectorEventLoop):
    """The selector loop, with TLS handshakes and closing exchanges limited like request headers (uvicorn passes no
    timeouts for either) and AgentSSLProtocol for every TLS connection a server accepts."""

    ssl_handshake_timeout_s: float = 60.0

    async def create_server(self, *args: Any, **kwargs: Any) -> asyncio.Server:
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", self.ssl_handshake_timeout_s)
            kwargs.setdefault("ssl_shutdown_timeout", self.ssl_handshake_timeout_s)
        return await super().create_server(*args, **kwargs)

    # asyncio's hook for the transport of an accepted (or connected) TLS socket; the same signature since 3.11.
    def _make_ssl_transport(
        self,
        rawsock: socket.socket,
        protocol: asyncio.BaseProtocol,
        sslcontext: Any,
        waiter: asyncio.Future[Any] | None = None,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        extra: dict[str, Any] | None = None,
        server: Any = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> asyncio.Transport:
        if not server_side:
            return super()._make_ssl_transport(  # type: ignore[misc,no-any-return]
                rawsock,
                protocol,
                sslcontext,
                waiter,
                server_side=server_side,
                server_hostname=server_hostname,
                extra=extra,
                server=server,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout,
            )
        ssl_protocol = AgentSSLProtocol(
            self,
            protocol,
            sslcontext,
            waiter,
            server_side,
            None,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        self._make_socket_transport(rawsock, ssl_protocol, extra=extra, server=server)  # type: ignore[attr-defined]
        return ssl_protocol._app_transport


def event_loop_factory(handshake_timeout_s: float) -> type[AgentEventLoop]:
    return type("AgentEventLoop", (AgentEventLoop,), {"ssl_handshake_timeout_s": handshake_timeout_s})
