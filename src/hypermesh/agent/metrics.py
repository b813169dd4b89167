"""What ``/metrics`` says: one collector per area, one fast writer for both formats, prometheus_client as reference.

Each area (cpu, memory, pressure, disk, network, ebpf, assets, agent) is a small class whose
``collect(scrape)`` returns ``Family`` objects built from the Sampler's raw counters: monotonic
``_total`` counters stay counters (Prometheus computes rates), everything is in base units
(seconds, bytes, ratios 0..1). Like node_exporter, every scrape also reports per-collector
``hypermesh_scrape_collector_success`` and ``hypermesh_scrape_collector_duration_seconds``; a failing
collector drops its own families, never the scrape.

One writer renders the families in both formats, Prometheus text 0.0.4 and OpenMetrics 1.0 (which
Prometheus asks for first in its Accept header). prometheus_client's generic writers build a ``Sample``
namedtuple, sort and escape labels for every line on every scrape: measured here at 588 samples, its
OpenMetrics scrape cost 4.7 ms of CPU against node_exporter's 3.4 ms. ``TextWriter`` formats the label
part of each line (``name{cpu="0",mode="user"} ``) once and caches it, so a scrape costs one float
formatting per sample (0.9 ms at 588 samples; bench/bench_agent.py).

prometheus_client stays the reference: ``ClientRegistry`` holds one prometheus_client custom collector
per area in a private ``CollectorRegistry`` (usable wherever prometheus_client is), and the tests hold
the fast output byte-identical to prometheus_client's own text and OpenMetrics writers.
"""

from __future__ import annotations

import time

from hypermesh.model import Counters, SystemProfile

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from typing import Any, Protocol

    class AreaCollector(Protocol):
        area: str

        def collect(self, scrape: Scrape) -> list[Family]: ...


# Labels are kept as a tuple of (name, value) pairs sorted by name: the order both text formats use.
Labels = tuple[tuple[str, str], ...]


class Family:
    """One metric family: name (with ``_total`` for counters), type, help, unit and its samples."""

    __slots__ = ("help", "kind", "name", "samples", "unit")

    def __init__(self, name: str, kind: str, help: str, unit: str = "") -> None:
        if kind == "counter" and not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        self.name = name
        self.kind = kind
        self.help = help
        self.unit = unit
        self.samples: list[tuple[Labels, float]] = []

    def add(self, value: float, **labels: str) -> None:
        self.samples.append((tuple(sorted(labels.items())), value))

    def add_sorted(self, labels: Labels, value: float) -> None:
        """Add with labels already sorted by name (the hot path: no dict, no sort)."""
        self.samples.append((labels, value))


class Scrape:
    """Everything one scrape reads, read at most once: the counters, the profile, the eBPF status."""

    __slots__ = ("_counters", "_read_counters", "_read_programs", "ebpf_status", "profile", "stats")

    def __init__(
        self,
        read_counters: Callable[[], Counters],
        profile: SystemProfile | None,
        ebpf_status: dict[str, Any],
        stats: dict[str, float],
        read_programs: Callable[[], dict[str, dict[str, Any]]] | None = None,
    ) -> None:
        self._read_counters = read_counters
        self._counters: Counters | None = None
        self._read_programs = read_programs
        self.profile = profile
        self.ebpf_status = ebpf_status
        self.stats = stats

    def programs(self) -> dict[str, dict[str, Any]]:
        """Readings of the eBPF programs the agent keeps loaded: {name: {loaded, error, reading}}."""
        return self._read_programs() if self._read_programs is not None else {}

    @property
    def counters(self) -> Counters:
        if self._counters is None:
            self._counters = self._read_counters()
        return self._counters


# ------------------------------------------------------------------------------------- collectors

_CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
_CPU_FIELDS = tuple(f"{m}_seconds" for m in _CPU_MODES)


