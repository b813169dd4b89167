"""A small etcd v3 client over its JSON gateway (``POST /v3/...``), with the standard library only.

etcd serves its gRPC API as JSON on the client port (grpc-gateway): keys and values are base64, 64-bit numbers are
decimal strings. That is all membership and cluster-wide limits need (leases, put, range, delete, transactions), so
no gRPC stack is pulled in, and the agent can register itself without an HTTP client library.

Every call has a deadline; a refused, reset or timed-out connection raises EtcdUnavailable (one line, naming the
URL), an answer etcd itself refused raises EtcdError with its message.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import urllib.parse
from typing import Generic, TypeVar

from hypermesh.cluster.sockets import readable_now
from hypermesh.errors import HypermeshError, InvalidInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

T = TypeVar("T")
U = TypeVar("U")

__all__ = [
    "LEASE_NOT_FOUND",
    "Etcd",
    "EtcdError",
    "EtcdUnavailable",
    "KeyValue",
    "Reply",
    "check_etcd_url",
    "compare_mod_revision",
    "prefix_end",
    "request_delete",
    "request_put",
]

# etcd's own client default is 5 s per request; a cluster command waits for nothing longer.
DEFAULT_TIMEOUT_S = 5.0
# etcd's refusal of a write naming a lease it does not have (yet): ErrGRPCLeaseNotFound's text.
LEASE_NOT_FOUND = "requested lease not found"
# The gateway answers a few hundred bytes per key; a node list of thousands stays well under this.
MAX_ANSWER_BYTES = 64 * 1024 * 1024


class EtcdError(HypermeshError):
    """etcd answered, and refused (a failed request, an unknown lease)."""

    exit_code = 1


class EtcdUnavailable(EtcdError):
    """etcd could not be reached in time."""


class KeyValue:
    __slots__ = ("key", "lease", "mod_revision", "value", "version")

    def __init__(self, key: str, value: bytes, mod_revision: int, version: int, lease: int) -> None:
        self.key, self.value, self.mod_revision, self.version, self.lease = key, value, mod_revision, version, lease

    def __repr__(self) -> str:
        return f"KeyValue({self.key!r}, {self.value[:40]!r}, rev={self.mod_revision})"


def check_etcd_url(url: str, where: str = "--etcd") -> str:
    """An etcd client URL as a user gives it (http://host:2379); one clear line if it is not one."""
    text = url.rstrip("/")
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or "/" in rest:
        raise InvalidInput(f"{where}: {url!r} is not an etcd client URL; give one like http://127.0.0.1:2379")
    return text


def prefix_end(prefix: str) -> str:
    """The range end that selects every key starting with ``prefix`` (etcd's "prefix + 1" rule)."""
    raw = bytearray(prefix.encode())
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return "\0"
    raw[-1] += 1
    return raw.decode("latin-1")


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode("latin-1") if isinstance(text, str) else text).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text or "")


class Reply(Generic[T]):
    """A request sent: calling it reads its answer (once; again, the same answer or error), ready() says whether
    that would return without waiting for etcd."""

    __slots__ = ("_read", "ready")

    def __init__(self, read: Callable[[], T], ready: Callable[[], bool]) -> None:
        self._read, self.ready = read, ready

    def __call__(self) -> T:
        return self._read()

    def then(self, convert: Callable[[T], U]) -> Reply[U]:
        return Reply(lambda: convert(self._read()), self.ready)


