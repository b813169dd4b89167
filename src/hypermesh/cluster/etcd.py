"""A small etcd v3 client over its JSON gateway (``POST /v3/...``), with the standard library only.

etcd serves its gRPC API as JSON on the client port (grpc-gateway): keys and values are base64, 64-bit numbers are
decimal strings. That is all membership and cluster-wide limits need (leases, put, range, delete, transactions), so
no gRPC stack is pulled in, and the agent can register itself without an HTTP client library.

Every call has a deadline; a refused, reset or timed-out connection raises EtcdUnavailable (one line, naming the
URL), an answer etcd itself refused raises EtcdError with its message.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

from hypermesh.errors import HypermeshError, InvalidInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "Etcd",
    "EtcdError",
    "EtcdUnavailable",
    "KeyValue",
    "check_etcd_url",
    "compare_mod_revision",
    "prefix_end",
    "request_delete",
    "request_put",
]

# etcd's own client default is 5 s per request; a cluster command waits for nothing longer.
DEFAULT_TIMEOUT_S = 5.0
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


class Etcd:
    """One etcd endpoint (a cluster member's client URL)."""

    def __init__(self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = check_etcd_url(url)
        self.timeout_s = timeout_s

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 (check_etcd_url allows http and https only)
            f"{self.url}/v3/{path}",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:  # noqa: S310
                raw = answer.read(MAX_ANSWER_BYTES)
        except urllib.error.HTTPError as exc:
            raw = exc.read(MAX_ANSWER_BYTES)
            try:
                message = json.loads(raw).get("message") or raw.decode(errors="replace")
            except ValueError:
                message = raw.decode(errors="replace")[:200]
            raise EtcdError(f"etcd at {self.url} refused {path}: {message}") from None
        except (TimeoutError, urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise EtcdUnavailable(f"etcd at {self.url} is unreachable ({reason}); is it running?") from None
        try:
            data: dict[str, Any] = json.loads(raw)
        except ValueError:
            raise EtcdError(f"etcd at {self.url} sent an answer that is not JSON to {path}") from None
        if "error" in data and "header" not in data and "result" not in data:
            raise EtcdError(f"etcd at {self.url} refused {path}: {data.get('message') or data['error']}")
        return data

    # ----------------------------------------------------------------------------------------------- leases
    def grant(self, ttl_s: int) -> int:
        return int(self.call("lease/grant", {"TTL": ttl_s})["ID"])

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
        return bool(self.call("kv/txn", {"compare": compare, "success": success, "failure": failure}).get("succeeded"))

    def _range(self, body: dict[str, Any]) -> tuple[list[KeyValue], int]:
        data = self.call("kv/range", body)
        out = [
            KeyValue(
                _unb64(kv["key"]).decode("latin-1"),
                _unb64(kv.get("value")),
                int(kv.get("mod_revision", 0)),
                int(kv.get("version", 0)),
                int(kv.get("lease", 0)),
            )
            for kv in data.get("kvs", [])
        ]
        return out, int(data["header"]["revision"])


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