class CpuCollector:
    area = "cpu"

    def __init__(self) -> None:
        # (cpu, mode) -> sorted labels; CPUs come and go rarely (hot-plug), so the cache stays tiny.
        self._labels: dict[tuple[int, str], Labels] = {}

    def collect(self, scrape: Scrape) -> list[Family]:
        counters = scrape.counters
        seconds = Family(
            "hypermesh_cpu_seconds_total",
            "counter",
            "Seconds each CPU spent in each mode since boot (/proc/stat).",
            "seconds",
        )
        labels = self._labels
        for times in counters.cpu:
            cpu = times.cpu
            for mode, field in zip(_CPU_MODES, _CPU_FIELDS, strict=True):
                key = (cpu, mode)
                label = labels.get(key)
                if label is None:
                    label = labels[key] = (("cpu", str(cpu)), ("mode", mode))
                seconds.samples.append((label, getattr(times, field)))
        load = counters.load
        families = [seconds]
        for window, value in (("1", load.avg1), ("5", load.avg5), ("15", load.avg15)):
            family = Family(
                f"hypermesh_load{window}",
                "gauge",
                f"{window}-minute load average: runnable plus uninterruptible tasks.",
            )
            family.samples.append(((), value))
            families.append(family)
        return families


class MemoryCollector:
    area = "memory"

    def collect(self, scrape: Scrape) -> list[Family]:
        memory = scrape.counters.memory
        rows = (
            ("hypermesh_memory_total_bytes", "Usable physical memory (MemTotal).", memory.total_bytes),
            (
                "hypermesh_memory_available_bytes",
                "Memory available for new work without swapping (MemAvailable).",
                memory.available_bytes,
            ),
            ("hypermesh_memory_used_bytes", "Memory in use: total minus available.", memory.used_bytes),
            ("hypermesh_memory_cached_bytes", "Page cache and reclaimable memory.", memory.cached_bytes),
            ("hypermesh_memory_swap_used_bytes", "Swap space in use.", memory.swap_used_bytes),
        )
        families = []
        for name, text, value in rows:
            family = Family(name, "gauge", text, "bytes")
            family.samples.append(((), value))
            families.append(family)
        return families


class PressureCollector:
    """Memory pressure stall information (PSI, /proc/pressure/memory); nothing when the kernel lacks PSI."""

    area = "pressure"

    def collect(self, scrape: Scrape) -> list[Family]:
        pressure = scrape.counters.pressure
        if pressure is None:
            return []
        waiting = Family(
            "hypermesh_pressure_memory_waiting_seconds_total",
            "counter",
            "Seconds in which at least one task stalled waiting for memory (PSI 'some').",
            "seconds",
        )
        waiting.samples.append(((), pressure.some_total_seconds))
        families = [waiting]
        avg = Family(
            "hypermesh_pressure_memory_avg10_ratio",
            "gauge",
            "Share of the last 10 s in which tasks stalled on memory, 0..1 (PSI avg10), by kind some/full.",
            "ratio",
        )
        avg.samples.append(((("kind", "some"),), pressure.some_avg10 / 100.0))
        if pressure.full_total_seconds is not None:
            stalled = Family(
                "hypermesh_pressure_memory_stalled_seconds_total",
                "counter",
                "Seconds in which all non-idle tasks stalled waiting for memory (PSI 'full').",
                "seconds",
            )
            stalled.samples.append(((), pressure.full_total_seconds))
            families.append(stalled)
        if pressure.full_avg10 is not None:
            avg.samples.append(((("kind", "full"),), pressure.full_avg10 / 100.0))
        families.append(avg)
        return families


_DISK_COLUMNS = (
    ("hypermesh_disk_reads_completed_total", "read_ops", "Reads completed (/proc/diskstats).", ""),
    ("hypermesh_disk_read_bytes_total", "read_bytes", "Bytes read.", "bytes"),
    ("hypermesh_disk_read_time_seconds_total", "read_time_seconds", "Seconds spent by all reads.", "seconds"),
    ("hypermesh_disk_writes_completed_total", "write_ops", "Writes completed.", ""),
    ("hypermesh_disk_written_bytes_total", "write_bytes", "Bytes written.", "bytes"),
    (
        "hypermesh_disk_write_time_seconds_total",
        "write_time_seconds",
        "Seconds spent by all writes.",
        "seconds",
    ),
    (
        "hypermesh_disk_io_time_seconds_total",
        "busy_seconds",
        "Seconds the device had I/O in flight (its busy time).",
        "seconds",
    ),
)

