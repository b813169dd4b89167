"""Human output for the CLI: rich tables for the profile and a live, redrawn-in-place sample view."""

from __future__ import annotations

import io
import sys
import time

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from hypermesh.model import CpuFrequency, CpuInfo, Limits, MemoryInfo, NumaNode, Sample, SystemProfile

__all__ = ["human_bytes", "live_samples", "render_profile"]


class PipeConsole(Console):
    """A rich Console for which a reader that went away (`| head`) is a normal end, as for the JSON output.

    rich turns a broken pipe into exit status 1 with nothing on stderr; the CLI's main treats BrokenPipeError as
    a clean exit 0.
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


def human_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(value) < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)


def human_rate(value: float) -> str:
    return f"{human_bytes(value)}/s"


def _cpus(cpus: Sequence[int]) -> str:
    """[0,1,2,3,8] -> '0-3,8': the kernel's own cpulist notation."""
    parts: list[str] = []
    start = prev = None
    for cpu in [*cpus, None]:
        if start is not None and (cpu is None or prev is None or cpu != prev + 1):
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = None
        if cpu is not None and start is None:
            start = cpu
        prev = cpu
    return ",".join(parts)


def _kv(title: str, rows: list[tuple[str, object]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for key, value in rows:
        table.add_row(key, "-" if value is None else str(value))
    return table


# Into a file or a pipe nothing is as wide as a terminal: tables take the width their content needs (MACs and
# addresses whole, not "02:fc:00:00:…"), and lines carry no trailing padding for grep or diff to trip on.
PIPE_WIDTH = 400


def render_profile(profile: SystemProfile, console: Console | None = None) -> None:
    if console is None:
        console = PipeConsole()
        if not console.is_terminal:
            buffer = io.StringIO()
            _render_profile(profile, Console(file=buffer, width=PIPE_WIDTH, color_system=None))
            sys.stdout.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))
            return
    _render_profile(profile, console)


# What a backend does not know is said once, in words, where the value would be: never "?", "None" or a bare dash
# in the System table (the portable backend knows no sockets, NUMA nodes, caches or cgroup limits; JSON has null).
UNKNOWN = "unknown on this OS"


def _cpu_line(c: CpuInfo) -> str:
    counts = [f"{c.logical_cores} logical"]
    counts.append(f"{c.physical_cores} physical" if c.physical_cores is not None else "physical core count unknown")
    counts.append(f"{c.sockets} socket(s)" if c.sockets is not None else "socket count unknown")
    line = f"{c.model or 'model unknown'} — {', '.join(counts)}"
    return line + (" on this OS" if None in (c.model, c.physical_cores, c.sockets) else "")


def _frequency_line(f: CpuFrequency) -> str:
    known = [f"{k} {v:.0f} MHz" for k, v in (("min", f.min), ("max", f.max), ("now", f.current)) if v]
    return " / ".join(known) or UNKNOWN


def _numa_line(nodes: Sequence[NumaNode]) -> str:
    if not nodes:
        return UNKNOWN
    return ", ".join(
        f"node{n.id}: cpus {_cpus(n.cpus)}"
        + (f", {human_bytes(n.memory_total_bytes)}" if n.memory_total_bytes is not None else ", memory unknown")
        for n in nodes
    )


def _memory_line(m: MemoryInfo) -> str:
    swap = f"swap {human_bytes(m.swap_total_bytes)}" if m.swap_total_bytes is not None else "swap unknown"
    huge = (
        f"hugepage {human_bytes(m.hugepage_size_bytes)}"
        if m.hugepage_size_bytes is not None
        else "hugepage size unknown"
    )
    return f"{human_bytes(m.total_bytes)} ({swap}, {huge})"


