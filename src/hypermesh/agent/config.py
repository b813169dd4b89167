"""The agent's configuration: a TOML file, overridden by command-line flags.

The security part follows the Prometheus exporters' web configuration (exporter-toolkit): TLS from a
certificate and key file, and basic-auth users whose passwords are stored only as bcrypt hashes.
TOML instead of YAML because Python reads it with the standard library (tomllib).

    listen = "127.0.0.1:9137"     # loopback by default: exposing the agent is a decision
    interval = 1.0                # seconds between samples
    ebpf = ["syscalls"]           # eBPF programs to keep loaded (syscalls, biolatency, execsnoop, xdp:IF, tc:IF)
    state_dir = "/var/lib/hypermesh"  # the node's allocation ledger (default as `hypermesh assets`)
    history = 600.0               # seconds of samples kept for /v1/samples and the dashboard
    max_in_flight = 32            # requests served at once (per lane: /metrics, the rest); more get 503 at once
    max_streams = 32              # /v1/stream event streams open at once (one per dashboard); more get 503
    request_timeout = 10.0        # seconds a request may take before it gets 503
    header_timeout = 5.0          # seconds a connection may take to send a request's headers (idle ones too)
    send_timeout = 10.0           # seconds a response may wait for its client to read before it is dropped
    max_connections = 512         # connections open at once; past it the longest-idle one is closed, else 503
    max_handshakes = 64           # TLS handshakes in progress at once; past it the oldest is aborted

    [tls_server_config]
    cert_file = "/etc/hypermesh/agent.crt"
    key_file = "/etc/hypermesh/agent.key"

    [basic_auth_users]
    prometheus = "$2b$12$..."     # hypermesh agent --hash-password < password-file

Every error names the file, the key and the problem, and never echoes a secret.
"""

from __future__ import annotations

import os
import re
import stat

from hypermesh._files import FileReadError, FileTooLarge, NotRegularFile, read_regular_file
from hypermesh.errors import InvalidInput
from hypermesh.model import record
from hypermesh.sampling.sampler import MAX_SECONDS, MIN_INTERVAL

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

__all__ = [
    "AgentConfig",
    "build",
    "check_labels",
    "check_programs",
    "check_seconds",
    "load",
    "reaches_beyond_loopback",
    "read_config_bytes",
    "startup_warnings",
]

DEFAULT_LISTEN = "127.0.0.1:9137"
# Per-sample history is kept as serialized JSON; this bounds its memory whatever the interval.
MAX_HISTORY_SAMPLES = 3600
# Longest accepted time value (interval, history, request_timeout) and shortest sampling interval (1 kHz), the
# Sampler's own: far above the one sleep() and timers overflow; below the other the sampler thread alone takes
# a whole core and the history ring (MAX_HISTORY_SAMPLES) holds under 4 s.
# A config file is a few hundred bytes; anything past this is not one (and /dev/zero never ends).
MAX_CONFIG_BYTES = 1024 * 1024
# bcrypt's modular crypt format: $2a$/$2b$/$2y$, a two-digit cost, 22 characters of salt and 31 of hash
# in bcrypt's own base64 alphabet (./A-Za-z0-9).
BCRYPT_HASH = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
# Costs accepted: 4 is bcrypt's minimum; 16 already takes ~10 s per check on a fast core, and every login
# with new credentials pays it (2^cost rounds): more would let one request hang the agent.
MIN_BCRYPT_COST, MAX_BCRYPT_COST = 4, 16


@record
class AgentConfig:
    host: str
    port: int
    interval_s: float = 1.0
    history_s: float = 600.0
    max_in_flight: int = 32
    max_streams: int = 32
    request_timeout_s: float = 10.0
    header_timeout_s: float = 5.0
    send_timeout_s: float = 10.0
    max_connections: int = 512
    # TLS handshakes in progress at once (they count against max_connections too); docs/agent.md, Hardening.
    max_handshakes: int = 64
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # user -> bcrypt hash; empty means no authentication.
    basic_auth_users: Mapping[str, str] = {}
    access_log: bool = False
    # Read <root>/proc, <root>/sys, <root>/etc instead of the host's (node_exporter's --path.rootfs).
    root: str | None = None
    # Built-in eBPF programs kept loaded (hypermesh.agent.programs.AGENT_PROGRAMS).
    ebpf_programs: tuple[str, ...] = ()
    # Cluster membership (docs/cluster.md): register in etcd at this client URL, as node_id, reachable at advertise.
    etcd_url: str | None = None
    advertise_url: str | None = None
    node_id: str | None = None
    labels: Mapping[str, str] = {}
    etcd_ttl_s: int = 10
    # Directory of the node's allocation ledger; None: hypermesh.assets.default_state_dir(), as the CLI.
    state_dir: str | None = None
    source: str | None = None
    # What the config file sets that works but is likely a mistake (startup_warnings() adds the rest).
    warnings: tuple[str, ...] = ()

    @property
    def history_samples(self) -> int:
        return max(2, min(MAX_HISTORY_SAMPLES, int(self.history_s / self.interval_s) + 1))

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert_file else "http"


