"""Whether eBPF works here, what each probed feature says and what the agent's own programs count.

The agent runs fine without eBPF: these read the status probed at start and the readings of the programs the
agent keeps loaded (``--ebpf syscalls``); they never load anything themselves. What each program exports is its
entry's in ``hypermesh.agent.programs.AGENT_PROGRAMS`` (the ``ebpf_<program>`` modules beside this one).
"""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, gauge
from hypermesh.agent.metrics.scrape import Scrape

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
SUCCESS = gauge(
    "hypermesh_ebpf_program_success",
    "1 if this eBPF program is loaded and its last reading succeeded, else 0 (/v1/ebpf says why).",
)


class EbpfCollector:
    area = "ebpf"

    def collect(self, scrape: Scrape) -> list[Family]:
        status = scrape.ebpf_status
        families = [SUPPORTED.value(1.0 if status.available else 0.0)]
        if status.probe is not None:
            feature = FEATURE.family()
            for name, supported in sorted(status.probe.feature_flags().items()):
                feature.samples.append(((("feature", name),), 1.0 if supported else 0.0))
            families.append(feature)
        programs = scrape.programs()
        if programs:
            loaded = LOADED.family()
            for name, state in sorted(programs.items()):
                loaded.samples.append(((("program", name),), 1.0 if state.loaded else 0.0))
            families.append(loaded)
            success = SUCCESS.family()
            exported: list[Family] = []
            # Imported here: the table imports the ebpf_<program> modules, which the collectors package holds.
            from hypermesh.agent.programs import export_reading

            for name, state in sorted(programs.items()):
                ok = state.loaded and state.error is None and state.reading is not None
                success.samples.append(((("program", name),), 1.0 if ok else 0.0))
                if ok:
                    assert state.reading is not None
                    exported.extend(export_reading(name, state.reading))
            families.append(success)
            families.extend(_merged(exported))
        return families


def _merged(families: list[Family]) -> list[Family]:
    """One family per name: two xdp programs (xdp:eth0, xdp:eth1) each export the same families."""
    out: dict[str, Family] = {}
    for family in families:
        first = out.setdefault(family.name, family)
        if first is not family:
            first.samples.extend(family.samples)
    return list(out.values())
