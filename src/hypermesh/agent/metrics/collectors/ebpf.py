"""Whether eBPF works here, what each probed feature says and what the agent's own programs count.

The agent runs fine without eBPF: these read the status probed at start and the readings of the programs the
agent keeps loaded (``--ebpf syscalls``); they never load anything themselves.
"""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter, gauge
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
SYSCALLS = counter(
    "hypermesh_ebpf_syscalls_total",
    "System calls entered on this machine since the agent loaded its syscalls program, by name.",
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
            syscalls = programs.get("syscalls")
            if syscalls is not None and syscalls.reading is not None:
                # Loaded programs imply the eBPF pillar imported: this import is a lookup in sys.modules.
                from hypermesh.ebpf.programs.syscalls import SyscallCounts

                reading = syscalls.reading
                if isinstance(reading, SyscallCounts):
                    calls = SYSCALLS.family()
                    for name, count in sorted(reading.syscalls.items()):
                        calls.samples.append(((("syscall", name),), float(count)))
                    families.append(calls)
        return families