def parse_listen(text: str, where: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); port 0 picks a free port."""
    host, sep, port_text = text.rpartition(":")
    if text.startswith("[") and "]" not in text:
        raise InvalidInput(f"{where}: {text!r} opens '[' and never closes it; IPv6 is [ADDRESS]:PORT, e.g. [::1]:9137")
    # [0-9], not isdigit(): that also takes "²" (which int() then refuses) and other scripts' digits ("١٠" is 10).
    if not sep or not re.fullmatch(r"[0-9]+", port_text):
        raise InvalidInput(f"{where}: {text!r} is not HOST:PORT, e.g. 127.0.0.1:9137 or [::1]:9137")
    if len(port_text) > 10 or int(port_text) > 65535:  # int() of over 4300 digits raises
        shown = port_text if len(port_text) <= 12 else port_text[:12] + "..."
        raise InvalidInput(f"{where}: port {shown} is out of range 0-65535")
    port = int(port_text)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise InvalidInput(f"{where}: {text!r} has no host; use 0.0.0.0:{port} to listen on every address")
    return host, port


_TOP_KEYS = {
    "listen",
    "interval",
    "history",
    "max_in_flight",
    "max_streams",
    "request_timeout",
    "header_timeout",
    "send_timeout",
    "max_connections",
    "max_handshakes",
    "access_log",
    "root",
    "ebpf",
    "etcd",
    "advertise",
    "node_id",
    "etcd_ttl",
    "state_dir",
}
_SECTIONS = {"tls_server_config", "basic_auth_users", "labels"}


def load(path: str) -> dict[str, Any]:
    """Read and check a config file; returns AgentConfig keyword arguments (only the keys it sets)."""
    import tomllib

    raw = read_config_bytes(path)
    if raw.startswith(b"\xef\xbb\xbf"):
        raise InvalidInput(f"config {path}: starts with a UTF-8 byte order mark (BOM); save it as UTF-8 without BOM")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InvalidInput(
            f"config {path}: not UTF-8 (invalid byte 0x{raw[exc.start]:02x} on line {line}); save it as UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"config {path}: not valid TOML: {exc}") from None

    def fail(key: str, problem: str) -> InvalidInput:
        return InvalidInput(f"config {path}: {key}: {problem}")

    unknown = sorted(set(data) - _TOP_KEYS - _SECTIONS)
    if unknown:
        raise fail(unknown[0], f"unknown key (known: {', '.join(sorted(_TOP_KEYS | _SECTIONS))})")
    out: dict[str, Any] = {"source": path}
    if "listen" in data:
        listen = data["listen"]
        if not isinstance(listen, str):
            raise fail("listen", "must be a string HOST:PORT")
        out["host"], out["port"] = parse_listen(listen, f"config {path}: listen")
    for key, field in (
        ("interval", "interval_s"),
        ("history", "history_s"),
        ("request_timeout", "request_timeout_s"),
        ("header_timeout", "header_timeout_s"),
        ("send_timeout", "send_timeout_s"),
    ):
        if key in data:
            out[field] = _positive_seconds(data[key], lambda problem, key=key: fail(key, problem))
    if out.get("interval_s", MIN_INTERVAL) < MIN_INTERVAL:
        raise fail("interval", f"must be at least {MIN_INTERVAL:g} s (1 kHz), got {out['interval_s']:g}")
    for key in ("max_in_flight", "max_streams", "max_connections", "max_handshakes"):
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise fail(key, "must be a whole number of 1 or more")
            out[key] = value
    if "access_log" in data:
        if not isinstance(data["access_log"], bool):
            raise fail("access_log", "must be true or false")
        out["access_log"] = data["access_log"]

    if "root" in data:
        if not isinstance(data["root"], str) or not data["root"]:
            raise fail("root", "must be a directory path")
        out["root"] = check_root(data["root"], f"config {path}: root")

    if "ebpf" in data:
        names = data["ebpf"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise fail("ebpf", 'must be a list of program names, e.g. ["syscalls"]')
        out["ebpf_programs"] = check_programs(names, f"config {path}: ebpf")

    out.update(_cluster_keys(data, fail, f"config {path}"))
    if "state_dir" in data:
        if not isinstance(data["state_dir"], str) or not data["state_dir"]:
            raise fail("state_dir", "must be a directory path")
        # relative to the file, as its TLS paths are
        resolved = os.path.join(os.path.dirname(os.path.abspath(path)), data["state_dir"])
        out["state_dir"] = check_state_dir(resolved, f"config {path}: state_dir")

    tls = data.get("tls_server_config")
    if tls is not None:
        if not isinstance(tls, dict):
            raise fail("tls_server_config", "must be a table with cert_file and key_file")
        extra = sorted(set(tls) - {"cert_file", "key_file"})
        if extra:
            raise fail(f"tls_server_config.{extra[0]}", "unknown key (known: cert_file, key_file)")
        for key in ("cert_file", "key_file"):
            value = tls.get(key)
            if not isinstance(value, str) or not value:
                raise fail(f"tls_server_config.{key}", "missing; TLS needs both cert_file and key_file")
            resolved = os.path.join(os.path.dirname(os.path.abspath(path)), value)
            problem = _stat_problem(resolved)
            if problem:
                raise fail(f"tls_server_config.{key}", problem)
            if not os.path.isfile(resolved):
                raise fail(
                    f"tls_server_config.{key}", f"{resolved} is not a regular file (a directory, device or FIFO)"
                )
            if not os.access(resolved, os.R_OK):
                raise fail(f"tls_server_config.{key}", f"file {resolved} is not readable")
            out[f"tls_{key}"] = resolved

    users = data.get("basic_auth_users")
    if users is not None:
        if not isinstance(users, dict):
            raise fail("basic_auth_users", "must be a table of user = bcrypt hash")
        for user, hashed in users.items():
            problem = bcrypt_problem(hashed)
            if problem:
                raise fail(f"basic_auth_users.{user}", problem)
            if ":" in user:
                raise fail(f"basic_auth_users.{user}", "a user name cannot contain ':' (basic auth separator)")
        out["basic_auth_users"] = dict(users)
        if not users:
            out["warnings"] = (
                f"config {path}: basic_auth_users is empty, so no password is asked; add a user "
                "(hypermesh agent --hash-password) or remove the table",
            )
    return out


def _cluster_keys(data: dict[str, Any], fail: Any, where: str) -> dict[str, Any]:
    from hypermesh.cluster.etcd import check_etcd_url
    from hypermesh.cluster.membership import check_agent_url, check_node_id

    out: dict[str, Any] = {}
    for key, field, check in (
        ("etcd", "etcd_url", check_etcd_url),
        ("advertise", "advertise_url", check_agent_url),
        ("node_id", "node_id", check_node_id),
    ):
        if key in data:
            if not isinstance(data[key], str):
                raise fail(key, "must be a string")
            out[field] = check(data[key], f"{where}: {key}")
    if "etcd_ttl" in data:
        ttl = data["etcd_ttl"]
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 2 <= ttl <= 3600:
            raise fail("etcd_ttl", "must be a whole number of seconds, 2..3600")
        out["etcd_ttl_s"] = ttl
    if "labels" in data:
        out["labels"] = check_labels(data["labels"], f"{where}: labels")
    return out


def _stat_problem(path: str) -> str | None:
    """Why ``path`` cannot be opened as a file (os.path.exists says only False), or None."""
    import errno

    try:
        os.stat(path)
    except FileNotFoundError:
        return f"file {path} does not exist"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path} is a symbolic link loop (too many levels of symbolic links); point it at the real file"
        return f"cannot reach {path} ({exc.strerror or exc})"
    return None


def read_config_bytes(path: str) -> bytes:
    """The bytes of a config file: a regular file of at most MAX_CONFIG_BYTES, or InvalidInput naming it."""
    try:
        return read_regular_file(path, MAX_CONFIG_BYTES).data
    except FileNotFoundError:
        raise InvalidInput(f"config {path}: no such file") from None
    except PermissionError:
        raise InvalidInput(f"config {path}: not readable by this user (permission denied)") from None
    except NotRegularFile as exc:
        if exc.is_directory:
            raise InvalidInput(f"config {path}: is a directory, expected a TOML file") from None
        raise InvalidInput(f"config {path}: not a regular file (a device, FIFO or socket); give a TOML file") from None
    except FileTooLarge as exc:
        if exc.size is None:  # grew while we read
            raise InvalidInput(f"config {path}: larger than {MAX_CONFIG_BYTES} bytes (1 MiB)") from None
        raise InvalidInput(f"config {path}: {exc.size} bytes, larger than {MAX_CONFIG_BYTES} (1 MiB)") from None
    except FileReadError as exc:
        raise InvalidInput(f"config {path}: cannot read it ({exc.error.strerror or exc.error})") from None
    except OSError as exc:
        raise InvalidInput(f"config {path}: cannot open it ({exc.strerror or exc})") from None


def check_root(root: str, where: str = "--root") -> str:
    """A root directory to read proc/sys/etc under: it must hold at least a readable proc/stat."""
    if not os.path.isdir(root):
        raise InvalidInput(f"{where}: {root} is not a directory")
    if not os.path.isfile(os.path.join(root, "proc", "stat")):
        raise InvalidInput(f"{where}: {root} has no proc/stat; point it at a directory holding proc/ and sys/")
    return os.path.abspath(root)


def check_state_dir(state_dir: str, where: str = "--state-dir") -> str:
    """The ledger's directory: created on first use, so it may be missing, but not a file."""
    if os.path.exists(state_dir) and not os.path.isdir(state_dir):
        raise InvalidInput(f"{where}: {state_dir} exists and is not a directory; give a directory for the ledger")
    return os.path.abspath(state_dir)


