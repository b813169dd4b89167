"""``hypermesh agent``: serve /metrics, the JSON API and the dashboard (docs/agent.md)."""

from __future__ import annotations

import argparse
import sys

from hypermesh.cli.main import positive_float, positive_int
from hypermesh.errors import BackendError, InvalidInput

DESCRIPTION = """\
Serve this machine's samples: Prometheus metrics at /metrics, JSON at /v1/..., a live dashboard at /.
Listens on loopback unless told otherwise. A TOML --config file adds TLS (tls_server_config.cert_file,
key_file) and basic auth (basic_auth_users: user = bcrypt hash, made with --hash-password).
Command-line flags override the file."""

EPILOG = """\
examples:
  hypermesh agent                                   serve on http://127.0.0.1:9137/ (loopback only)
  hypermesh agent --config /etc/hypermesh/agent.toml
                                                    TLS and basic auth from the file (see docs/agent.md)
  hypermesh agent --ebpf syscalls                   also count syscalls with eBPF (root or CAP_BPF)
  echo 'the password' | hypermesh agent --hash-password
                                                    bcrypt hash to paste into basic_auth_users

exit codes:
  0  stopped cleanly (Ctrl-C, SIGTERM) or --hash-password printed a hash
  1  runtime error (e.g. the port is already in use)
  2  bad input: a flag, the config file, an address that cannot be resolved, a password over 72 bytes
  3  permission denied (e.g. --ebpf without CAP_BPF)
  4  unsupported on this system"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "agent",
        parents=[common],
        help="serve /metrics, the JSON API and the live dashboard",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="address to serve on (default 127.0.0.1:9137; port 0 = any free)",
    )
    p.add_argument("--config", metavar="FILE", help="TOML config file (listen, interval, TLS, basic auth, limits)")
    p.add_argument("--interval", type=positive_float, metavar="SECONDS", help="seconds between samples (default 1s)")
    p.add_argument("--history", type=positive_float, metavar="SECONDS", help="seconds of samples kept (default 600)")
    p.add_argument("--max-in-flight", type=positive_int, metavar="N", help="requests served at once (default 32)")
    p.add_argument(
        "--max-streams",
        type=positive_int,
        metavar="N",
        help="/v1/stream event streams open at once, apart from requests (default 32)",
    )
    p.add_argument(
        "--request-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="time limit per request (default 10s)",
    )
    p.add_argument(
        "--header-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="time a connection has to send a request's headers, when new and after each response (default 5s)",
    )
    p.add_argument(
        "--send-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="time a response may wait for its client to read before the connection is dropped (default 10s)",
    )
    p.add_argument(
        "--max-connections",
        type=positive_int,
        metavar="N",
        help="connections open at once; past it the longest-idle one is closed, else 503 (default 512)",
    )
    p.add_argument(
        "--root",
        metavar="DIR",
        help="read DIR/proc, DIR/sys and DIR/etc instead of the host's (e.g. a container with the host at /host)",
    )
    p.add_argument(
        "--ebpf",
        action="append",
        metavar="PROGRAM",
        help="keep this built-in eBPF program loaded and export it (syscalls); repeatable; needs CAP_BPF",
    )
    p.add_argument("--access-log", action="store_true", default=None, help="log one line per request")
    p.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password from stdin, print its bcrypt hash for basic_auth_users, and exit",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.hash_password:
        return _hash_password()
    from hypermesh.agent import config as config_module

    config = config_module.build(
        args.config,
        listen=args.listen,
        interval_s=args.interval,
        history_s=args.history,
        max_in_flight=args.max_in_flight,
        max_streams=args.max_streams,
        request_timeout_s=args.request_timeout,
        header_timeout_s=args.header_timeout,
        send_timeout_s=args.send_timeout,
        max_connections=args.max_connections,
        access_log=args.access_log,
        root=args.root,
        ebpf_programs=args.ebpf,
    )
    if config.tls_cert_file is None and config.basic_auth_users:
        print(
            "hypermesh: warning: basic auth without TLS sends passwords in clear text; add tls_server_config",
            file=sys.stderr,
        )
    return serve(config)


def serve(config: object) -> int:
    import logging
    import socket

    import uvicorn

    import hypermesh
    from hypermesh.agent.app import AgentState, build_app
    from hypermesh.agent.config import AgentConfig
    from hypermesh.agent.connections import ConnectionLimits, event_loop_factory, protocol_for

    assert isinstance(config, AgentConfig)
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every keep-alive response waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((config.host, config.port))
        sock.listen(1024)
    except socket.gaierror as exc:  # not an address, or a name that does not resolve: bad input
        sock.close()
        raise InvalidInput(
            f"--listen: cannot resolve {config.host!r} ({exc.strerror or exc}); give an IP address or a known host name"
        ) from None
    except OSError as exc:
        sock.close()
        raise BackendError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if family == socket.AF_INET6 else host

    logging.basicConfig(level=logging.INFO, format="hypermesh agent: %(levelname)s: %(message)s")
    min_interval = min(0.1, config.interval_s)
    if config.root is None:
        state = AgentState(config, hypermesh.Sampler(min_interval=min_interval), hypermesh.__version__)
    else:
        from hypermesh.platform.linux import LinuxBackend

        backend = LinuxBackend(root=config.root)
        sampler = hypermesh.Sampler(min_interval=min_interval, backend=backend)
        state = AgentState(config, sampler, hypermesh.__version__, profile_reader=backend.profile)
    app = build_app(state)
    limits = ConnectionLimits(config.max_connections, config.header_timeout_s, config.send_timeout_s, state.stats)
    limits.fit_to_descriptor_limit()
    uv_config = uvicorn.Config(
        app,
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
    try:
        if config.tls_cert_file is not None:
            _check_tls_files(config.tls_cert_file, config.tls_key_file, f"config {config.source}: tls_server_config")
        server = uvicorn.Server(uv_config)
        state.closing = lambda: bool(server.should_exit)
        uv_config.load()  # loads TLS files: a bad certificate is a config error, reported before serving
    except InvalidInput:
        sock.close()
        raise
    except (OSError, ValueError) as exc:  # checked above; what uvicorn's own load could still refuse
        sock.close()
        raise InvalidInput(
            f"config {config.source}: tls_server_config: {config.tls_cert_file}, {config.tls_key_file}: {exc}"
        ) from None
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, restores the handlers it found and raises the signal again.
    # Ours ask for the same graceful stop, so that re-raise is a normal return (a clean stop is exit 0) and a
    # signal arriving before uvicorn installs its own handlers is not lost.
    import signal

    def stop(_sig: int, _frame: object) -> None:
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    print(
        f"hypermesh agent: serving {config.scheme}://{shown}:{port}/ (metrics at /metrics, every "
        f"{config.interval_s:g}s{', basic auth' if config.basic_auth_users else ''})",
        file=sys.stderr,
        flush=True,
    )
    import asyncio

    async def main() -> None:
        limits.install(asyncio.get_running_loop())
        try:
            await server.serve(sockets=[sock])
        finally:
            limits.close()

    with asyncio.Runner(loop_factory=event_loop_factory(config.header_timeout_s)) as runner:
        runner.run(main())
    return 0


class _EncryptedKey(Exception):
    pass


def _refuse_passphrase() -> bytes:
    raise _EncryptedKey


def _check_tls_files(cert_file: str, key_file: str | None, where: str) -> None:
    """Check the certificate and key one at a time, so an error names the key and says what is wrong with it: OpenSSL
    says "[SSL] PEM lib" for a junk certificate, a junk key and a certificate given as the key alike.

    The key is loaded with a passphrase callback that refuses: an encrypted key would otherwise make OpenSSL prompt
    for its passphrase on the terminal (a service hangs there, or fails with EINVAL).
    """
    import ssl

    key = key_file or cert_file
    cert_text = _read_pem(cert_file, f"{where}.cert_file")
    key_text = cert_text if key_file is None else _read_pem(key_file, f"{where}.key_file")
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        held = " (it holds a private key)" if "PRIVATE KEY-----" in cert_text else ""
        raise InvalidInput(
            f"{where}.cert_file: {cert_file} is not a PEM certificate{held}; expected -----BEGIN CERTIFICATE-----"
        )
    try:
        # Parses every certificate in the file (and nothing else), independently of the key.
        ssl.create_default_context().load_verify_locations(cafile=cert_file)
    except ssl.SSLError as exc:
        raise InvalidInput(f"{where}.cert_file: {cert_file} is not a PEM certificate ({exc.reason or exc})") from None
    if "PRIVATE KEY-----" not in key_text:
        held = " (it holds a certificate)" if "-----BEGIN CERTIFICATE-----" in key_text else ""
        raise InvalidInput(
            f"{where}.key_file: {key} is not a PEM private key{held}; expected -----BEGIN PRIVATE KEY----- "
            "(or RSA/EC PRIVATE KEY)"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file, password=_refuse_passphrase)
    except _EncryptedKey:
        raise InvalidInput(
            f"{where}.key_file: {key} is encrypted with a passphrase, which the agent cannot ask for; "
            f"decrypt it (openssl pkey -in {key} -out agent.key) and keep that file readable only by the agent"
        ) from None
    except ssl.SSLError as exc:
        # The certificate parsed above, so OpenSSL's complaint is about the key, or about the two together.
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise InvalidInput(
                f"{where}.key_file: {key} does not match the certificate in cert_file {cert_file} "
                "(a key from another pair)"
            ) from None
        raise InvalidInput(f"{where}.key_file: {key} is not a PEM private key ({exc.reason or exc})") from None


def _read_pem(path: str, where: str) -> str:
    try:
        with open(path, "rb") as file:
            data = file.read(1024 * 1024 + 1)
    except OSError as exc:
        raise InvalidInput(f"{where}: cannot read {path} ({exc.strerror or exc})") from None
    if len(data) > 1024 * 1024:
        raise InvalidInput(f"{where}: {path} is over 1 MiB, not a PEM file")
    return data.decode("ascii", errors="replace")


def _hash_password() -> int:
    import bcrypt

    from hypermesh.agent.security import MAX_PASSWORD_BYTES

    # bcrypt uses at most 72 bytes; read one more to tell a longer password, and room for "\r\n". Never
    # more: `--hash-password < /dev/zero` (or any endless stream) must not grow memory until the OOM killer.
    raw = sys.stdin.buffer.readline(MAX_PASSWORD_BYTES + 3)
    line = raw.removesuffix(b"\n").removesuffix(b"\r")
    if len(line) > MAX_PASSWORD_BYTES:
        # bcrypt ignores everything past 72 bytes: a longer password would silently match its first 72.
        size = f"{len(line)} bytes" if raw.endswith(b"\n") else f"over {MAX_PASSWORD_BYTES} bytes"
        raise InvalidInput(f"--hash-password: the password is {size}; bcrypt uses at most {MAX_PASSWORD_BYTES}")
    if not line:
        raise InvalidInput("--hash-password: no password on stdin (give it as one line)")
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("--hash-password: the password on stdin is not UTF-8; give it as UTF-8 text") from None
    print(bcrypt.hashpw(line, bcrypt.gensalt(rounds=12)).decode())
    return 0
