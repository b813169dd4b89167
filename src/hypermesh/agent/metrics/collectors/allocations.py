"""Every asset's capacity, allocatable share, allocated share and health, and each allocation with the cgroup
usage of the enforced ones: one Inventory snapshot and one ledger read per scrape (``scrape.assets``).

Amounts are in the asset's unit, which the ``unit`` label names (cores, bytes, bytes_per_s, devices): one family
per quantity across kinds, so ``hypermesh_asset_allocated / hypermesh_asset_capacity`` is each asset's committed
share whatever it counts.
"""

from __future__ import annotations

from hypermesh.agent.metrics.family import Family, counter, gauge
from hypermesh.agent.metrics.scrape import Scrape
from hypermesh.assets.model import STATUSES

__all__ = ["AllocationsCollector"]

CAPACITY = gauge(
    "hypermesh_asset_capacity", "What the asset has, in its unit (absent where unknown: a link without a speed)."
)
ALLOCATABLE = gauge(
    "hypermesh_asset_allocatable", "What may still be allocated: capacity - reserve - allocated (0 when failed)."
)
ALLOCATED = gauge("hypermesh_asset_allocated", "What the node's ledger has granted of the asset, in its unit.")
USAGE = gauge("hypermesh_asset_usage", "What the machine uses of the asset now, whoever uses it, in its unit.")
HEALTH = gauge("hypermesh_asset_health", "1 for the asset's health status (ok, degraded, failed), 0 for the others.")
AMOUNT = gauge("hypermesh_allocation_amount", "What each live allocation holds, in its asset's unit.")
CPU_SECONDS = counter(
    "hypermesh_allocation_cpu_seconds_total", "CPU time used by an enforced allocation's cgroup.", "seconds"
)
MEMORY = gauge("hypermesh_allocation_memory_bytes", "Memory charged to an enforced allocation's cgroup.", "bytes")


class AllocationsCollector:
    area = "allocations"

    def collect(self, scrape: Scrape) -> list[Family]:
        reading = scrape.assets
        capacity, allocatable, allocated, usage, health = (
            CAPACITY.family(),
            ALLOCATABLE.family(),
            ALLOCATED.family(),
            USAGE.family(),
            HEALTH.family(),
        )
        for a in reading.snapshot.assets:
            labels = {"kind": a.kind, "asset": a.id, "unit": a.unit}
            if a.capacity is not None:
                capacity.add(float(a.capacity), **labels)
            if a.allocatable is not None:
                allocatable.add(float(a.allocatable), **labels)
            allocated.add(float(a.allocated), **labels)
            if a.usage is not None:
                usage.add(float(a.usage), **labels)
            for status in STATUSES:
                health.add(1.0 if a.health.status == status else 0.0, kind=a.kind, asset=a.id, status=status)
        amount, cpu_seconds, memory = AMOUNT.family(), CPU_SECONDS.family(), MEMORY.family()
        for g in reading.allocations:
            labels = {"allocation": g.id, "owner": g.owner, "kind": g.kind, "asset": g.asset_id}
            amount.add(float(g.amount), **labels)
            used = reading.usage.get(g.id)
            if used is not None:
                cpu_seconds.add(used["cpu_seconds"], **labels)
                memory.add(used["memory_bytes"], **labels)
        families = [capacity, allocatable, allocated, usage, health, amount]
        if cpu_seconds.samples:
            families += [cpu_seconds, memory]
        return families