def check_seconds(value: object, where: str, minimum: bool = False) -> float:
    """A number of seconds from JSON or TOML (or "2s"), in range; InvalidInput naming ``where`` otherwise."""
    seconds = _positive_seconds(value, lambda problem: InvalidInput(f"{where}: {problem}"))
    if minimum and seconds < MIN_INTERVAL:
        raise InvalidInput(f"{where}: must be at least {MIN_INTERVAL:g} s (1 kHz), got {seconds:g}")
    return seconds


def check_labels(labels: object, where: str = "labels") -> dict[str, str]:
    """Node labels: a table of short printable name = "value" pairs."""
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise InvalidInput(f'{where}: must be a table of name = "value"')
    for name, value in labels.items():
        if not (1 <= len(name) <= 64 and name.replace("_", "").isalnum() and name.isascii()):
            raise InvalidInput(f"{where}: {name[:40]!r} is not a label name (1-64 ASCII letters, digits or '_')")
        if len(value) > 256 or any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise InvalidInput(
                f"{where}.{name}: a label value is at most 256 characters, none of them control characters"
            )
    return dict(labels)


def check_programs(names: list[str], where: str = "--ebpf") -> list[str]:
    from hypermesh.agent.programs import parse_program

    for name in names:
        problem = parse_program(name)
        if isinstance(problem, str):
            raise InvalidInput(f"{where}: {problem}")
    return list(dict.fromkeys(names))