_NET_COLUMNS = (
    ("hypermesh_network_receive_bytes_total", "rx_bytes", "Bytes received (/proc/net/dev).", "bytes"),
    ("hypermesh_network_receive_packets_total", "rx_packets", "Packets received.", ""),
    ("hypermesh_network_receive_errors_total", "rx_errors", "Receive errors.", ""),
    ("hypermesh_network_receive_drops_total", "rx_drops", "Received packets dropped.", ""),
    ("hypermesh_network_transmit_bytes_total", "tx_bytes", "Bytes transmitted.", "bytes"),
    ("hypermesh_network_transmit_packets_total", "tx_packets", "Packets transmitted.", ""),
    ("hypermesh_network_transmit_errors_total", "tx_errors", "Transmit errors.", ""),
    ("hypermesh_network_transmit_drops_total", "tx_drops", "Transmitted packets dropped.", ""),
)


class DiskCollector:
    area = "disk"

    def collect(self, scrape: Scrape) -> list[Family]:
        return _per_device(scrape.counters.disks, _DISK_COLUMNS, "device")


class NetworkCollector:
    area = "network"

    def collect(self, scrape: Scrape) -> list[Family]:
        return _per_device(scrape.counters.network, _NET_COLUMNS, "interface")


def _per_device(rows: Sequence[Any], columns: Sequence[tuple[str, str, str, str]], label: str) -> list[Family]:
    families = []
    for name, field, text, unit in columns:
        family = Family(name, "counter", text, unit)
        for row in rows:
            family.samples.append((((label, row.name),), getattr(row, field)))
        families.append(family)
    return families


class EbpfCollector:
    """Whether eBPF works here and what each probed feature says; the agent runs fine without it."""

    area = "ebpf"

    def collect(self, scrape: Scrape) -> list[Family]:
        status = scrape.ebpf_status
        supported = Family(
            "hypermesh_ebpf_supported",
            "gauge",
            "1 if eBPF programs can be loaded by this agent, else 0 (see /v1/ebpf for the reason).",
        )
        supported.samples.append(((), 1.0 if status.get("available") else 0.0))
        families = [supported]
        features = _boolean_features(status.get("probe") or {})
        if features:
            feature = Family(
                "hypermesh_ebpf_feature_supported",
                "gauge",
                "1 if the kernel supports this eBPF feature (cached probe), else 0.",
            )
            for name, value in sorted(features.items()):
                feature.samples.append(((("feature", name),), 1.0 if value else 0.0))
            families.append(feature)
        programs = scrape.programs()
        if programs:
            loaded = Family(
                "hypermesh_ebpf_program_loaded",
                "gauge",
                "1 if the agent has this eBPF program loaded and attached, else 0 (/v1/ebpf says why).",
            )
            for name, entry in sorted(programs.items()):
                loaded.samples.append(((("program", name),), 1.0 if entry["loaded"] else 0.0))
            families.append(loaded)
            reading = (programs.get("syscalls") or {}).get("reading")
            if reading:
                calls = Family(
                    "hypermesh_ebpf_syscalls_total",
                    "counter",
                    "System calls entered on this machine since the agent loaded its syscalls program, by name.",
                )
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


class AssetsCollector:
    """Capacity of what the machine has, from its profile (read once at start)."""

    area = "assets"

    def __init__(self, version: str) -> None:
        self._version = version

    def collect(self, scrape: Scrape) -> list[Family]:
        profile = scrape.profile
        if profile is None:
            raise RuntimeError("the system profile could not be read at start")
        info = Family(
            "hypermesh_node_info",
            "gauge",
            "Always 1; labels describe the node and the agent version.",
        )
        info.add(
            1.0,
            hostname=profile.os.hostname,
            kernel=profile.os.kernel,
            os=profile.os.system,
            architecture=profile.cpu.architecture,
            version=self._version,
        )
        cores = Family("hypermesh_cpu_logical_cores", "gauge", "Logical CPUs (hardware threads) online.")
        cores.samples.append(((), float(profile.cpu.logical_cores)))
        families = [info, cores]
        if profile.cpu.physical_cores is not None:
            physical = Family("hypermesh_cpu_physical_cores", "gauge", "Physical CPU cores.")
            physical.samples.append(((), float(profile.cpu.physical_cores)))
            families.append(physical)
        storage = Family("hypermesh_storage_device_size_bytes", "gauge", "Capacity of each block device.", "bytes")
        for device in profile.storage:
            if device.size_bytes is not None:
                storage.add(float(device.size_bytes), device=device.name)
        families.append(storage)
        speed = Family(
            "hypermesh_network_interface_speed_bytes",
            "gauge",
            "Link speed of each interface in bytes per second, where the driver reports one.",
            "bytes",
        )
        for interface in profile.network:
            if interface.speed_mbps is not None and interface.speed_mbps > 0:
                speed.add(interface.speed_mbps * 125_000.0, interface=interface.name)
        families.append(speed)
        if profile.limits.memory_limit_bytes is not None:
            limit = Family(
                "hypermesh_cgroup_memory_limit_bytes",
                "gauge",
                "Memory limit of the agent's cgroup.",
                "bytes",
            )
            limit.samples.append(((), float(profile.limits.memory_limit_bytes)))
            families.append(limit)
        return families


