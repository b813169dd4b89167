"""The allocation record: shared by the ledger (which stores it) and enforce (which applies it)."""

from __future__ import annotations

from hypermesh.model import Record, record


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