def bcrypt_problem(hashed: object) -> str | None:
    """Why ``hashed`` is not a usable bcrypt hash, or None. Never quotes the value: it is a secret."""
    if not isinstance(hashed, str):
        return "must be a bcrypt hash string"
    match = BCRYPT_HASH.fullmatch(hashed)
    if match is None:
        return (
            "not a bcrypt hash (expected $2b$NN$ and 53 characters of ./A-Za-z0-9, 60 in all); "
            "store a hash, never the password: hypermesh agent --hash-password"
        )
    cost = int(match.group(1))
    if not MIN_BCRYPT_COST <= cost <= MAX_BCRYPT_COST:
        return (
            f"bcrypt cost {cost} is outside {MIN_BCRYPT_COST}..{MAX_BCRYPT_COST} "
            "(each check takes 2^cost rounds); make a new hash with hypermesh agent --hash-password"
        )
    return None


def _positive_seconds(value: object, fail: Any) -> float:
    if isinstance(value, str) and re.fullmatch(r"[0-9]+(\.[0-9]*)?s", value.strip()):
        value = float(value.strip()[:-1])  # "2s", as the command line takes it
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail('must be a number of seconds, e.g. 1.0 or "1s"')
    if not 0 < value < float("inf"):
        raise fail(f"must be a positive number of seconds, got {value}")
    if value > MAX_SECONDS:
        raise fail(f"must be at most {MAX_SECONDS:g} seconds (about 11 days), got {value}")
    return float(value)


