"""Plain-text tables for ``hypermesh cluster``: one line per node, then the cluster's figures, then what failed."""

from __future__ import annotations

from hypermesh.cli.render import human_bytes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["render"]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _stats(name: str, stats: dict[str, float | None]) -> str:
    if stats["mean"] is None:
        return f"{name}: no current data"
    return f"{name}: mean {stats['mean']:.1f}%, max {stats['max']:.1f}%"


def _footer(summary: dict[str, Any]) -> list[str]:
    lines = [
        f"{summary['current']} of {summary['nodes']} nodes current"
        + (f", {len(summary['stale'])} stale" if summary["stale"] else "")
        + (f", {len(summary['failed'])} failed" if summary["failed"] else "")
    ]
    lines += [f"  failed {f['node_id']}: {f['kind']}: {f['reason']}" for f in summary["failed"]]
    lines += [f"  stale  {node}: its last sample is older than 3 of its intervals" for node in summary["stale"]]
    return lines


def _status(view: dict[str, Any]) -> list[str]:
    rows = []
    for n in view["nodes"]:
        if n["error"] is not None:
            rows.append([n["node_id"], "unreachable", "-", "-", "-", "-", n["url"]])
            continue
        age = n["last_sample_age_s"]
        rows.append(
            [
                n["node_id"],
                n["status"],
                str(n.get("version") or "-"),
                "-" if n["stale"] else _pct(n["cpu_percent"]),
                "-" if n["stale"] else _pct(n["memory_percent"]),
                "-" if age is None else f"{age:.1f}s",
                n["url"],
            ]
        )
    lines = _table(["NODE", "STATUS", "VERSION", "CPU", "MEMORY", "SAMPLE AGE", "URL"], rows)
    lines += [
        "",
        f"capacity: {view['logical_cores']} logical cores, {human_bytes(view['memory_total_bytes'])} of memory",
        _stats("cpu", view["cpu_percent"]),
        _stats("memory", view["memory_percent"]),
    ]
    if "source" in view:
        lines.append(f"from {view['source']}")
    if len(view["versions"]) > 1:
        lines.append(f"agent versions differ: {', '.join(view['versions'])}")
    return lines


def _sample(view: dict[str, Any]) -> list[str]:
    rows = []
    for n in view["nodes"]:
        if n["error"] is not None:
            rows.append([n["node_id"], "unreachable", "-", "-", "-"])
            continue
        s = n["sample"]
        net = sum((i.get("rx_bytes_per_s") or 0) + (i.get("tx_bytes_per_s") or 0) for i in s.get("network") or [])
        disk = sum((d.get("read_bytes_per_s") or 0) + (d.get("write_bytes_per_s") or 0) for d in s.get("disks") or [])
        state = "stale" if n["stale"] else "current"
        rows.append(
            [
                n["node_id"],
                state,
                _pct((s.get("cpu") or {}).get("percent")),
                f"{human_bytes(net)}/s",
                f"{human_bytes(disk)}/s",
            ]
        )
    lines = _table(["NODE", "DATA", "CPU", "NETWORK", "DISK"], rows)
    lines += [
        "",
        _stats("cpu", view["cpu_percent"]),
        _stats("memory", view["memory_percent"]),
        f"network: {human_bytes(view['network_rx_bytes_per_s'])}/s in, {human_bytes(view['network_tx_bytes_per_s'])}/s out",
        f"disk: {human_bytes(view['disk_read_bytes_per_s'])}/s read, {human_bytes(view['disk_write_bytes_per_s'])}/s written",
    ]
    return lines


def _profile(view: dict[str, Any]) -> list[str]:
    rows = []
    for n in view["nodes"]:
        if n["error"] is not None:
            rows.append([n["node_id"], "unreachable", "-", "-", "-"])
            continue
        p = n["profile"]
        cpu, os_ = p.get("cpu") or {}, p.get("os") or {}
        rows.append(
            [
                n["node_id"],
                str(cpu.get("model") or "unknown CPU model"),
                str(cpu.get("logical_cores") or "-"),
                human_bytes((p.get("memory") or {}).get("total_bytes")),
                f"{os_.get('architecture') or '-'} {os_.get('release') or ''}".strip(),
            ]
        )
    lines = _table(["NODE", "CPU", "CORES", "MEMORY", "KERNEL"], rows)
    lines += [
        "",
        f"total: {view['logical_cores']} logical cores, {human_bytes(view['memory_total_bytes'])}, {view['gpus']} GPUs",
    ]
    if view["differs"]:
        for trait in view["differs"]:
            values = view["heterogeneity"][trait]
            lines.append(f"{trait} differs: " + "; ".join(f"{v} ({', '.join(ns)})" for v, ns in values.items()))
    else:
        lines.append("the nodes answering are alike (cpu model, architecture, kernel, gpus, agent version)")
    return lines


def _amount(unit: str | None, value: float) -> str:
    if unit == "bytes":
        return human_bytes(value)
    if unit == "cores":
        return f"{value:g} cores"
    return f"{value:g} {unit or ''}".strip()


def _assets(view: dict[str, Any]) -> list[str]:
    rows = [
        [
            kind,
            str(k["assets"]),
            _amount(k["unit"], k["capacity"]),
            _amount(k["unit"], k["allocated"]),
            _amount(k["unit"], k["allocatable"]),
            "ok" if not k.get("unhealthy") else "; ".join(k["unhealthy"]),
        ]
        for kind, k in view["kinds"].items()
    ]
    return _table(["KIND", "ASSETS", "CAPACITY", "ALLOCATED", "ALLOCATABLE", "HEALTH"], rows)


def render(name: str, view: dict[str, Any]) -> str:
    body = {"status": _status, "sample": _sample, "profile": _profile, "assets": _assets}[name](view)
    return "\n".join([*body, "", *_footer(view["summary"])]) + "\n"
