"""What the agent's ``syscalls`` eBPF program exports: system calls entered machine-wide, by name."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hypermesh.ebpf.programs.syscalls import SyscallCounts

__all__ = ["export"]

SYSCALLS = counter(
    "hypermesh_ebpf_syscalls_total",
    "System calls entered on this machine since the agent loaded its syscalls program, by name.",
)


def export(program: str, reading: SyscallCounts) -> list[Family]:
    calls = SYSCALLS.family()
    for name, count in sorted(reading.syscalls.items()):
        calls.samples.append(((("syscall", name),), float(count)))
    return [calls]