class AgentCollector:
    """The agent's own health: samples taken, requests in flight and turned away."""

    area = "agent"

    def collect(self, scrape: Scrape) -> list[Family]:
        stats = scrape.stats
        samples = Family(
            "hypermesh_agent_samples_total", "counter", "Samples the agent's sampler has taken since start."
        )
        samples.samples.append(((), stats.get("samples", 0.0)))
        in_flight = Family(
            "hypermesh_agent_http_requests_in_flight",
            "gauge",
            "HTTP requests being served right now, this scrape included.",
        )
        in_flight.samples.append(((), stats.get("in_flight", 0.0)))
        rejected = Family(
            "hypermesh_agent_http_rejected_total",
            "counter",
            "HTTP requests refused, by reason: in_flight (limit reached), timeout, unauthorized.",
        )
        for reason in ("in_flight", "timeout", "unauthorized"):
            rejected.samples.append(((("reason", reason),), stats.get(f"rejected_{reason}", 0.0)))
        return [samples, in_flight, rejected]


def default_collectors(version: str) -> list[AreaCollector]:
    return [
        CpuCollector(),
        MemoryCollector(),
        PressureCollector(),
        DiskCollector(),
        NetworkCollector(),
        EbpfCollector(),
        AssetsCollector(version),
        AgentCollector(),
    ]


# ------------------------------------------------------------------------------------------ scrape


