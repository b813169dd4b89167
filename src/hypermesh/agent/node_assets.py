"""The node's assets as the agent holds them: one Inventory (the adapters) and the node's Ledger, and the loop that
releases allocations whose owner has exited.

Everything here is a call into ``hypermesh.assets`` (docs/assets.md, "For the agent"): the agent computes nothing
of its own, so ``/v1/assets`` is what ``hypermesh assets --json`` prints for the same root and state directory.

- The ledger is opened at start; a ledger that cannot be opened (a state directory the agent may not write) does
  not stop the agent: ``/v1/assets`` is served with nothing allocated, and the allocation endpoints answer 503 with
  the reason.
- The reaper thread calls ``Ledger.reap()`` every REAP_INTERVAL_S: one SELECT and a read of /proc/PID/stat per
  owner-bound allocation when no owner has exited, so an exited job's reservation (and its cgroup) is gone within
  a second even when nobody reads the ledger.
"""

from __future__ import annotations

import logging
import os
import threading

from hypermesh.assets import Inventory, Ledger, default_state_dir
from hypermesh.assets.ledger import Refused, process_start
from hypermesh.errors import BackendError, HypermeshError, PermissionDenied
from hypermesh.model import Record, record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hypermesh.assets.model import Allocation, Snapshot

__all__ = ["REAP_INTERVAL_S", "AssetReading", "NodeAssets"]

log = logging.getLogger("hypermesh.agent")

REAP_INTERVAL_S = 1.0
# A grant's capacity and health may be this old (the adapter is read again after): a burst of allocations reads it
# once. /v1/assets always reads afresh; what is held is always the ledger's, counted in the grant's transaction.
ASSET_READING_MAX_AGE_S = 1.0
# /proc/PID/stat field 9 (flags): PF_KTHREAD. A kernel thread's cgroup cannot hold it to a grant, and some (kthreadd)
# would take every thread it later forks along.
_PF_KTHREAD = 0x00200000


@record
class AssetReading(Record):
    """What one scrape exports of the assets: a snapshot, the live allocations, and the cgroup usage of each
    enforced one ({allocation id: {"cpu_seconds": s, "memory_bytes": b}})."""

    snapshot: Snapshot
    allocations: list[Allocation]
    usage: dict[str, dict[str, float]]


class NodeAssets:
    """The agent's Inventory and Ledger (``state_dir`` None: the CLI's default), and the reaper thread."""

    def __init__(
        self,
        state_dir: str | None = None,
        root: str | None = None,
        inventory: Inventory | None = None,
        proc_root: str | None = None,
    ) -> None:
        self.state_dir = state_dir or default_state_dir()
        self.inventory = inventory if inventory is not None else Inventory(root or "/")
        self.proc_root = proc_root or f"{(root or '').rstrip('/')}/proc"
        self.ledger: Ledger | None = None
        self.ledger_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        """Open the ledger and start the reaper (a failure to open is logged and kept as ``ledger_error``)."""
        try:
            self.ledger = Ledger(self.state_dir, proc_root=self.proc_root)
        except HypermeshError as exc:
            self.ledger_error = str(exc)
            log.warning("allocation ledger unavailable: %s", exc)
            return
        self._thread = threading.Thread(target=self._reap_loop, name="hypermesh-ledger", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=REAP_INTERVAL_S + 5.0)
        if self.ledger is not None:
            self.ledger.close()
        self.inventory.close()

    def _reap_loop(self) -> None:
        assert self.ledger is not None
        while not self._stop.wait(REAP_INTERVAL_S):
            try:
                for gone in self.ledger.reap():
                    log.info("allocation %s of %s released: its process %s exited", gone.id, gone.owner, gone.pid)
            except Exception as exc:  # keep reaping: a locked or full disk now may be fine in a second
                log.warning("reaping exited owners failed (retrying): %s: %s", type(exc).__name__, exc)

    # ------------------------------------------------------------------------------------- reads

    def snapshot(self) -> Snapshot:
        return self.inventory.snapshot(self.ledger)

    def need_ledger(self) -> Ledger:
        if self.ledger is None:
            raise BackendError(f"the allocation ledger is unavailable: {self.ledger_error}")
        return self.ledger

    def allocations(self) -> list[Allocation]:
        return self.need_ledger().allocations()

    def reading(self) -> AssetReading:
        snapshot = self.snapshot()
        allocations = self.ledger.allocations() if self.ledger is not None else []
        usage: dict[str, dict[str, float]] = {}
        for allocation in allocations:
            if allocation.enforced is None:
                continue
            from hypermesh.assets import enforce

            try:
                usage[allocation.id] = enforce.usage(allocation.enforced)
            except (OSError, ValueError, KeyError):
                continue  # released (its cgroup removed) between the two reads
        return AssetReading(snapshot=snapshot, allocations=allocations, usage=usage)

    # ------------------------------------------------------------------------------------ writes

    def allocate(
        self,
        kind: str,
        amount: float,
        *,
        owner: str,
        asset_id: str | None,
        id: str | None,
        pid: int | None,
        enforce: bool,
        force: bool,
    ) -> Allocation:
        ledger = self.need_ledger()
        if pid is not None and process_start(pid, self.proc_root) is None:
            # the node's state, not the request, is what disagrees (the process has exited): 409, not 422
            raise Refused(f"no process {pid}: an allocation can only be bound to a running process")
        if enforce and pid is not None:
            self._check_enforceable(pid)
        return self.inventory.allocate(
            ledger,
            kind,
            amount,
            owner=owner,
            asset_id=asset_id,
            id=id,
            pid=pid,
            force=force,
            enforce=enforce,
            max_age_s=ASSET_READING_MAX_AGE_S,
        )

    def release(self, id: str) -> Allocation | None:
        return self.need_ledger().release(id)

    def _check_enforceable(self, pid: int) -> None:
        """Refuse to hold init, the agent itself or a kernel thread to a grant: each would starve the machine."""
        if pid == 1:
            raise PermissionDenied("enforce: pid 1 is init; holding it to a grant would throttle the whole machine")
        if pid == os.getpid():
            raise PermissionDenied(f"enforce: pid {pid} is this agent; it cannot hold itself to a grant")
        try:
            with open(f"{self.proc_root}/{pid}/stat", "rb") as f:
                data = f.read()
            flags = int(data[data.rindex(b")") + 2 :].split()[6])
        except (OSError, ValueError, IndexError):
            return  # no such process: the ledger refuses it with its own words
        if flags & _PF_KTHREAD:
            raise PermissionDenied(f"enforce: pid {pid} is a kernel thread; only user processes can be held to a grant")