def _limits_line(lim: Limits) -> str:
    if lim.cgroup_version is None:
        return f"cgroup limits {UNKNOWN}"
    # A limit of 0 is a limit (pids.max 0 forbids any fork): only None means unlimited.
    return (
        f"cgroup v{lim.cgroup_version}: cpu "
        f"{'unlimited' if lim.cpu_quota_cores is None else f'{lim.cpu_quota_cores:g} cores'}, memory "
        f"{'unlimited' if lim.memory_limit_bytes is None else human_bytes(lim.memory_limit_bytes)}, "
        f"pids {'unlimited' if lim.pids_max is None else lim.pids_max}"
    )


def _render_profile(profile: SystemProfile, console: Console) -> None:
    o, c = profile.os, profile.cpu
    console.print(
        _kv(
            "System",
            [
                ("host", o.hostname),
                ("os", f"{o.distribution or o.system} ({o.architecture})"),
                ("kernel", o.release),
                ("cpu", _cpu_line(c)),
                ("frequency", _frequency_line(c.frequency_mhz)),
                ("core types", ", ".join(f"{t.kind} {_cpus(t.cpus)}" for t in c.core_types) or UNKNOWN),
                ("numa", _numa_line(c.numa_nodes)),
                ("memory", _memory_line(profile.memory)),
                ("limits", _limits_line(profile.limits)),
                ("gpus", ", ".join(str(g.get("name", g)) for g in profile.gpus) or "none"),
            ],
        )
    )
    caches = Table(title="CPU caches", title_justify="left")
    for col in ("level", "type", "size", "shared by cpus"):
        caches.add_column(col)
    for cache in c.caches:
        caches.add_row(f"L{cache.level}", cache.type, human_bytes(cache.size_bytes), _cpus(cache.shared_cpu_list))
    storage = Table(title="Storage", title_justify="left")
    for col in ("device", "kind", "size", "model", "mounts"):
        storage.add_column(col)
    for d in profile.storage:
        mounts = ", ".join(
            f"{mt.mountpoint} ({mt.fstype}"
            + (f", {human_bytes(mt.free_bytes)} free)" if mt.free_bytes is not None else ")")
            for mt in d.mounts
        )
        storage.add_row(d.name, d.kind, human_bytes(d.size_bytes), d.model or "-", mounts or "-")
    network = Table(title="Network", title_justify="left")
    for col in ("interface", "kind", "state", "mtu", "speed", "mac", "addresses"):
        network.add_column(col)
    for n in profile.network:
        network.add_row(
            n.name,
            n.kind,
            "up" if n.up else "down",
            str(n.mtu or "-"),
            f"{n.speed_mbps} Mb/s" if n.speed_mbps else "-",
            n.mac or "-",
            ", ".join(n.addresses) or "-",
        )
    # An empty table would be a frame with nothing in it: say what is missing instead.
    console.print(caches if c.caches else Text(f"CPU caches {UNKNOWN}"))
    console.print(storage if profile.storage else Text("Storage: no block devices found"))
    console.print(network if profile.network else Text("Network: no interfaces found"))
    console.print(Text(f"profiled in {profile.timings_ms.get('total', 0):.2f} ms", style="dim"))


def _bar(percent: float, width: int = 30) -> Text:
    filled = round(percent / 100 * width)
    style = "green" if percent < 60 else "yellow" if percent < 85 else "red"
    return Text("█" * filled, style=style) + Text("·" * (width - filled), style="dim")


