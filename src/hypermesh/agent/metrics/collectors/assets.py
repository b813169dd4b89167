"""Capacity of what the machine has, from its profile (read once at start)."""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, gauge
from hypermesh.agent.metrics.scrape import Scrape

__all__ = ["AssetsCollector"]

NODE_INFO = gauge("hypermesh_node_info", "Always 1; labels describe the node and the agent version.")
LOGICAL_CORES = gauge("hypermesh_cpu_logical_cores", "Logical CPUs (hardware threads) online.")
PHYSICAL_CORES = gauge("hypermesh_cpu_physical_cores", "Physical CPU cores.")
STORAGE_SIZE = gauge("hypermesh_storage_device_size_bytes", "Capacity of each block device.", "bytes")
INTERFACE_SPEED = gauge(
    "hypermesh_network_interface_speed_bytes",
    "Link speed of each interface in bytes per second, where the driver reports one.",
    "bytes",
)
MEMORY_LIMIT = gauge("hypermesh_cgroup_memory_limit_bytes", "Memory limit of the agent's cgroup.", "bytes")


class AssetsCollector:
    area = "assets"

    def __init__(self, version: str) -> None:
        self._version = version

    def collect(self, scrape: Scrape) -> list[Family]:
        profile = scrape.profile
        if profile is None:  # the profile is read at start; without it this area failed, it is not "none here"
            raise RuntimeError("the system profile could not be read at start")
        info = NODE_INFO.family()
        info.add(
            1.0,
            hostname=profile.os.hostname,
            kernel=profile.os.kernel,
            os=profile.os.system,
            architecture=profile.cpu.architecture,
            version=self._version,
        )
        families = [info, LOGICAL_CORES.value(float(profile.cpu.logical_cores))]
        if profile.cpu.physical_cores is not None:
            families.append(PHYSICAL_CORES.value(float(profile.cpu.physical_cores)))
        storage = STORAGE_SIZE.family()
        for device in profile.storage:
            if device.size_bytes is not None:
                storage.add(float(device.size_bytes), device=device.name)
        families.append(storage)
        speed = INTERFACE_SPEED.family()
        for interface in profile.network:
            if interface.speed_mbps is not None and interface.speed_mbps > 0:
                speed.add(interface.speed_mbps * 125_000.0, interface=interface.name)
        families.append(speed)
        if profile.limits.memory_limit_bytes is not None:
            families.append(MEMORY_LIMIT.value(float(profile.limits.memory_limit_bytes)))
        return families