class Etcd:
    """One etcd endpoint (a cluster member's client URL).

    Requests go over kept-alive connections, one per thread at a time: a fresh TCP connection and urllib's opener
    per call cost about as much as etcd's own answer to a read (~1 ms), and an allocation makes several calls."""

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = check_etcd_url(url)
        self.timeout_s = timeout_s
        parts = urllib.parse.urlsplit(self.url)
        self._tls, self._host, self._port = parts.scheme == "https", parts.hostname or "", parts.port
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        if self._tls:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout_s), False
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s), False

    def _post(self, path: str, payload: bytes) -> tuple[int, bytes]:
        connection, reused = self._send(path, payload)
        return self._receive(connection, reused, path, payload)

    def _send(self, path: str, payload: bytes) -> tuple[http.client.HTTPConnection, bool]:
        """Write the request; its answer is read by _receive(), on this connection, now or later."""
        connection, reused = self._connection()
        try:
            connection.request("POST", f"/v3/{path}", payload, {"content-type": "application/json"})
        except (ConnectionResetError, BrokenPipeError):
            connection.close()
            if not reused:
                raise
            self._drop_idle()
            return self._send(path, payload)
        except BaseException:
            connection.close()
            raise
        return connection, reused

    def _receive(
        self, connection: http.client.HTTPConnection, reused: bool, path: str, payload: bytes
    ) -> tuple[int, bytes]:
        try:
            answer = connection.getresponse()
            raw = answer.read(MAX_ANSWER_BYTES)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            connection.close()
            if not reused:
                raise
            # A kept-alive connection etcd closed while it was idle: ask again on a fresh one. (A write etcd applied
            # just before closing would be applied twice only if it carried no compare; puts and deletes are
            # idempotent, and every transaction here compares a revision.)
            self._drop_idle()
            return self._post(path, payload)
        except BaseException:
            connection.close()
            raise
        if answer.will_close:
            connection.close()
        else:
            with self._lock:
                self._idle.append(connection)
        return answer.status, raw

    def _drop_idle(self) -> None:
        with self._lock:
            stale, self._idle = self._idle, []
        for connection in stale:
            connection.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.start(path, body)()

    def start(self, path: str, body: dict[str, Any]) -> Reply[dict[str, Any]]:
        """Send a request now and return what reads its answer: requests started one after another on their own
        connections are served by etcd at the same time, without a thread per request (starting a thread costs
        about as much as a round trip on a loaded 2-core machine). Raises as call() does, each where it happens;
        the answer is read once, and calling again returns it (or raises its error) again."""
        payload = json.dumps(body).encode()
        try:
            connection, reused = self._send(path, payload)
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise self._unavailable(exc) from None

        outcome: list[dict[str, Any] | EtcdError] = []

        def answer() -> dict[str, Any]:
            if not outcome:  # read once; asked again, the same answer (or the same error)
                try:
                    status, raw = self._receive(connection, reused, path, payload)
                    outcome.append(self._decode(path, status, raw))
                except (TimeoutError, OSError, http.client.HTTPException) as exc:
                    outcome.append(self._unavailable(exc))
                except EtcdError as exc:
                    outcome.append(exc)
            if isinstance(outcome[0], EtcdError):
                raise outcome[0]
            return outcome[0]

        def ready() -> bool:
            sock = connection.sock
            if outcome or sock is None:
                return True
            return readable_now(sock)

        return Reply(answer, ready)

    def _unavailable(self, exc: BaseException) -> EtcdUnavailable:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return EtcdUnavailable(f"etcd at {self.url} is unreachable ({reason}); is it running?")

    def _decode(self, path: str, status: int, raw: bytes) -> dict[str, Any]:
        if status != 200:
            try:
                message = json.loads(raw).get("message") or raw.decode(errors="replace")
            except (ValueError, AttributeError):
                message = raw.decode(errors="replace")[:200]
            raise EtcdError(f"etcd at {self.url} refused {path}: {message}")
        try:
            data: dict[str, Any] = json.loads(raw)
        except ValueError:
            raise EtcdError(f"etcd at {self.url} sent an answer that is not JSON to {path}") from None
        if "error" in data and "header" not in data and "result" not in data:
            raise EtcdError(f"etcd at {self.url} refused {path}: {data.get('message') or data['error']}")
        return data

    # ----------------------------------------------------------------------------------------------- leases
    def grant(self, ttl_s: int) -> int:
        return self.grant_start(ttl_s)()

    def grant_start(self, ttl_s: int, lease: int = 0) -> Reply[int]:
        """grant() sent now, its lease id read when called (start()). ``lease``: the id to grant (etcd refuses one
        that exists: "lease already exists"), so that it can be used before the answer is read; a write naming it
        that etcd applies before the grant is refused with LEASE_NOT_FOUND and nothing else."""
        body: dict[str, Any] = {"TTL": ttl_s}
        if lease:
            body["ID"] = str(lease)
        return self.start("lease/grant", body).then(lambda data: int(data["ID"]))

    def keepalive(self, lease: int) -> int:
        """The lease's remaining TTL after this renewal; 0 when etcd no longer has it (it expired)."""
        result = self.call("lease/keepalive", {"ID": str(lease)}).get("result", {})
        return int(result.get("TTL", 0))

    def revoke(self, lease: int) -> None:
        try:
            self.call("lease/revoke", {"ID": str(lease)})
        except EtcdUnavailable:
            raise
        except EtcdError:
            pass  # already gone: what revoking wanted

    # ----------------------------------------------------------------------------------------------- keys
    def put(self, key: str, value: bytes, lease: int = 0) -> int:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        return int(self.call("kv/put", body)["header"]["revision"])

    def get(self, key: str) -> KeyValue | None:
        kvs = self._range({"key": _b64(key)})[0]
        return kvs[0] if kvs else None

    def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` and the store's revision they were read at."""
        return self._range({"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})

    def delete(self, key: str) -> int:
        return int(self.call("kv/deleterange", {"key": _b64(key)}).get("deleted", 0))

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]], failure: list[dict[str, Any]]) -> bool:
        """A transaction; True when every comparison held (and ``success`` ran)."""
        return self.txn_at(compare, success, failure)[0]

    def txn_at(
        self, compare: list[dict[str, Any]], success: list[dict[str, Any]], failure: list[dict[str, Any]]
    ) -> tuple[bool, int]:
        """A transaction: whether it succeeded, and the store's revision after it (the mod revision of every key
        its success branch wrote)."""
        return self.txn_start(compare, success, failure)()

    def txn_start(
        self, compare: list[dict[str, Any]], success: list[dict[str, Any]], failure: list[dict[str, Any]]
    ) -> Reply[tuple[bool, int]]:
        """txn_at() sent now, its outcome read when called (start())."""
        answer = self.start("kv/txn", {"compare": compare, "success": success, "failure": failure})
        return answer.then(lambda data: (bool(data.get("succeeded")), int(data["header"]["revision"])))

    def read_many(self, prefixes: list[str], serializable: bool = False) -> tuple[list[list[KeyValue]], int]:
        """The keys under each prefix, all read at one revision in one round trip (a transaction of ranges only,
        which etcd serves as a read: no raft write, no fsync).

        ``serializable``: answered from the member's own store without confirming with the leader that it is
        current (a linearizable read waits for the leader's next heartbeat round, and behind any write in flight,
        such as a lease being granted at the same time). It may lag the cluster: use it only where a transaction
        then compares every revision it relied on."""
        ranges = [
            {
                "requestRange": {
                    "key": _b64(p),
                    "range_end": _b64(prefix_end(p)),
                    **({"serializable": True} if serializable else {}),
                }
            }
            for p in prefixes
        ]
        data = self.call("kv/txn", {"compare": [], "success": ranges, "failure": []})
        out = [_kvs(r.get("response_range", {})) for r in data.get("responses", [])]
        out += [[] for _ in prefixes[len(out) :]]
        return out, int(data["header"]["revision"])

    def _range(self, body: dict[str, Any]) -> tuple[list[KeyValue], int]:
        data = self.call("kv/range", body)
        return _kvs(data), int(data["header"]["revision"])


def _kvs(data: dict[str, Any]) -> list[KeyValue]:
    return [
        KeyValue(
            _unb64(kv["key"]).decode("latin-1"),
            _unb64(kv.get("value")),
            int(kv.get("mod_revision", 0)),
            int(kv.get("version", 0)),
            int(kv.get("lease", 0)),
        )
        for kv in data.get("kvs", [])
    ]


# ------------------------------------------------------------------------------------- transaction pieces
def compare_mod_revision(key: str, revision: int) -> dict[str, Any]:
    """Holds when ``key`` was last written at ``revision`` (0: the key does not exist)."""
    return {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def request_put(key: str, value: bytes, lease: int = 0) -> dict[str, Any]:
    put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        put["lease"] = str(lease)
    return {"requestPut": put}


def request_delete(key: str) -> dict[str, Any]:
    return {"requestDeleteRange": {"key": _b64(key)}}