def sample_view(sample: Sample) -> Group:
    cpu, mem = sample.cpu, sample.memory
    cores = Table(title=f"CPU {cpu.percent:5.1f} %  (source: {cpu.source})", title_justify="left", box=None)
    cores.add_column("core")
    cores.add_column("busy", justify="right")
    cores.add_column("")
    for core, pct in enumerate(cpu.per_core):
        cores.add_row(f"cpu{core}", f"{pct:5.1f} %", _bar(pct))
    psi = mem.pressure
    used_pct = 100.0 * mem.used_bytes / mem.total_bytes if mem.total_bytes else 0.0
    summary = _kv(
        "Memory and load",
        [
            (
                "modes",
                f"user {cpu.user_percent:.1f} %  system {cpu.system_percent:.1f} %  iowait {cpu.iowait_percent:.1f} %  steal {cpu.steal_percent:.1f} %",
            ),
            (
                "memory",
                f"{human_bytes(mem.used_bytes)} used of {human_bytes(mem.total_bytes)} ({used_pct:.1f} %), {human_bytes(mem.available_bytes)} available",
            ),
            (
                "pressure",
                f"some {psi.some_avg10:.2f} %  full {psi.full_avg10 or 0:.2f} % (avg10)"
                if psi
                else "PSI not available on this kernel",
            ),
            ("load", f"{sample.load.avg1:.2f} {sample.load.avg5:.2f} {sample.load.avg15:.2f}"),
        ],
    )
    io = Table(title="Disks and network", title_justify="left")
    for col in ("device", "read / rx", "write / tx", "ops or packets /s", "busy or errors"):
        io.add_column(col, justify="right" if col != "device" else "left")
    for d in sample.disks:
        io.add_row(
            d.name,
            human_rate(d.read_bytes_per_s),
            human_rate(d.write_bytes_per_s),
            f"{d.read_ops_per_s + d.write_ops_per_s:.0f}",
            f"{d.busy_percent:.1f} %",
        )
    for n in sample.network:
        io.add_row(
            n.name,
            human_rate(n.rx_bytes_per_s),
            human_rate(n.tx_bytes_per_s),
            f"{n.rx_packets_per_s + n.tx_packets_per_s:.0f}",
            f"{n.errors_per_s:.0f} err/s",
        )
    return Group(cores, summary, io, Text(f"interval {sample.interval_s * 1000:.1f} ms — Ctrl-C to stop", style="dim"))


def sample_line(sample: Sample) -> str:
    """One plain line per sample, for a table view whose output is not a terminal (a file, a pipe)."""
    cpu, mem = sample.cpu, sample.memory
    cores = " ".join(f"{p:.1f}" for p in cpu.per_core)
    psi = f"{mem.pressure.some_avg10:.2f}" if mem.pressure else "-"
    read = sum(d.read_bytes_per_s for d in sample.disks)
    write = sum(d.write_bytes_per_s for d in sample.disks)
    rx = sum(n.rx_bytes_per_s for n in sample.network)
    tx = sum(n.tx_bytes_per_s for n in sample.network)
    clock = time.strftime("%H:%M:%S", time.localtime(sample.timestamp)) + f".{int(sample.timestamp % 1 * 1000):03d}"
    return (
        f"{clock} cpu {cpu.percent:5.1f}% [{cores}] mem {human_bytes(mem.used_bytes)}/{human_bytes(mem.total_bytes)} "
        f"psi {psi} load {sample.load.avg1:.2f} disk r {human_rate(read)} w {human_rate(write)} "
        f"net rx {human_rate(rx)} tx {human_rate(tx)}"
    )


def live_samples(samples: Iterable[Sample], interval: float) -> None:
    from rich.live import Live

    console = PipeConsole()
    if not console.is_terminal:
        # Redrawing in place needs a terminal; a file or a pipe gets one line per sample, as it comes.
        out = sys.stdout
        for sample in samples:
            out.write(sample_line(sample) + "\n")
            out.flush()
        return
    # Redraw at most ~10 times a second however fast we sample: a terminal cannot show 100 Hz anyway. Paced on
    # the monotonic clock: a wall clock stepped back (NTP, `date -s`) must not freeze the view until it catches up.
    with Live(console=console, auto_refresh=False, transient=False) as live:
        last: float | None = None
        pending: Sample | None = None
        for sample in samples:
            now = time.monotonic()
            if last is None or interval >= 0.1 or now - last >= 0.1:
                live.update(sample_view(sample), refresh=True)
                last, pending = now, None
            else:
                pending = sample
        if pending is not None:  # the view that stays on screen is the last sample, not one skipped earlier
            live.update(sample_view(pending), refresh=True)
