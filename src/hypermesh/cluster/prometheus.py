"""The cluster view from Prometheus instead of our fan-out: for fleets too large to ask node by node.

Prometheus already scrapes every agent; its HTTP API (``/api/v1/query``) answers for all of them in a few queries,
whatever their number. The view has the same shape as ``status_view``: one row per scrape target of the job, its
health from ``up`` (a failed scrape names Prometheus' own error from ``/api/v1/targets``), utilisation computed from
the same counters the agent exports, and totals. Anything speaking the Prometheus query API works (Thanos, Mimir,
VictoriaMetrics).
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request

from hypermesh.errors import BackendError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["PrometheusSource", "check_source"]

# A window of several scrapes: rate() needs two samples, and agents are usually scraped every 15 s.
RATE_WINDOW = "2m"


def check_source(text: str) -> str:
    """``prometheus=URL`` -> URL; one line naming the form otherwise."""
    from hypermesh.errors import InvalidInput

    kind, sep, url = text.partition("=")
    parsed = urllib.parse.urlsplit(url)
    if kind != "prometheus" or not sep or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidInput(
            f"--source: {text!r} is not a source; give prometheus=URL, e.g. prometheus=http://127.0.0.1:9090"
        )
    return url.rstrip("/")


class PrometheusSource:
    def __init__(self, url: str, job: str = "hypermesh", timeout_s: float = 10.0) -> None:
        self.url, self.job, self.timeout_s = url, job, timeout_s

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=self.timeout_s) as answer:  # noqa: S310 (check_source: http(s) only)
                data = json.loads(answer.read(64 * 1024 * 1024))
        except urllib.error.HTTPError as exc:
            raise BackendError(f"Prometheus at {self.url} refused {path}: HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendError(f"Prometheus at {self.url} is unreachable or not Prometheus ({reason})") from None
        if data.get("status") != "success":
            raise BackendError(f"Prometheus at {self.url}: {data.get('error', 'query failed')}")
        return data["data"]

    def query(self, expr: str) -> dict[str, float]:
        """instance -> value of an instant vector query."""
        result = self._get("/api/v1/query", {"query": expr})["result"]
        return {r["metric"].get("instance", ""): float(r["value"][1]) for r in result}

    def _labels(self, expr: str, label: str) -> dict[str, str]:
        result = self._get("/api/v1/query", {"query": expr})["result"]
        return {r["metric"].get("instance", ""): r["metric"].get(label, "") for r in result}

    def _scrape_errors(self) -> dict[str, str]:
        targets = self._get("/api/v1/targets", {"state": "active"}).get("activeTargets", [])
        return {
            t["labels"].get("instance", ""): t.get("lastError") or "scrape failed"
            for t in targets
            if t.get("labels", {}).get("job") == self.job and t.get("health") != "up"
        }

    def status_view(self) -> dict[str, Any]:
        job = f'job="{self.job}"'
        up = self.query(f"up{{{job}}}")
        if not up:
            raise BackendError(f"Prometheus at {self.url} scrapes no target of job {self.job!r}; give --job NAME")
        idle = f'sum by (instance) (rate(hypermesh_cpu_seconds_total{{{job},mode=~"idle|iowait"}}[{RATE_WINDOW}]))'
        every = f"sum by (instance) (rate(hypermesh_cpu_seconds_total{{{job}}}[{RATE_WINDOW}]))"
        cpu = self.query(f"100 * (1 - {idle} / {every})")
        memory = self.query(f"100 * hypermesh_memory_used_bytes{{{job}}} / hypermesh_memory_total_bytes{{{job}}}")
        cores = self.query(f"hypermesh_cpu_logical_cores{{{job}}}")
        memory_total = self.query(f"hypermesh_memory_total_bytes{{{job}}}")
        versions = self._labels(f"hypermesh_node_info{{{job}}}", "version")
        ages = self.query(f"time() - timestamp(up{{{job}}})")  # since the last scrape, by Prometheus' clock
        errors = self._scrape_errors() if any(v == 0 for v in up.values()) else {}
        nodes = []
        for instance in sorted(up):
            row: dict[str, Any] = {"node_id": instance, "url": instance, "labels": {}}
            if up[instance] != 1:
                reason = errors.get(instance, "scrape failed")
                row.update(error={"kind": "scrape failed", "reason": reason}, status="unreachable")
            else:
                row.update(
                    error=None,
                    status="ok",
                    stale=False,  # Prometheus marks a series stale itself once a scrape fails
                    last_sample_age_s=_round(ages.get(instance)),
                    version=versions.get(instance),
                    cpu_percent=_round(cpu.get(instance)),
                    memory_percent=_round(memory.get(instance)),
                )
            nodes.append(row)
        current = [n for n in nodes if n["error"] is None]

        def stats(key: str) -> dict[str, float | None]:
            values = [n[key] for n in current if n[key] is not None]
            if not values:
                return {"mean": None, "max": None}
            return {"mean": round(sum(values) / len(values), 2), "max": round(max(values), 2)}

        return {
            "source": f"prometheus {self.url} job {self.job}",
            "summary": {
                "nodes": len(nodes),
                "answered": len(current),
                "current": len(current),
                "failed": [{"node_id": n["node_id"], **n["error"]} for n in nodes if n["error"] is not None],
                "stale": [],
            },
            "cpu_percent": stats("cpu_percent"),
            "memory_percent": stats("memory_percent"),
            "logical_cores": int(sum(cores.get(n["node_id"], 0) for n in current)),
            "memory_total_bytes": int(sum(memory_total.get(n["node_id"], 0) for n in current)),
            "versions": sorted({str(n["version"]) for n in current if n.get("version")}),
            "nodes": nodes,
        }


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 2)  # NaN: no rate yet
