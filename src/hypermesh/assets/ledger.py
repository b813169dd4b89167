"""The allocation ledger: who holds how much of which asset, durable in SQLite (WAL) under a state directory.

Guarantees, and what gives them:

- **Never over-committed, even across processes.** Every allocation runs check-then-insert inside
  ``BEGIN IMMEDIATE``: SQLite takes the database's single write lock before the check, so two writers cannot both
  see the same free amount (a plain ``BEGIN`` would read first and only then contend for the lock).
- **Acknowledged means durable.** ``allocate()`` returns only after COMMIT; with ``synchronous=FULL`` the WAL is
  fsync'd on every commit, so neither SIGKILL nor a power cut loses an allocation a caller was told about.
- **Nothing half-written.** An allocation is one row written by one transaction: a process killed mid-way leaves
  the transaction uncommitted in the WAL, and the next opener rolls it back.
- **Idempotent by id.** ``allocate(id=X)`` twice with the same request returns the first allocation; a different
  request under an existing id is refused. ``release(X)`` of an id already released returns None.
- **Owner-bound.** An allocation made with ``pid`` records the process's start time (field 22 of /proc/PID/stat,
  clock ticks since boot), and is released on every ledger read once that pid is gone or names a newer process
  (pid reuse) — a crashed job never holds its reservation forever.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time

from hypermesh.assets.model import Allocation
from hypermesh.errors import InvalidInput, NotFound, PermissionDenied

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["KINDS", "Ledger", "Refused", "check_amount", "default_state_dir", "process_start"]

KINDS = ("cpu", "memory", "storage", "network", "gpu")
FILENAME = "ledger.sqlite"
# Amounts are floats (0.5 cores); a sum of floats may exceed its exact value by a few ulps.
_EPSILON = 1e-9
_SCHEMA = """
CREATE TABLE IF NOT EXISTS allocations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,
    asset_id TEXT NOT NULL,
    amount REAL NOT NULL CHECK (amount > 0),
    created_at REAL NOT NULL,
    pid INTEGER,
    pid_start INTEGER,
    enforced TEXT
);
CREATE INDEX IF NOT EXISTS allocations_asset ON allocations (kind, asset_id);
"""


class Refused(InvalidInput):
    """A well-formed request the ledger will not grant: not enough left (``left`` says how much is), the GPU in
    use outside any allocation, the id taken by another allocation. Still exit 2 in the CLI; 409 in the agent."""

    def __init__(self, message: str, left: float | None = None) -> None:
        self.left = left
        super().__init__(message)


def default_state_dir() -> str:
    """$HYPERMESH_STATE_DIR, else /var/lib/hypermesh as root, else $XDG_STATE_HOME/hypermesh (~/.local/state)."""
    explicit = os.environ.get("HYPERMESH_STATE_DIR")
    if explicit:
        return explicit
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/var/lib/hypermesh"
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "hypermesh")


def process_start(pid: int, proc_root: str = "/proc") -> int | None:
    """Start time of ``pid`` in clock ticks since boot (/proc/PID/stat field 22), None when there is no such process.

    The command name (field 2) may hold spaces and parentheses: fields are counted after its last ')'.
    """
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    try:
        return int(data[data.rindex(b")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def _row(r: tuple[object, ...]) -> Allocation:
    id_, owner, kind, asset_id, amount, created_at, pid, _start, enforced = r
    return Allocation(
        id=str(id_),
        owner=str(owner),
        kind=str(kind),
        asset_id=str(asset_id),
        amount=float(amount),  # type: ignore[arg-type]
        created_at=float(created_at),  # type: ignore[arg-type]
        pid=None if pid is None else int(pid),  # type: ignore[call-overload]
        enforced=None if enforced is None else str(enforced),
    )


def check_amount(amount: object) -> float:
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not math.isfinite(amount) or amount <= 0:
        raise InvalidInput(f"an allocation amount must be a positive number, got {amount!r}")
    return float(amount)


def _format(amount: float) -> str:
    return f"{amount:.6g}"


class Ledger:
    """The allocations of one node, in ``<state_dir>/ledger.sqlite``.

    >>> ledger = Ledger("/var/lib/hypermesh")
    >>> grant = ledger.allocate("cpu", "cpu", 2, owner="job-7", capacity=8)
    >>> ledger.release(grant.id)

    ``capacity`` is what may be granted in total on that asset (capacity minus reserve); the caller reads it from
    the asset inventory. ``on_release(allocation)`` runs after any release, explicit or because its pid exited
    (the enforcement layer removes the allocation's cgroup there). Safe to share between threads.
    """

    def __init__(
        self,
        state_dir: str | None = None,
        *,
        proc_root: str = "/proc",
        on_release: Callable[[Allocation], None] | None = None,
    ) -> None:
        self.state_dir = state_dir or default_state_dir()
        self.path = os.path.join(self.state_dir, FILENAME)
        self.proc_root = proc_root
        self.on_release = on_release
        self.cleanup_errors: list[str] = []
        try:
            os.makedirs(self.state_dir, mode=0o755, exist_ok=True)
            # autocommit mode: transactions are ours (BEGIN IMMEDIATE), not the sqlite3 module's implicit ones
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except PermissionError as exc:
            raise PermissionDenied(
                f"cannot write the ledger in {self.state_dir} ({exc.strerror}); run as root or pass --state-dir",
                capability="write access to the state directory",
            ) from exc
        except (OSError, sqlite3.Error) as exc:
            raise InvalidInput(f"cannot open the ledger {self.path}: {exc}; pass another --state-dir") from exc
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------------------- writes

    def allocate(
        self,
        kind: str,
        asset_id: str,
        amount: float,
        *,
        owner: str,
        capacity: float,
        id: str | None = None,
        pid: int | None = None,
        users: Iterable[int] = (),
        force: bool = False,
        enforced: str | None = None,
    ) -> Allocation:
        """Grant ``amount`` of ``kind``/``asset_id`` or raise InvalidInput saying how much is left.

        ``users``: pids using the asset now (a GPU's processes); any of them not bound to an allocation on this
        asset makes the grant refuse, naming them, unless ``force`` (a clean hand-over).
        """
        if kind not in KINDS:
            raise InvalidInput(f"unknown asset kind {kind!r}; choose one of: {', '.join(KINDS)}")
        amount = check_amount(amount)
        if not owner or not isinstance(owner, str):
            raise InvalidInput("an allocation needs an owner: a name saying who holds it")
        if id is not None and (not isinstance(id, str) or not id or len(id) > 128 or not id.isprintable()):
            raise InvalidInput(f"an allocation id must be 1-128 printable characters, got {id!r}")
        pid_start = None
        if pid is not None:
            pid_start = process_start(pid, self.proc_root)
            if pid_start is None:
                raise InvalidInput(f"no process {pid}: an allocation can only be bound to a running process")
        new_id = id or os.urandom(8).hex()
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                # A refusal still commits the purge of exited owners: it is true whatever we answer.
                released = self._purge_dead()
                existing, refusal = self._check(new_id, kind, asset_id, amount, owner, pid, capacity, users, force)
                created = time.time()
                if existing is None and refusal is None:
                    db.execute(
                        "INSERT INTO allocations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (new_id, owner, kind, asset_id, amount, created, pid, pid_start, enforced),
                    )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        self._released(released)
        if refusal is not None:
            raise refusal
        if existing is not None:
            return existing
        return Allocation(new_id, owner, kind, asset_id, amount, created, pid, enforced)

    def _check(
        self,
        new_id: str,
        kind: str,
        asset_id: str,
        amount: float,
        owner: str,
        pid: int | None,
        capacity: float,
        users: Iterable[int],
        force: bool,
    ) -> tuple[Allocation | None, Refused | None]:
        """(the allocation already under this id, or the reason to refuse), inside the write transaction."""
        db = self._db
        row = db.execute("SELECT * FROM allocations WHERE id = ?", (new_id,)).fetchone()
        if row is not None:
            existing = _row(row)
            if (existing.kind, existing.asset_id, existing.amount, existing.owner, existing.pid) != (
                kind,
                asset_id,
                amount,
                owner,
                pid,
            ):
                return None, Refused(f"allocation id {new_id!r} already names another allocation: {existing}")
            return existing, None
        held = float(
            db.execute(
                "SELECT COALESCE(SUM(amount), 0) FROM allocations WHERE kind = ? AND asset_id = ?", (kind, asset_id)
            ).fetchone()[0]
        )
        left = capacity - held
        if amount > left + _EPSILON:
            return None, Refused(
                f"not enough {kind} on {asset_id}: asked {_format(amount)}, {_format(max(left, 0.0))} left"
                f" of {_format(capacity)} ({_format(held)} allocated)",
                left=max(left, 0.0),
            )
        if not force:
            bound = {
                r[0]
                for r in db.execute(
                    "SELECT pid FROM allocations WHERE kind = ? AND asset_id = ? AND pid IS NOT NULL", (kind, asset_id)
                )
            }
            outside = sorted(set(users) - bound - {pid})
            if outside:
                return None, Refused(
                    f"{kind} {asset_id} is in use by processes outside any allocation: pids "
                    f"{', '.join(map(str, outside))}; stop them or allocate with --force"
                )
        return None, None

    def set_enforced(self, id: str, enforced: str | None) -> None:
        """Record (or clear) the cgroup that enforces an allocation."""
        with self._lock:
            self._db.execute("UPDATE allocations SET enforced = ? WHERE id = ?", (enforced, id))

    def release(self, id: str) -> Allocation | None:
        """Remove an allocation; returns it, or None when no allocation has this id (already released)."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT * FROM allocations WHERE id = ?", (id,)).fetchone()
                if row is not None:
                    db.execute("DELETE FROM allocations WHERE id = ?", (id,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        gone = None if row is None else _row(row)
        if gone is not None:
            self._released([gone])
        return gone

    # ----------------------------------------------------------------------------------------- reads

    def allocations(self) -> list[Allocation]:
        """Every live allocation, oldest first; those whose pid has exited are released first."""
        self.reap()
        with self._lock:
            rows = self._db.execute("SELECT * FROM allocations ORDER BY created_at, id").fetchall()
        return [_row(r) for r in rows]

    def find(self, id: str) -> Allocation | None:
        """The allocation under ``id`` as stored, or None: one indexed SELECT (no reap, no listing of the others)."""
        with self._lock:
            row = self._db.execute("SELECT * FROM allocations WHERE id = ?", (id,)).fetchone()
        return None if row is None else _row(row)

    def get(self, id: str) -> Allocation:
        """The live allocation under ``id`` (one whose pid has exited is released first), or NotFound."""
        self.reap()
        allocation = self.find(id)
        if allocation is not None:
            return allocation
        raise NotFound(f"no allocation with id {id!r}; 'hypermesh assets allocations' lists them")

    def allocated(self) -> dict[tuple[str, str], float]:
        """{(kind, asset_id): amount allocated} over every live allocation."""
        totals: dict[tuple[str, str], float] = {}
        for a in self.allocations():
            totals[(a.kind, a.asset_id)] = totals.get((a.kind, a.asset_id), 0.0) + a.amount
        return totals

    def reap(self) -> list[Allocation]:
        """Release every allocation whose process has exited; returns them. Cheap when none has: one SELECT."""
        with self._lock:
            bound = self._db.execute("SELECT id, pid, pid_start FROM allocations WHERE pid IS NOT NULL").fetchall()
            if all(process_start(pid, self.proc_root) == start for _id, pid, start in bound):
                return []
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                released = self._purge_dead()
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        self._released(released)
        return released

    def _purge_dead(self) -> list[Allocation]:
        # Inside a write transaction, under self._lock.
        dead = [
            _row(r)
            for r in self._db.execute("SELECT * FROM allocations WHERE pid IS NOT NULL").fetchall()
            if process_start(int(r[6]), self.proc_root) != r[7]
        ]
        for allocation in dead:
            self._db.execute("DELETE FROM allocations WHERE id = ?", (allocation.id,))
        return dead

    def _released(self, allocations: list[Allocation]) -> None:
        for allocation in allocations:
            if allocation.enforced is not None:
                from hypermesh.assets import enforce

                try:
                    enforce.remove(allocation.id)
                except OSError as exc:  # the grant is gone either way; an empty cgroup left behind is harmless
                    self.cleanup_errors.append(f"allocation {allocation.id}: {exc}")
            if self.on_release is not None:
                self.on_release(allocation)
