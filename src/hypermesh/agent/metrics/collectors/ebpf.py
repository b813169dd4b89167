"""Whether eBPF works here, what each probed feature says and what the agent's own programs count.

The agent runs fine without eBPF: these read the status probed at start and the readings of the programs the
agent keeps loaded (``--ebpf syscalls``); they never load anything themselves.
"""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter, gauge
from hypermesh.agent.metrics.scrape import Scrape

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["EbpfCollector"]

SUPPORTED = gauge(
    "hypermesh_ebpf_supported",
    "1 if eBPF programs can be loaded by this agent, else 0 (see /v1/ebpf for the reason).",
)
FEATURE = gauge(
    "hypermesh_ebpf_feature_supported", "1 if the kernel supports this eBPF feature (cached probe), else 0."
)
LOADED = gauge(
    "hypermesh_ebpf_program_loaded",
    "1 if the agent has this eBPF program loaded and attached, else 0 (/v1/ebpf says why).",
)
SYSCALLS = counter(
    "hypermesh_ebpf_syscalls_total",
    "System calls entered on this machine since the agent loaded its syscalls program, by name.",
)


class EbpfCollector:
    area = "ebpf"

    def collect(self, scrape: Scrape) -> list[Family]:
        status = scrape.ebpf_status
        families = [SUPPORTED.value(1.0 if status.get("available") else 0.0)]
        features = _boolean_features(status.get("probe") or {})
        if features:
            feature = FEATURE.family()
            for name, value in sorted(features.items()):
                feature.samples.append(((("feature", name),), 1.0 if value else 0.0))
            families.append(feature)
        programs = scrape.programs()
        if programs:
            loaded = LOADED.family()
            for name, entry in sorted(programs.items()):
                loaded.samples.append(((("program", name),), 1.0 if entry["loaded"] else 0.0))
            families.append(loaded)
            reading = (programs.get("syscalls") or {}).get("reading")
            if reading:
                calls = SYSCALLS.family()
                for name, count in sorted(reading["syscalls"].items()):
                    calls.samples.append(((("syscall", name),), float(count)))
                families.append(calls)
        return families


def _boolean_features(probe: dict[str, Any], prefix: str = "") -> dict[str, bool]:
    """Flatten the probe's nested booleans to ``a.b`` names; other values are not metrics."""
    flat: dict[str, bool] = {}
    for key, value in probe.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            flat[name] = value
        elif isinstance(value, dict):
            flat.update(_boolean_features(value, f"{name}."))
        elif isinstance(value, list):  # [{"name": ..., "supported": bool, "reason": ...}, ...]
            for item in value:
                if isinstance(item, dict) and isinstance(item.get("supported"), bool) and "name" in item:
                    flat[f"{prefix}{item['name']}"] = item["supported"]
    return flat
