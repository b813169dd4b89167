"""``hypermesh agent``: serve /metrics, the JSON API and the dashboard (docs/agent.md)."""

from __future__ import annotations

import argparse
import sys

from hypermesh.cli import hold_ctrl_c
from hypermesh.cli.main import positive_float, positive_int, require_modules
from hypermesh.errors import InvalidInput

__all__ = ["register"]

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
  hypermesh agent --ebpf biolatency --ebpf execsnoop --ebpf xdp:eth0
                                                    block I/O latency, exec events (/v1/events), packets on eth0
  hypermesh agent --etcd http://127.0.0.1:2379 --node-id web-1
                                                    join a cluster: `hypermesh cluster status --etcd ...` finds it
  hypermesh agent --state-dir /srv/hypermesh        the allocation ledger /v1/allocations grants from
  echo 'the password' | hypermesh agent --hash-password
                                                    bcrypt hash to paste into basic_auth_users

exit codes:
  0  stopped cleanly (Ctrl-C at any moment of the start, SIGTERM) or --hash-password printed a hash
  1  runtime error (e.g. the port is already in use: another agent serves it; stop it or use --listen 127.0.0.1:0)
  2  bad input: a flag, the config file, an address that cannot be resolved or is not this host's (the error lists
     this host's addresses), a password over 72 bytes
  3  permission denied (e.g. --ebpf without CAP_BPF)
  4  unsupported here, e.g. installed without the agent extra: pip install 'hypermesh[agent]'"""


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
        "--max-handshakes",
        type=positive_int,
        metavar="N",
        help="TLS handshakes in progress at once, within --max-connections; past it the oldest is aborted (default 64)",
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
        help="keep this built-in eBPF program loaded and export it (syscalls, biolatency, execsnoop, xdp:INTERFACE, tc:INTERFACE); "
        "repeatable; needs CAP_BPF",
    )
    cluster = p.add_argument_group("cluster membership (docs/cluster.md)")
    cluster.add_argument(
        "--etcd", metavar="URL", help="register in etcd at this client URL, e.g. http://127.0.0.1:2379"
    )
    cluster.add_argument(
        "--advertise", metavar="URL", help="URL other machines reach this agent at (default: the --listen address)"
    )
    cluster.add_argument("--node-id", metavar="ID", help="this node's id in the cluster (default: the host name)")
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        help="directory of the node's allocation ledger, served at /v1/allocations (default: $HYPERMESH_STATE_DIR, "
        "/var/lib/hypermesh as root, else $XDG_STATE_HOME/hypermesh; as hypermesh assets)",
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
        hold_ctrl_c.release()  # held until serving (main.INTERRUPT_IS_A_STOP): this path never serves
        require_modules("hypermesh agent --hash-password", "bcrypt")
        return _hash_password()
    require_modules("hypermesh agent", "starlette", "uvicorn", "prometheus_client")
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
        max_handshakes=args.max_handshakes,
        access_log=args.access_log,
        root=args.root,
        ebpf_programs=args.ebpf,
        etcd_url=args.etcd,
        advertise_url=args.advertise,
        node_id=args.node_id,
        state_dir=args.state_dir,
    )
    if config.basic_auth_users:
        require_modules("hypermesh agent with basic_auth_users", "bcrypt")
    from hypermesh.agent import server

    for warning in server.preflight(config):
        print(f"hypermesh: warning: {warning}", file=sys.stderr)
    return server.serve(config)


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
