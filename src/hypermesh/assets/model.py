"""Asset records: what a node has, what is in use, what may still be taken, and whether it is healthy."""

from __future__ import annotations

from hypermesh.model import Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["STATUSES", "Allocation", "Asset", "Health", "Snapshot"]

STATUSES = ("ok", "degraded", "failed")


@record
class Health(Record):
    """``status`` ok | degraded | failed; ``reason`` says why when not ok; ``since`` is the wall time (epoch
    seconds) the asset entered this status (first seen, for an asset that has always been ok)."""

    status: str
    reason: str | None
    since: float


@record
class Asset(Record):
    """One allocatable thing: a kind (cpu, memory, storage, network, gpu) and an id unique within it.

    ``capacity`` in ``unit`` (cores, bytes, bytes_per_s, devices); None where unknown (a link without a speed).
    ``usage`` is what the machine uses now (the Sampler's rates), whoever uses it; ``allocated`` what the ledger
    has granted; ``allocatable`` = capacity − reserve − allocated, never below 0, and 0 when the asset failed.
    ``details``: kind-specific readings (per-core use, PSI, device rates, GPU sensors), JSON-ready.
    """

    kind: str
    id: str
    unit: str
    capacity: float | None
    usage: float | None
    reserve: float
    allocated: float
    allocatable: float | None
    health: Health
    details: dict[str, Any]


@record
class Snapshot(Record):
    """Every asset of the node at one moment.

    ``errors``: each adapter that failed this time and why (its assets are reported failed). ``problems``: sources
    an adapter could not read while it still reported what it could, ``{"gpu.nvml": "reason"}`` — NVML missing
    on a host with NVIDIA cards, say, when no GPU asset exists to carry the reason.
    """

    timestamp: float
    assets: list[Asset]
    errors: dict[str, str]
    problems: dict[str, str]

    def find(self, kind: str, id: str | None = None) -> list[Asset]:
        """The assets of one kind, or the one with that id."""
        return [a for a in self.assets if a.kind == kind and (id is None or a.id == id)]


@record
class Allocation(Record):
    """One grant. ``pid`` binds it to a process; ``enforced`` names the cgroup that holds it to the grant, if any."""

    id: str
    owner: str
    kind: str
    asset_id: str
    amount: float
    created_at: float
    pid: int | None = None
    enforced: str | None = None