def build(
    config_file: str | None,
    *,
    listen: str | None = None,
    interval_s: float | None = None,
    history_s: float | None = None,
    max_in_flight: int | None = None,
    max_streams: int | None = None,
    request_timeout_s: float | None = None,
    header_timeout_s: float | None = None,
    send_timeout_s: float | None = None,
    max_connections: int | None = None,
    max_handshakes: int | None = None,
    access_log: bool | None = None,
    root: str | None = None,
    ebpf_programs: list[str] | None = None,
    etcd_url: str | None = None,
    advertise_url: str | None = None,
    node_id: str | None = None,
    state_dir: str | None = None,
) -> AgentConfig:
    """File values, then flags given on the command line (None = not given) on top."""
    values: dict[str, Any] = {"host": "127.0.0.1", "port": 9137}
    if config_file is not None:
        values.update(load(config_file))
    if listen is not None:
        values["host"], values["port"] = parse_listen(listen)
    flags = {
        "interval_s": interval_s,
        "history_s": history_s,
        "max_in_flight": max_in_flight,
        "max_streams": max_streams,
        "request_timeout_s": request_timeout_s,
        "header_timeout_s": header_timeout_s,
        "send_timeout_s": send_timeout_s,
        "max_connections": max_connections,
        "max_handshakes": max_handshakes,
        "access_log": access_log,
        "root": None if root is None else check_root(root),
        "ebpf_programs": None if not ebpf_programs else check_programs(ebpf_programs),
        **_cluster_flags(etcd_url, advertise_url, node_id),
        "state_dir": None if state_dir is None else check_state_dir(state_dir),
    }
    for flag, value in (
        ("--interval", interval_s),
        ("--history", history_s),
        ("--request-timeout", request_timeout_s),
        ("--header-timeout", header_timeout_s),
        ("--send-timeout", send_timeout_s),
    ):
        if value is not None and not 0 < value <= MAX_SECONDS:
            raise InvalidInput(f"{flag}: must be a positive number of seconds up to {MAX_SECONDS:g}, got {value:g}")
    if interval_s is not None and interval_s < MIN_INTERVAL:
        raise InvalidInput(f"--interval: must be at least {MIN_INTERVAL:g} s (1 kHz), got {interval_s:g}")
    values.update({key: value for key, value in flags.items() if value is not None})
    return AgentConfig(**values)


def _cluster_flags(etcd_url: str | None, advertise_url: str | None, node_id: str | None) -> dict[str, str | None]:
    from hypermesh.cluster.etcd import check_etcd_url
    from hypermesh.cluster.membership import check_agent_url, check_node_id

    return {
        "etcd_url": None if etcd_url is None else check_etcd_url(etcd_url),
        "advertise_url": None if advertise_url is None else check_agent_url(advertise_url, "--advertise"),
        "node_id": None if node_id is None else check_node_id(node_id),
    }


def startup_warnings(config: AgentConfig) -> list[str]:
    """What works but exposes this machine more than its owner likely meant: one line each, printed at start."""
    found = list(config.warnings)
    unguarded = config.tls_cert_file is None and not config.basic_auth_users
    if unguarded and reaches_beyond_loopback(config.host):
        found.append(
            f"listening on {config.host} (beyond loopback) with neither basic auth nor TLS: anyone who reaches "
            "the port reads this machine's metrics; add basic_auth_users and tls_server_config (docs/agent.md)"
        )
    if config.tls_cert_file is None and config.basic_auth_users:
        found.append("basic auth without TLS sends passwords in clear text; add tls_server_config")
    key = config.tls_key_file
    if key is not None:
        try:
            mode = os.stat(key).st_mode
        except OSError:
            mode = 0  # the TLS check that runs before serving names the problem
        if mode & stat.S_IROTH:
            found.append(
                f"the TLS private key {key} is readable by every user (mode {stat.S_IMODE(mode):04o}); chmod o-r {key}"
            )
    return found


def reaches_beyond_loopback(host: str) -> bool:
    """Whether a socket bound to ``host`` accepts connections from other machines (0.0.0.0 and :: do)."""
    import ipaddress
    import socket

    def beyond(address: str) -> bool:
        ip = ipaddress.ip_address(address.partition("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback, though Python 3.11 says it is not
        return not ip.is_loopback

    try:
        return beyond(host)
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: always loopback
        return False
    try:
        found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False  # binding fails too, and says why
    return any(beyond(str(info[4][0])) for info in found)
