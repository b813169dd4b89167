"""The allocation ledger against real processes: races, SIGKILL mid-loop, pid-bound release, idempotency.

Cross-checks read the SQLite file with the sqlite3 module directly, not through the Ledger.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hypermesh.assets.ledger import Ledger, default_state_dir, process_start
from hypermesh.errors import InvalidInput

PY = sys.executable


def rows(state: Path) -> list[tuple[object, ...]]:
    db = sqlite3.connect(state / "ledger.sqlite")
    try:
        return db.execute("SELECT id, owner, kind, asset_id, amount, created_at FROM allocations").fetchall()
    finally:
        db.close()


def test_allocate_release_over_allocation_and_idempotency(tmp_path: Path) -> None:
    with Ledger(str(tmp_path)) as ledger:
        a = ledger.allocate("cpu", "cpu", 1.5, owner="job-a", capacity=2.0)
        with pytest.raises(InvalidInput) as refused:
            ledger.allocate("cpu", "cpu", 1, owner="job-b", capacity=2.0)
        assert str(refused.value) == "not enough cpu on cpu: asked 1, 0.5 left of 2 (1.5 allocated)"
        assert refused.value.exit_code == 2
        b = ledger.allocate("cpu", "cpu", 0.5, owner="job-b", capacity=2.0, id="retry-me")
        again = ledger.allocate("cpu", "cpu", 0.5, owner="job-b", capacity=2.0, id="retry-me")  # a retry: same grant
        assert again == b
        with pytest.raises(InvalidInput, match="already names another allocation"):
            ledger.allocate("cpu", "cpu", 0.25, owner="job-b", capacity=2.0, id="retry-me")
        assert {r[0] for r in rows(tmp_path)} == {a.id, "retry-me"}
        assert sum(float(r[4]) for r in rows(tmp_path)) == 2.0  # type: ignore[arg-type]
        assert ledger.release(a.id) == a
        assert ledger.release(a.id) is None  # idempotent
        assert [x.id for x in ledger.allocations()] == ["retry-me"]
        for bad in (0, -1, float("nan"), float("inf"), True, "2"):
            with pytest.raises(InvalidInput, match="positive number"):
                ledger.allocate("cpu", "cpu", bad, owner="x", capacity=2.0)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="unknown asset kind 'tpu'"):
            ledger.allocate("tpu", "x", 1, owner="x", capacity=2.0)
    # durable: a new Ledger on the same directory sees the same allocations
    with Ledger(str(tmp_path)) as reopened:
        assert [x.to_dict() for x in reopened.allocations()] == [b.to_dict()]
    mode = sqlite3.connect(tmp_path / "ledger.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_default_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HYPERMESH_STATE_DIR", raising=False)
    expected = "/var/lib/hypermesh" if os.geteuid() == 0 else None
    if expected:
        assert default_state_dir() == expected
    monkeypatch.setenv("HYPERMESH_STATE_DIR", str(tmp_path))
    assert default_state_dir() == str(tmp_path)


RACER = """
import sys, json, time
from hypermesh.assets.ledger import Ledger
from hypermesh.errors import InvalidInput
state, start = sys.argv[1], float(sys.argv[2])
ledger = Ledger(state)
while time.time() < start:
    time.sleep(0.001)
out = []
for i in range(2):
    try:
        out.append(ledger.allocate("gpu", "GPU-0", 1, owner=f"racer-{sys.argv[3]}", capacity=20).id)
    except InvalidInput as exc:
        out.append("refused: " + str(exc))
print(json.dumps(out))
"""


@pytest.mark.slow
def test_sixteen_processes_racing_never_over_commit(tmp_path: Path) -> None:
    Ledger(str(tmp_path)).close()  # schema in place before the race: the race is about allocations
    start = time.time() + 3.0  # every racer imported and waiting before the gun
    procs = [
        subprocess.Popen([PY, "-c", RACER, str(tmp_path), str(start), str(n)], stdout=subprocess.PIPE, text=True)
        for n in range(16)
    ]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        results.extend(json.loads(out))
    granted = [r for r in results if not r.startswith("refused")]
    refused = [r for r in results if r.startswith("refused")]
    stored = rows(tmp_path)
    assert len(results) == 32 and len(granted) == 20 and len(refused) == 12
    assert sorted(str(r[0]) for r in stored) == sorted(granted)  # every acknowledged grant is stored, no other
    assert sum(float(r[4]) for r in stored) == 20.0  # type: ignore[arg-type]
    assert all("left of 20" in r for r in refused)


LOOP = """
import sys
from hypermesh.assets.ledger import Ledger
ledger = Ledger(sys.argv[1])
n = 0
while True:
    grant = ledger.allocate("memory", "memory", 1, owner="loop", capacity=1e12)
    print(grant.id, flush=True)
    n += 1
    if n % 3 == 0:
        ledger.release(grant.id)
        print("released", grant.id, flush=True)
