"""What of an agent's configuration changes while it runs: ``GET``/``PUT /v1/config`` (docs/cluster.md, roll-outs).

Only what can change without dropping a connection or a listening socket: ``interval``, ``history``, ``ebpf`` (the
programs kept loaded) and ``labels`` (re-registered in etcd). A PUT names those keys (the ones it leaves out keep
their value) and is checked whole before anything is applied; any other key (listen, TLS, auth, root, state_dir,
limits) is refused with 422 saying it needs a restart. Each applied change increments ``generation``, which
/healthz reports with the number of samples taken since, so a roll-out can tell "healthy under the new config" from
"healthy under the old one".
"""

from __future__ import annotations

import hashlib
import json

from hypermesh.agent.config import AgentConfig, check_labels, check_programs, check_seconds
from hypermesh.errors import InvalidInput

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["LIVE_KEYS", "config_hash", "live_view", "updated"]

LIVE_KEYS = ("interval", "history", "ebpf", "labels")


def live_view(config: AgentConfig) -> dict[str, Any]:
    view = {
        "interval": config.interval_s,
        "history": config.history_s,
        "ebpf": list(config.ebpf_programs),
        "labels": dict(config.labels),
    }
    return view


def config_hash(view: dict[str, Any]) -> str:
    """12 hex digits naming a live config (key order and spacing do not matter)."""
    canonical = json.dumps({k: view[k] for k in LIVE_KEYS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def updated(config: AgentConfig, body: object) -> AgentConfig:
    """``config`` with the PUT's values; InvalidInput (one line, naming the key) when the body is not valid."""
    if not isinstance(body, dict):
        raise InvalidInput(f"the body must be a JSON object with any of: {', '.join(LIVE_KEYS)}")
    other = sorted(set(body) - set(LIVE_KEYS))
    if other:
        raise InvalidInput(
            f"{other[0]}: not changed while the agent runs (restart it with the new value); "
            f"a PUT may set: {', '.join(LIVE_KEYS)}"
        )
    fields = {name: getattr(config, name) for name in AgentConfig._fields}  # type: ignore[attr-defined]
    if "interval" in body:
        fields["interval_s"] = check_seconds(body["interval"], "interval", minimum=True)
    if "history" in body:
        fields["history_s"] = check_seconds(body["history"], "history")
    if "ebpf" in body:
        names = body["ebpf"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InvalidInput('ebpf: must be a list of program names, e.g. ["syscalls"]')
        fields["ebpf_programs"] = tuple(check_programs(names, "ebpf"))
    if "labels" in body:
        fields["labels"] = check_labels(body["labels"], "labels")
    return AgentConfig(**fields)
