"""Rolling config updates: one node (or ``max_unavailable`` nodes) at a time, each proven healthy before the next.

For each node: read its live config (``GET /v1/config``), ``PUT`` the new one (the agent checks it whole before
applying anything), then wait until it is healthy *under the new config*: /healthz says ok with the new
``config_generation`` and at least one sample taken since, and /v1/ebpf says every program of the new config is
loaded. A node that does not get there within the health timeout is put back on its previous config and the
roll-out stops: the nodes after it keep what they run. The result says which node has which config.
"""

from __future__ import annotations

import time

import httpx

from hypermesh.cluster.fanout import Client, Node

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

__all__ = ["NodeResult", "rollout"]

POLL_S = 0.25


class NodeResult:
    __slots__ = ("detail", "hash", "node", "outcome")

    def __init__(self, node: Node, outcome: str, detail: str = "", config_hash: str | None = None) -> None:
        self.node, self.outcome, self.detail, self.hash = node, outcome, detail, config_hash

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node.node_id,
            "url": self.node.url,
            "outcome": self.outcome,
            "detail": self.detail,
            "config_hash": self.hash,
        }


class _Failed(Exception):
    pass


def _call(http: httpx.Client, method: str, url: str, body: Any = None) -> Any:
    try:
        answer = http.request(method, url, json=body) if body is not None else http.request(method, url)
    except httpx.HTTPError as exc:
        raise _Failed(f"{method} {url}: {exc or type(exc).__name__}") from None
    if answer.status_code != 200:
        try:
            reason = answer.json().get("error", "")
        except ValueError:
            reason = answer.text[:200]
        raise _Failed(f"{method} {url}: HTTP {answer.status_code} {reason}".rstrip())
    return answer.json()


def healthy_under(http: httpx.Client, node: Node, generation: int, programs: Sequence[str]) -> str | None:
    """None when the node runs generation ``generation`` healthily; else what is still wrong."""
    health = _call(http, "GET", f"{node.url}/healthz")
    if health.get("config_generation") != generation:
        return f"still on config generation {health.get('config_generation')}, not {generation}"
    if health.get("status") != "ok":
        return f"status {health.get('status')}: {health.get('sampler_error') or 'degraded'}"
    if not health.get("samples_since_config"):
        return "no sample taken under the new config yet"
    if programs:
        ebpf = _call(http, "GET", f"{node.url}/v1/ebpf").get("programs", {})
        for name in programs:
            state = ebpf.get(name) or {}
            if not state.get("loaded"):
                return f"eBPF program {name} not loaded: {state.get('error') or 'absent'}"
    return None


def _wait(http: httpx.Client, node: Node, view: dict[str, Any], timeout_s: float) -> str | None:
    deadline = time.monotonic() + timeout_s
    problem: str | None = "not checked"
    while time.monotonic() < deadline:
        try:
            problem = healthy_under(http, node, int(view["generation"]), view.get("ebpf") or [])
        except _Failed as exc:
            problem = str(exc)
        if problem is None:
            return None
        time.sleep(POLL_S)
    return problem


def _update(http: httpx.Client, node: Node, config: dict[str, Any], timeout_s: float) -> NodeResult:
    try:
        before = _call(http, "GET", f"{node.url}/v1/config")
        after = _call(http, "PUT", f"{node.url}/v1/config", config)
    except _Failed as exc:
        return NodeResult(node, "failed", str(exc))
    problem = _wait(http, node, after, timeout_s)
    if problem is None:
        return NodeResult(node, "updated", "", after["hash"])
    previous = {k: before[k] for k in ("interval", "history", "ebpf", "labels")}
    try:
        back = _call(http, "PUT", f"{node.url}/v1/config", previous)
        again = _wait(http, node, back, timeout_s)
    except _Failed as exc:
        return NodeResult(node, "failed", f"unhealthy ({problem}); the rollback failed too: {exc}")
    detail = f"unhealthy within {timeout_s:g} s ({problem}); rolled back"
    if again is not None:
        detail += f", and not yet healthy on the old config either ({again})"
    return NodeResult(node, "rolled back", detail, back["hash"])


def rollout(
    client: Client,
    nodes: Sequence[Node],
    config: dict[str, Any],
    max_unavailable: int = 1,
    health_timeout_s: float = 30.0,
    progress: Callable[[NodeResult], None] | None = None,
) -> list[NodeResult]:
    """Every node's outcome: updated, rolled back, failed (not reached), or skipped (after a failure)."""
    results: list[NodeResult] = []
    stopped = False
    with httpx.Client(verify=client.verify, timeout=client.timeout_s, trust_env=False, auth=client.auth) as http:
        for start in range(0, len(nodes), max_unavailable):
            batch = nodes[start : start + max_unavailable]
            if stopped:
                results += [_current(http, node, "skipped") for node in batch]
                continue
            # A batch of max_unavailable nodes changes at once; with 1 (the default), one at a time.
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=len(batch)) as pool:
                done = list(pool.map(lambda n: _update(http, n, config, health_timeout_s), batch))
            for result in done:
                if progress is not None:
                    progress(result)
            results += done
            stopped = any(r.outcome != "updated" for r in done)
    return results


def _current(http: httpx.Client, node: Node, outcome: str) -> NodeResult:
    try:
        view = _call(http, "GET", f"{node.url}/v1/config")
    except _Failed as exc:
        return NodeResult(node, outcome, f"its config could not be read: {exc}")
    return NodeResult(node, outcome, "not changed: the roll-out stopped before it", view["hash"])