"""


@pytest.mark.slow
def test_sigkill_mid_loop_loses_no_acknowledged_allocation(tmp_path: Path) -> None:
    for round_ in range(3):
        proc = subprocess.Popen([PY, "-c", LOOP, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        lines = []
        while len(lines) < 40 + 20 * round_:
            line = proc.stdout.readline()
            assert line, "the loop ended early"
            lines.append(line.split())
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)  # lines printed before the kill landed were acknowledged too
        lines.extend(line.split() for line in rest.splitlines() if line.strip())
        assert proc.returncode == -signal.SIGKILL
        printed = {parts[0] for parts in lines if len(parts) == 1}
        released = {parts[1] for parts in lines if len(parts) == 2}
        stored = rows(tmp_path)
        ids = {str(r[0]) for r in stored}
        assert printed - released <= ids  # every acknowledged, unreleased id survived the kill
        assert not (released & ids)  # and every acknowledged release stayed released
        # nothing half-written: the file is intact and every row complete
        db = sqlite3.connect(tmp_path / "ledger.sqlite")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()
        assert all(all(v is not None for v in r) and r[4] == 1.0 for r in stored)
        assert Ledger(str(tmp_path)).allocations()  # the Ledger reopens and reads what it left


def test_pid_bound_allocation_is_released_when_its_process_exits(tmp_path: Path) -> None:
    released: list[str] = []
    ledger = Ledger(str(tmp_path), on_release=lambda a: released.append(a.id))
    job = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    try:
        bound = ledger.allocate("cpu", "cpu", 1, owner="job", capacity=2, pid=job.pid)
        free = ledger.allocate("cpu", "cpu", 0.5, owner="keeper", capacity=2)
        assert {a.id for a in ledger.allocations()} == {bound.id, free.id}
        with pytest.raises(InvalidInput, match=r"0\.5 left"):
            ledger.allocate("cpu", "cpu", 1, owner="late", capacity=2)
    finally:
        job.kill()
        job.wait()
    assert process_start(job.pid) is None
    assert [a.id for a in ledger.allocations()] == [free.id]  # the next read released it
    assert released == [bound.id]
    assert {str(r[0]) for r in rows(tmp_path)} == {free.id}
    ledger.allocate("cpu", "cpu", 1, owner="late", capacity=2)  # and its share is free again
    with pytest.raises(InvalidInput, match="no process"):
        ledger.allocate("cpu", "cpu", 0.1, owner="x", capacity=2, pid=job.pid)


def test_pid_reuse_is_told_by_the_start_time(tmp_path: Path) -> None:
    """A row whose recorded start time is not the running process's is a previous owner of a reused pid."""
    ledger = Ledger(str(tmp_path))
    mine = ledger.allocate("memory", "memory", 1, owner="me", capacity=10, pid=os.getpid())
    assert [a.id for a in ledger.allocations()] == [mine.id]  # we are alive: kept
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    db.execute("UPDATE allocations SET pid_start = pid_start - 1")  # as if our pid had belonged to an older process
    db.commit()
    db.close()
    assert ledger.allocations() == []


def test_gpu_hand_over_refuses_foreign_users_unless_forced(tmp_path: Path) -> None:
    ledger = Ledger(str(tmp_path))
    me = os.getpid()
    with pytest.raises(InvalidInput, match=r"in use by processes outside any allocation: pids 1, 4242; .*--force"):
        ledger.allocate("gpu", "GPU-x", 1, owner="job", capacity=1, users=[4242, 1])
    grant = ledger.allocate("gpu", "GPU-x", 0.5, owner="job", capacity=1, users=[me], pid=me)  # its own user
    assert grant.pid == me
    ledger.allocate("gpu", "GPU-x", 0.5, owner="job2", capacity=1, users=[me])  # users inside an allocation: fine
    ledger.release(grant.id)
    forced = ledger.allocate("gpu", "GPU-x", 0.5, owner="ops", capacity=1, users=[4242], force=True)
    assert forced.owner == "ops"
