"""The inventory: every adapter read once per snapshot, in isolation, with health kept over time.

Error isolation: an adapter that raises is caught here, at its boundary, and its assets are reported failed with
the exception as the reason (those it reported last time keep their ids and last capacity, with nothing
allocatable); the other adapters' assets are unaffected. The next snapshot simply reads it again: when its
source works again, it recovers by itself. ``since`` is when an asset entered its current status.
"""

from __future__ import annotations

import threading
import time

from hypermesh.assets.base import Context, Reading
from hypermesh.assets.cpu import CpuAdapter
from hypermesh.assets.gpu import GpuAdapter
from hypermesh.assets.memory import MemoryAdapter
from hypermesh.assets.model import Asset, Health, Snapshot
from hypermesh.assets.network import NetworkAdapter
from hypermesh.assets.storage import StorageAdapter
from hypermesh.errors import BackendError, HypermeshError, InvalidInput, NotFound

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection

    from hypermesh.assets.base import Adapter
    from hypermesh.assets.ledger import Ledger
    from hypermesh.assets.model import Allocation
    from hypermesh.sampling.sampler import Sampler

__all__ = ["Inventory"]

UNITS = {"cpu": "cores", "memory": "bytes", "storage": "bytes", "network": "bytes_per_s", "gpu": "devices"}


def default_adapters() -> list[Adapter]:
    return [CpuAdapter(), MemoryAdapter(), StorageAdapter(), NetworkAdapter(), GpuAdapter()]


