"""The agent's server: the listening socket, uvicorn's configuration, TLS, signals and the event loop.

The CLI turns flags into an AgentConfig and calls ``preflight`` (errors and warnings before anything is bound) and
``serve``; everything about running the server is here. uvicorn serves the Starlette app (app.py) through our own
protocol (connections.py: header timeout, connection and handshake caps, send timeout) on our own event loop
(tls.py: TLS connections with bounded buffers, counted while they handshake).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
import sys

import uvicorn

import hypermesh
from hypermesh.agent import listen_errors
from hypermesh.agent.app import build_app
from hypermesh.agent.config import AgentConfig, startup_warnings
from hypermesh.agent.connections import ConnectionLimits, RepeatedMessageFilter, protocol_for
from hypermesh.agent.security import STREAM_PATHS
from hypermesh.agent.state import AgentState
from hypermesh.agent.tls import event_loop_factory
from hypermesh.agent.tls_files import check_tls_files
from hypermesh.errors import BackendError, InvalidInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from hypermesh.cluster.membership import Registration

__all__ = ["advertised_url", "preflight", "serve"]

LISTEN_BACKLOG = 1024


def preflight(config: AgentConfig) -> list[str]:
    """Refuse a configuration that cannot serve (InvalidInput, one line), else the warnings to print at start.

    The TLS files and the address are checked before the warnings are made: a config that cannot serve gets its one
    error line, not warnings about it first."""
    if config.tls_cert_file is not None:
        check_tls_files(config.tls_cert_file, config.tls_key_file, _tls_where(config))
    if config.etcd_url is not None and config.advertise_url is None and config.host in ("0.0.0.0", "::", ""):
        raise InvalidInput(
            f"--etcd: listening on {config.host} has no single address to advertise; "
            "give --advertise URL (how other machines reach this agent, e.g. http://10.0.0.5:9137)"
        )
    # An address this host does not have, or a port already taken, is the one line too (serve() binds again).
    _bind(config).close()
    return startup_warnings(config)


def serve(config: AgentConfig, announce: Callable[[str], None] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop. ``announce`` gets the "serving" line once the socket is
    bound (default: stderr)."""
    sock = _bind(config)
    try:
        logging.basicConfig(level=logging.INFO, format="hypermesh agent: %(levelname)s: %(message)s")
        state = _state(config)
        limits = ConnectionLimits(
            config.max_connections,
            config.header_timeout_s,
            config.send_timeout_s,
            state.stats,
            max_handshakes=config.max_handshakes,
            stream_paths=STREAM_PATHS,
        )
        limits.fit_to_descriptor_limit()
        server = _server(config, state, limits)
    except BaseException:
        sock.close()
        raise
    _stop_on_signals(server)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
    line = (
        f"hypermesh agent: serving {config.scheme}://{shown}:{port}/ (metrics at /metrics, every "
        f"{config.interval_s:g}s{', basic auth' if config.basic_auth_users else ''}"
        f"{f', cluster page at /cluster, registered in etcd as {config.node_id or socket.gethostname()}' if config.etcd_url else ''})"
    )
    if announce is None:
        print(line, file=sys.stderr, flush=True)
    else:
        announce(line)

    async def main() -> None:
        limits.install(asyncio.get_running_loop())
        try:
            await server.serve(sockets=[sock])
        finally:
            limits.close()

    registration = _register(config, host, port)
    if registration is not None:
        state.config_listeners.append(lambda new: registration.update(dict(new.labels), new.interval_s))
    try:
        with asyncio.Runner(loop_factory=event_loop_factory(config.header_timeout_s)) as runner:
            runner.run(main())
    finally:
        if registration is not None:
            registration.stop()  # leave the cluster now, not when the lease ends
    return 0


def advertised_url(config: AgentConfig, host: str, port: int) -> str:
    """The URL other machines reach this agent at: --advertise, else the bound address (not a wildcard)."""
    if config.advertise_url is not None:
        return config.advertise_url
    shown = f"[{host}]" if ":" in host else host
    return f"{config.scheme}://{shown}:{port}"


