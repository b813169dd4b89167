"""What the agent's ``execsnoop`` eBPF program exports: programs executed, by command name, and events lost."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hypermesh.agent.exec_feed import ExecSummary

__all__ = ["export"]

EXECS = counter(
    "hypermesh_ebpf_execs_total",
    "Successful execve/execveat calls since the agent loaded its execsnoop program, by the new program's command "
    'name (comm); past the agent\'s cap on distinct names the rest count under comm="(other)".',
)
LOST = counter(
    "hypermesh_ebpf_exec_events_lost_total",
    "Exec events the kernel dropped because the agent's ring buffer was full (not in hypermesh_ebpf_execs_total).",
)


def export(program: str, reading: ExecSummary) -> list[Family]:
    execs = EXECS.family()
    for comm, count in sorted(reading.by_comm.items()):
        execs.samples.append(((("comm", comm),), float(count)))
    return [execs, LOST.value(float(reading.lost))]