def collect(
    collectors: Sequence[AreaCollector],
    scrape: Scrape,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[list[Family], list[str]]:
    """Run every collector; returns the families (scrape meta-metrics last) and the failures.

    ``clock`` times each collector; the golden-file test passes a constant one.
    """
    families: list[Family] = []
    failures: list[str] = []
    success = Family(
        "hypermesh_scrape_collector_success", "gauge", "1 if the collector succeeded in this scrape, else 0."
    )
    duration = Family(
        "hypermesh_scrape_collector_duration_seconds",
        "gauge",
        "Seconds the collector took in this scrape.",
        "seconds",
    )
    for collector in collectors:
        label = (("collector", collector.area),)
        start = clock()
        try:
            produced = collector.collect(scrape)
        except Exception as exc:  # a broken area must not take the scrape down with it
            failures.append(f"{collector.area}: {type(exc).__name__}: {exc}")
            success.samples.append((label, 0.0))
        else:
            families.extend(produced)
            success.samples.append((label, 1.0))
        duration.samples.append((label, clock() - start))
    families.append(success)
    families.append(duration)
    return families, failures


# ------------------------------------------------------------------------------------- text writer


def _escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class TextWriter:
    """Prometheus text 0.0.4 or OpenMetrics 1.0, with each line's prefix (name and labels) cached.

    The two formats share sample lines; they differ in the family header (OpenMetrics names a counter
    family without ``_total``, adds ``# UNIT`` and escapes quotes in help) and OpenMetrics' ``# EOF``.
    """

    # Devices and interfaces can come and go (containers, hot-plug): clear the cache past this size.
    MAX_CACHED_PREFIXES = 20_000

    def __init__(self) -> None:
        self._headers: dict[tuple[str, str, str, str, bool], str] = {}
        self._prefixes: dict[tuple[str, Labels], str] = {}

    @staticmethod
    def _header(family: Family, openmetrics: bool) -> str:
        name = family.name
        text = family.help.replace("\\", r"\\").replace("\n", r"\n")
        if not openmetrics:
            return f"# HELP {name} {text}\n# TYPE {name} {family.kind}\n"
        base = name.removesuffix("_total") if family.kind == "counter" else name
        text = text.replace('"', r"\"")
        header = f"# HELP {base} {text}\n# TYPE {base} {family.kind}\n"
        if family.unit and base.endswith(f"_{family.unit}"):
            header += f"# UNIT {base} {family.unit}\n"
        return header

    def render(self, families: Sequence[Family], openmetrics: bool = False) -> bytes:
        from prometheus_client.utils import floatToGoString

        headers = self._headers
        prefixes = self._prefixes
        if len(prefixes) > self.MAX_CACHED_PREFIXES:
            prefixes.clear()
        out: list[str] = []
        append = out.append
        for family in families:
            name = family.name
            key = (name, family.kind, family.help, family.unit, openmetrics)
            header = headers.get(key)
            if header is None:
                header = headers[key] = self._header(family, openmetrics)
            append(header)
            for labels, value in family.samples:
                pkey = (name, labels)
                prefix = prefixes.get(pkey)
                if prefix is None:
                    if labels:
                        inner = ",".join(f'{k}="{_escape_label_value(v)}"' for k, v in labels)
                        prefix = f"{name}{{{inner}}} "
                    else:
                        prefix = f"{name} "
                    prefixes[pkey] = prefix
                append(prefix)
                # floatToGoString is prometheus_client's own number format: keeps the output identical.
                append(floatToGoString(value))  # type: ignore[no-untyped-call,unused-ignore]
                append("\n")
        if openmetrics:
            append("# EOF\n")
        return "".join(out).encode()


# ------------------------------------------------------------------ prometheus_client (OpenMetrics)


class _ClientCollector:
    """A prometheus_client custom collector for one area, fed the families of the current scrape."""

    def __init__(self, area: str) -> None:
        self.area = area
        self.families: list[Family] = []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.metrics_core import Metric

        for family in self.families:
            base = family.name.removesuffix("_total") if family.kind == "counter" else family.name
            unit = family.unit if family.unit and base.endswith(f"_{family.unit}") else ""
            metric = Metric(base, family.help, family.kind, unit)
            for labels, value in family.samples:
                metric.add_sample(family.name, dict(labels), value)
            yield metric


class ClientRegistry:
    """The prometheus_client side: one custom collector per area in a private CollectorRegistry."""

    def __init__(self, areas: Sequence[str]) -> None:
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry(auto_describe=False)
        self._by_area = {area: _ClientCollector(area) for area in [*areas, "scrape"]}
        for collector in self._by_area.values():
            self.registry.register(collector)

    def load(self, families: Sequence[Family]) -> None:
        for collector in self._by_area.values():
            collector.families = []
        for family in families:
            area = area_of(family.name)
            self._by_area.get(area, self._by_area["scrape"]).families.append(family)

    def render_text(self) -> bytes:
        from prometheus_client.exposition import generate_latest

        data: bytes = generate_latest(self.registry)  # type: ignore[no-untyped-call,unused-ignore]
        return data

    def render_openmetrics(self) -> bytes:
        from prometheus_client.openmetrics.exposition import generate_latest

        data: bytes = generate_latest(self.registry)  # type: ignore[no-untyped-call,unused-ignore]
        return data


_AREA_PREFIXES = (
    ("hypermesh_scrape_", "scrape"),
    ("hypermesh_cpu_logical", "assets"),
    ("hypermesh_cpu_physical", "assets"),
    ("hypermesh_cpu_", "cpu"),
    ("hypermesh_load", "cpu"),
    ("hypermesh_memory_", "memory"),
    ("hypermesh_pressure_", "pressure"),
    ("hypermesh_disk_", "disk"),
    ("hypermesh_network_interface_", "assets"),
    ("hypermesh_network_", "network"),
    ("hypermesh_ebpf_", "ebpf"),
    ("hypermesh_agent_", "agent"),
)


def area_of(name: str) -> str:
    for prefix, area in _AREA_PREFIXES:
        if name.startswith(prefix):
            return area
    return "assets"


OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def wants_openmetrics(accept: str) -> bool:
    """True when the Accept header prefers OpenMetrics (as Prometheus does) over the text format."""
    best_q = -1.0
    best_is_om = False
    for part in accept.split(","):
        media, _, params = part.strip().partition(";")
        media = media.strip().lower()
        if media not in ("application/openmetrics-text", "text/plain", "*/*"):
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q > best_q:
            best_q = q
            best_is_om = media == "application/openmetrics-text"
    return best_is_om and best_q > 0