def _register(config: AgentConfig, host: str, port: int) -> Registration | None:
    if config.etcd_url is None:
        return None
    from hypermesh.cluster.etcd import Etcd
    from hypermesh.cluster.membership import Member, Registration

    member = Member(
        config.node_id or socket.gethostname(),
        advertised_url(config, host, port),
        hypermesh.__version__,
        config.interval_s,
        dict(config.labels),
        0.0,
    )
    registration = Registration(Etcd(config.etcd_url), member, config.etcd_ttl_s)
    registration.start()
    return registration


def _tls_where(config: AgentConfig) -> str:
    return f"config {config.source}: tls_server_config"


def _bind(config: AgentConfig) -> socket.socket:
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every keep-alive response waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
        sock.listen(LISTEN_BACKLOG)
    except socket.gaierror as exc:  # not an address, or a name that does not resolve: bad input
        sock.close()
        raise InvalidInput(
            f"--listen: cannot resolve {config.host!r} ({exc.strerror or exc}); give an IP address or a known host name"
        ) from None
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise listen_errors.address_in_use(config.host, config.port) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise listen_errors.address_not_here(config.host, config.port, exc.strerror or str(exc)) from None
        raise BackendError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    return sock


def _state(config: AgentConfig) -> AgentState:
    min_interval = min(0.1, config.interval_s)
    if config.root is None:
        return AgentState(config, hypermesh.Sampler(min_interval=min_interval), hypermesh.__version__)
    from hypermesh.platform.linux import LinuxBackend

    backend = LinuxBackend(root=config.root)
    sampler = hypermesh.Sampler(min_interval=min_interval, backend=backend)
    return AgentState(config, sampler, hypermesh.__version__, profile_reader=backend.profile)


def _server(config: AgentConfig, state: AgentState, limits: ConnectionLimits) -> uvicorn.Server:
    uv_config = uvicorn.Config(
        build_app(state),
        http=protocol_for(limits),
        log_level="info" if config.access_log else "warning",
        access_log=config.access_log,
        ssl_certfile=config.tls_cert_file,
        ssl_keyfile=config.tls_key_file,
        # An idle keep-alive connection is closed by the header timeout (connections.py), which counts it; uvicorn's
        # own timer (cancelled by the first byte of a new request) is only a backstop behind it.
        timeout_keep_alive=2 * config.header_timeout_s + 1,  # type: ignore[arg-type]
        server_header=False,
        h11_max_incomplete_event_size=128 * 1024,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    # After uvicorn.Config, which configures its loggers: a logger's filters see what is logged on it directly.
    logging.getLogger("uvicorn.error").addFilter(RepeatedMessageFilter())
    if config.tls_cert_file is not None:
        # preflight checked them; checked again because the files may have changed since (serve() is public).
        check_tls_files(config.tls_cert_file, config.tls_key_file, _tls_where(config))
    server = uvicorn.Server(uv_config)
    state.closing = lambda: bool(server.should_exit)
    try:
        uv_config.load()  # loads the TLS files: a certificate OpenSSL still refuses is a config error
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{_tls_where(config)}: {config.tls_cert_file}, {config.tls_key_file}: {exc}") from None
    return server


def _stop_on_signals(server: uvicorn.Server) -> None:
    """uvicorn shuts down gracefully on SIGINT/SIGTERM, restores the handlers it found and raises the signal again.
    Ours ask for the same graceful stop, so that re-raise is a normal return (a clean stop is exit 0) and a signal
    arriving before uvicorn installs its own handlers is not lost."""

    def stop(_sig: int, _frame: object) -> None:
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.signal(sig, stop)
        # The command holds Ctrl-C through the agent's start (cli/hold_ctrl_c.py: a KeyboardInterrupt raised during
        # an import can be swallowed, and the agent kept serving): its handler says whether one came meanwhile.
        if getattr(previous, "held", False) is True:
            stop(sig, None)
