"""Assets: what a node has, what is in use, what may still be taken, whether it is healthy; and who holds what.

>>> from hypermesh import assets
>>> snap = assets.snapshot()                           # every asset now (CPU, memory, storage, network, GPUs)
>>> [(a.kind, a.id, a.allocatable, a.health.status) for a in snap.assets]
>>> ledger = assets.Ledger()                            # the node's allocations (default state directory)
>>> grant = assets.allocate(ledger, "cpu", 0.5, owner="job-7", pid=1234)
>>> ledger.release(grant.id)

The CLI (``hypermesh assets``) and the agent (``/v1/assets``, ``/v1/allocations``) are thin layers over these.
"""

from __future__ import annotations

from hypermesh.assets.allocation import Allocation
from hypermesh.assets.inventory import Inventory
from hypermesh.assets.ledger import KINDS, Ledger, default_state_dir
from hypermesh.assets.model import Asset, Health, Snapshot

__all__ = [
    "KINDS",
    "Allocation",
    "Asset",
    "Health",
    "Inventory",
    "Ledger",
    "Snapshot",
    "allocate",
    "default_state_dir",
    "inventory",
    "snapshot",
]

_inventories: dict[str, Inventory] = {}


def inventory(root: str = "/") -> Inventory:
    """The process-wide Inventory of ``root``, created on first use (its Sampler keeps the rates' baseline)."""
    found = _inventories.get(root)
    if found is None:
        found = _inventories[root] = Inventory(root)
    return found


def snapshot(root: str = "/", ledger: Ledger | None = None) -> Snapshot:
    """Every asset of the node at ``root`` now, with what ``ledger`` has allocated when given."""
    return inventory(root).snapshot(ledger)


def allocate(
    ledger: Ledger,
    kind: str,
    amount: float,
    *,
    owner: str,
    asset_id: str | None = None,
    id: str | None = None,
    pid: int | None = None,
    force: bool = False,
    enforce: bool = False,
    root: str = "/",
) -> Allocation:
    """Grant ``amount`` of ``kind`` (see Inventory.allocate); raises InvalidInput saying how much is left."""
    return inventory(root).allocate(
        ledger, kind, amount, owner=owner, asset_id=asset_id, id=id, pid=pid, force=force, enforce=enforce
    )
