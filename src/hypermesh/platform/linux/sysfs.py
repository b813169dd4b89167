"""Readers for /sys/devices/system: CPU topology, caches, frequency, NUMA nodes, hybrid core types, cpuidle.

Every reader takes the sysfs root so tests point it at a fixture tree; files are read through files.py.
"""

from __future__ import annotations

from hypermesh.model import CoreType, CpuCache, NumaNode
from hypermesh.platform.linux.files import listdir, read_int, read_once, read_str
from hypermesh.platform.linux.procfs import parse_cpulist, parse_meminfo

__all__ = [
    "caches",
    "core_types",
    "cpu_dir",
    "cpuidle_time_paths",
    "frequency_khz",
    "numa_nodes",
    "online_cpus",
    "topology",
]


def cpu_dir(sys_root: str) -> str:
    return f"{sys_root}/devices/system/cpu"


def online_cpus(sys_root: str) -> list[int]:
    text = read_str(f"{cpu_dir(sys_root)}/online")
    if text:
        return parse_cpulist(text)
    return sorted(int(n[3:]) for n in listdir(cpu_dir(sys_root)) if n.startswith("cpu") and n[3:].isdigit())


def topology(sys_root: str, cpus: list[int]) -> tuple[int | None, int | None, int | None]:
    """(physical cores, sockets, threads per core) from distinct (package, die, core) ids of online CPUs.

    On hybrid CPUs P-cores run 2 threads and E-cores 1: threads per core is then the most any core runs,
    as lscpu reports it.
    """
    threads: dict[tuple[int | None, int | None, int | None], int] = {}
    packages: set[int | None] = set()
    base = cpu_dir(sys_root)
    for cpu in cpus:
        top = f"{base}/cpu{cpu}/topology"
        package = read_int(f"{top}/physical_package_id")
        core = read_int(f"{top}/core_id")
        if package is None and core is None:
            return None, None, None  # no topology directory (some VMs, containers with a masked /sys)
        key = (package, read_int(f"{top}/die_id"), core)
        threads[key] = threads.get(key, 0) + 1
        packages.add(package)
    return len(threads), len(packages), max(threads.values(), default=None)


def _size_bytes(text: str | None) -> int | None:
    # cache/index*/size reads "32K", "1024K" or "36M" (drivers/base/cacheinfo.c).
    if not text:
        return None
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def caches(sys_root: str, cpus: list[int]) -> list[CpuCache]:
    """Every distinct cache: one entry per (index, set of CPUs sharing it).

    A CPU already listed in a cache's shared_cpu_list is not read again for that index, so a 128-CPU machine
    reads each L3 once instead of 128 times.
    """
    base = cpu_dir(sys_root)
    covered: dict[str, set[int]] = {}
    found: list[CpuCache] = []
    for cpu in cpus:
        cache_dir = f"{base}/cpu{cpu}/cache"
        for index in sorted(n for n in listdir(cache_dir) if n.startswith("index")):
            if cpu in covered.get(index, ()):
                continue
            d = f"{cache_dir}/{index}"
            shared = parse_cpulist(read_str(f"{d}/shared_cpu_list") or str(cpu))
            covered.setdefault(index, set()).update(shared)
            found.append(
                CpuCache(
                    level=read_int(f"{d}/level") or 0,
                    type=(read_str(f"{d}/type") or "unknown").lower(),
                    size_bytes=_size_bytes(read_str(f"{d}/size")),
                    shared_cpu_list=tuple(shared),
                )
            )
    found.sort(key=lambda c: (c.level, c.type, c.shared_cpu_list))
    return found


def frequency_khz(sys_root: str, cpu: int) -> tuple[int | None, int | None, int | None]:
    """(min, max, current) kHz from cpufreq; None where the platform has no cpufreq driver (most VMs)."""
    d = f"{cpu_dir(sys_root)}/cpu{cpu}/cpufreq"
    return (
        read_int(f"{d}/cpuinfo_min_freq"),
        read_int(f"{d}/cpuinfo_max_freq"),
        read_int(f"{d}/scaling_cur_freq"),
    )


def numa_nodes(sys_root: str) -> list[NumaNode]:
    base = f"{sys_root}/devices/system/node"
    online = read_str(f"{base}/online")
    ids = parse_cpulist(online) if online else []
    nodes = []
    for node in ids:
        meminfo = read_once(f"{base}/node{node}/meminfo")
        total = None
        if meminfo:
            # "Node 0 MemTotal:  123 kB": drop the "Node N" prefix, then it is /proc/meminfo's format.
            lines = b"\n".join(line.split(None, 2)[2] for line in meminfo.splitlines() if line.count(b" ") > 2)
            total = parse_meminfo(lines).get("MemTotal")
        nodes.append(
            NumaNode(
                id=node,
                cpus=tuple(parse_cpulist(read_str(f"{base}/node{node}/cpulist") or "")),
                memory_total_bytes=total,
            )
        )
    return nodes


# Hybrid x86 CPUs register one PMU per core type (arch/x86/events/intel/core.c, 5.13+).
_CORE_PMUS = (("cpu_core", "performance"), ("cpu_atom", "efficiency"))


def core_types(sys_root: str, cpus: list[int]) -> list[CoreType]:
    kinds = []
    for pmu, kind in _CORE_PMUS:
        text = read_str(f"{sys_root}/devices/{pmu}/cpus")
        if text:
            kinds.append(CoreType(kind=kind, cpus=tuple(parse_cpulist(text))))
    return kinds or [CoreType(kind="standard", cpus=tuple(cpus))]


def cpuidle_time_paths(sys_root: str, cpus: list[int]) -> dict[int, list[str]]:
    """{cpu: [stateK/time paths]} for CPUs with a cpuidle driver; empty when there is none."""
    paths: dict[int, list[str]] = {}
    for cpu in cpus:
        d = f"{cpu_dir(sys_root)}/cpu{cpu}/cpuidle"
        states = sorted(n for n in listdir(d) if n.startswith("state"))
        if states:
            paths[cpu] = [f"{d}/{s}/time" for s in states]
    return paths if len(paths) == len(cpus) else {}
