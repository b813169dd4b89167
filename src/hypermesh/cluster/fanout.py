"""Ask many agents at once: one GET per node and path, in parallel, each bounded by its own deadline.

Every node's answer is either its JSON or a failure with a kind a person can act on:

    refused      nothing listens there (connection refused, host unreachable)
    timed out    no complete answer within the node's timeout (a black hole, a cut link, a slow node)
    tls          the TLS handshake failed (wrong CA, a plain-HTTP agent behind https://, an expired certificate)
    auth         401/403: credentials missing or wrong
    bad answer   anything else: a non-200 status, a body that is not the JSON asked for

The deadline is the whole request (connect, TLS, headers, body), enforced around it, not per read: a server that
drips one byte a second would pass every per-read timeout forever.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time

import httpx

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = ["Answer", "Client", "Node", "collect", "collect_async"]

DEFAULT_TIMEOUT_S = 3.0
# One node's answer: a profile is ~10 KiB, a sample ~5 KiB; far past that is not an agent.
MAX_BODY_BYTES = 16 * 1024 * 1024


class Node:
    """An agent to ask: its id (from etcd, or its URL's host:port) and base URL."""

    __slots__ = ("labels", "node_id", "url")

    def __init__(self, node_id: str, url: str, labels: dict[str, str] | None = None) -> None:
        self.node_id, self.url, self.labels = node_id, url.rstrip("/"), labels or {}

    def __repr__(self) -> str:
        return f"Node({self.node_id!r}, {self.url!r})"


class Answer:
    """One node's answer to one path: ``data`` or (``error_kind``, ``error``)."""

    __slots__ = ("data", "elapsed_s", "error", "error_kind", "node", "path")

    def __init__(
        self,
        node: Node,
        path: str,
        data: Any = None,
        error_kind: str | None = None,
        error: str | None = None,
        elapsed_s: float = 0.0,
    ) -> None:
        self.node, self.path, self.data = node, path, data
        self.error_kind, self.error, self.elapsed_s = error_kind, error, elapsed_s

    @property
    def ok(self) -> bool:
        return self.error_kind is None


class Client:
    """What every request of one command shares: TLS trust, credentials, the per-node timeout."""

    def __init__(
        self,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        cafile: str | None = None,
        insecure: bool = False,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.auth = auth
        if insecure:
            self.verify: ssl.SSLContext | bool = False
        else:
            self.verify = ssl.create_default_context(cafile=cafile) if cafile else True

    async def ask(self, http: httpx.AsyncClient, node: Node, paths: Sequence[str]) -> list[Answer]:
        """The node's answers to ``paths``, asked in order on one connection, all within one timeout.

        In order, not at once: the first authenticated request verifies the credentials (one bcrypt run), and the
        agent shows /healthz in full only to credentials it has verified before."""
        answers: list[Answer] = []
        start = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                for path in paths:
                    began = time.monotonic()
                    try:
                        data = await self._get(http, node, path)
                    except _Failure as failure:
                        answers.append(
                            Answer(node, path, None, failure.kind, failure.message, time.monotonic() - began)
                        )
                        break
                    answers.append(Answer(node, path, data, elapsed_s=time.monotonic() - began))
        except TimeoutError:
            answers.append(
                Answer(
                    node,
                    paths[len(answers)],
                    None,
                    "timed out",
                    f"no answer within {self.timeout_s:g} s",
                    time.monotonic() - start,
                )
            )
        failed = answers[-1]
        # Paths not asked after a failure carry the same failure: every row has one answer per path.
        answers += [Answer(node, p, None, failed.error_kind, failed.error) for p in paths[len(answers) :]]
        return answers

    async def _get(self, http: httpx.AsyncClient, node: Node, path: str) -> Any:
        try:
            async with http.stream("GET", node.url + path, auth=self.auth) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        raise _Failure("bad answer", f"more than {MAX_BODY_BYTES >> 20} MiB")
        except httpx.ConnectError as exc:
            raise _Failure(*_connect_failure(exc)) from None
        except httpx.TimeoutException:
            raise _Failure("timed out", f"no answer within {self.timeout_s:g} s") from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise _Failure("bad answer", f"the connection broke: {exc or type(exc).__name__}") from None
        if response.status_code in (401, 403):
            raise _Failure("auth", f"HTTP {response.status_code}; give --user and --password-file")
        if response.status_code != 200:
            raise _Failure("bad answer", f"HTTP {response.status_code} {_error_text(bytes(body))}".rstrip())
        try:
            return json.loads(body)
        except ValueError:
            raise _Failure("bad answer", "the body is not JSON") from None


class _Failure(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


def _connect_failure(exc: httpx.ConnectError) -> tuple[str, str]:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLError):
            return "tls", f"TLS handshake failed: {getattr(cause, 'reason', None) or cause}"
        cause = cause.__cause__ or cause.__context__
    text = str(exc) or type(exc).__name__
    if "SSL" in text or "certificate" in text:
        return "tls", f"TLS handshake failed: {text}"
    return "refused", text


def _error_text(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    return str(data.get("error", ""))[:200] if isinstance(data, dict) else ""


async def collect_async(client: Client, nodes: Sequence[Node], paths: Sequence[str]) -> list[list[Answer]]:
    """collect() for a caller already in an event loop (the agent)."""
    if not nodes:
        return []
    limits = httpx.Limits(max_connections=max(len(nodes), 1), max_keepalive_connections=max(len(nodes), 1))
    # httpx's own timeouts as a second line; the whole-request deadline is in Client.get. trust_env=False: agents are
    # asked directly, never through an HTTP_PROXY meant for the internet (a proxy would also turn "refused" and
    # "timed out" into its own 502/404, hiding why a node failed).
    async with httpx.AsyncClient(
        # No TLS context unless a node is https: building one loads the system's CA bundle, ~20-30 ms a call.
        verify=client.verify if any(n.url.startswith("https:") for n in nodes) else False,
        timeout=client.timeout_s,
        limits=limits,
        trust_env=False,
    ) as http:
        return list(await asyncio.gather(*(client.ask(http, node, paths) for node in nodes)))


def collect(client: Client, nodes: Sequence[Node], paths: Sequence[str]) -> list[list[Answer]]:
    """For each node, its answers to ``paths`` (in order), all asked at once; never longer than the timeout."""
    if not nodes:
        return []
    return asyncio.run(collect_async(client, nodes, paths))