class Inventory:
    """Snapshots of a node's assets. ``root`` is the host's root (``/host`` in a container that mounts it there).

    >>> inventory = Inventory()
    >>> inventory.snapshot().find("cpu")[0].allocatable

    ``reserve`` keeps an amount of each kind out of what may be allocated ({"memory": 1 << 30}: the system's own).
    Thread-safe: snapshots are taken one at a time (the Sampler's rates are since the previous reading).
    """

    def __init__(
        self,
        root: str = "/",
        *,
        adapters: list[Adapter] | None = None,
        sampler: Sampler | None = None,
        reserve: dict[str, float] | None = None,
    ) -> None:
        root = root.rstrip("/")
        self.proc = f"{root}/proc"
        self.sys = f"{root}/sys"
        self.adapters = adapters if adapters is not None else default_adapters()
        self.reserve = dict(reserve or {})
        for kind, amount in self.reserve.items():
            if kind not in UNITS or amount < 0:
                raise InvalidInput(f"reserve of {kind!r} = {amount!r}: kinds are {', '.join(UNITS)}, amounts >= 0")
        self._root = root
        self._sampler = sampler
        self._own_sampler = sampler is None
        self._lock = threading.Lock()
        self._last: dict[str, list[Reading]] = {}
        self._health: dict[tuple[str, str], Health] = {}
        # Per kind, the assets of the last snapshot that read it and when (monotonic): allocate(max_age_s=...).
        self._assets: dict[str, tuple[float, list[Asset]]] = {}

    def sampler(self) -> Sampler:
        if self._sampler is None:
            from hypermesh.sampling.sampler import Sampler

            backend = None
            if self._root:
                from hypermesh.platform.linux import LinuxBackend

                backend = LinuxBackend(self._root)
            self._sampler = Sampler(min_interval=0.1, backend=backend)
        return self._sampler

    def close(self) -> None:
        for adapter in self.adapters:
            adapter.close()
        if self._own_sampler and self._sampler is not None:
            self._sampler.close()

    def __enter__(self) -> Inventory:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def context(self) -> Context:
        try:
            return Context(self.sampler().sample(), None, self.proc, self.sys)
        except (HypermeshError, OSError) as exc:
            return Context(None, str(exc), self.proc, self.sys)

    def snapshot(self, ledger: Ledger | None = None, kinds: Collection[str] | None = None) -> Snapshot:
        """Every asset now; ``allocated``/``allocatable`` from ``ledger`` when given (else nothing allocated).

        ``kinds``: read only those adapters (an allocation needs its own kind: the storage adapter alone walks
        every block device, the bulk of a full snapshot's time)."""
        with self._lock:
            ctx = self.context()
            now = time.time()
            allocated = ledger.allocated() if ledger is not None else {}
            assets: list[Asset] = []
            errors: dict[str, str] = {}
            problems: dict[str, str] = {}
            for adapter in self.adapters:
                kind = adapter.kind
                if kinds is not None and kind not in kinds:
                    continue
                try:
                    readings = adapter.read(ctx)
                except Exception as exc:  # the isolation boundary: any failure of one adapter is its own (see above)
                    reason = f"{type(exc).__name__}: {exc}"
                    errors[kind] = reason
                    last = self._last.get(kind) or [
                        Reading(id=kind, unit=UNITS[kind], capacity=None, usage=None, details={})
                    ]
                    readings = [
                        Reading(
                            id=r.id,
                            unit=r.unit,
                            capacity=r.capacity,
                            usage=None,
                            details={},
                            problem=reason,
                            failed=True,
                        )
                        for r in last
                    ]
                else:
                    self._last[kind] = readings
                    # optional: adapters reading several sources (gpu: NVML and DRM) say which one failed
                    for source, reason in getattr(adapter, "problems", {}).items():
                        problems[f"{kind}.{source}"] = reason
                read = [self._asset(kind, r, now, allocated.get((kind, r.id), 0.0)) for r in readings]
                self._assets[kind] = (time.monotonic(), read)
                assets.extend(read)
            return Snapshot(timestamp=now, assets=assets, errors=errors, problems=problems)

    def _asset(self, kind: str, reading: Reading, now: float, allocated: float) -> Asset:
        status = "failed" if reading.failed else ("degraded" if reading.problem else "ok")
        previous = self._health.get((kind, reading.id))
        since = previous.since if previous is not None and previous.status == status else now
        health = Health(status=status, reason=reading.problem, since=since)
        self._health[(kind, reading.id)] = health
        reserve = self.reserve.get(kind, 0.0)
        if reading.capacity is None:
            allocatable = None
        elif status == "failed":
            allocatable = 0.0
        else:
            allocatable = max(0.0, reading.capacity - reserve - allocated)
        return Asset(
            kind=kind,
            id=reading.id,
            unit=reading.unit,
            capacity=reading.capacity,
            usage=reading.usage,
            reserve=reserve,
            allocated=allocated,
            allocatable=allocatable,
            health=health,
            details=reading.details,
        )

    # ------------------------------------------------------------------------------------- allocation

    def allocate(
        self,
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
        max_age_s: float = 0.0,
    ) -> Allocation:
        """Grant ``amount`` of an asset of ``kind`` in ``ledger``: what the CLI and the agent call.

        ``asset_id`` may be left out where the kind has a single asset (cpu, memory). ``enforce`` (with ``pid``)
        puts the process into a cgroup that holds it to the grant (hypermesh.assets.enforce). ``max_age_s``: the
        asset's capacity and health may come from a snapshot that read its kind at most that long ago (a
        long-lived inventory, the agent's); how much is held always comes from the ledger, in its transaction.
        """
        if kind not in UNITS:
            raise InvalidInput(f"unknown asset kind {kind!r}; choose one of: {', '.join(UNITS)}")
        if enforce and pid is None:
            raise InvalidInput("--enforce needs --pid: the process to hold to the grant")
        cached = self._assets.get(kind)
        if max_age_s > 0 and not enforce and cached is not None and time.monotonic() - cached[0] <= max_age_s:
            snap = Snapshot(timestamp=time.time(), assets=list(cached[1]), errors={}, problems={})
        else:
            # enforce.apply() reads the cpu asset too (the CPUs the cgroup may run on)
            snap = self.snapshot(kinds={kind, "cpu"} if enforce else {kind})
        candidates = snap.find(kind)
        ids = [a.id for a in candidates]
        if asset_id is None:
            if len(candidates) != 1:
                raise InvalidInput(
                    f"{kind} has {len(candidates)} assets here; name one with --asset ({', '.join(ids) or 'none'})"
                )
            asset = candidates[0]
        else:
            found = [a for a in candidates if a.id == asset_id]
            if not found:
                raise NotFound(f"no {kind} asset {asset_id!r}", available=ids)
            asset = found[0]
        if asset.health.status == "failed":
            raise BackendError(f"{kind} {asset.id} has failed and cannot be allocated: {asset.health.reason}")
        if asset.capacity is None:
            raise InvalidInput(f"{kind} {asset.id} reports no capacity (no link speed?), so nothing can be allocated")
        users: list[int] = []
        if kind == "gpu":
            gpu = next((a for a in self.adapters if isinstance(a, GpuAdapter)), None)
            if gpu is not None:
                users = gpu.users(self.context(), asset.id)
        grant = ledger.allocate(
            kind,
            asset.id,
            amount,
            owner=owner,
            capacity=asset.capacity - asset.reserve,
            id=id,
            pid=pid,
            users=users,
            force=force,
        )
        if enforce and grant.enforced is None:
            from hypermesh.assets import enforce as enforcement

            try:
                path = enforcement.apply(grant, snap)
            except BaseException:
                ledger.release(grant.id)  # an enforced grant that cannot be enforced is not granted
                raise
            ledger.set_enforced(grant.id, path)
            grant = ledger.get(grant.id)
        return grant
