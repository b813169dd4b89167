"""Basic auth under attack (issue 9, points 3, 4 and 7), each attack run against the real agent on 127.0.0.1.

The attackers send from 127.0.0.1; the legitimate first-time logins from 127.0.0.2 (all of 127/8 is loopback on
Linux), as a real Prometheus or browser sends from another host than an attacker: the login lane is fair across
client addresses, not across connections of one address (``security.LoginLane`` says why).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import http.client
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest

from hypermesh.agent.security import MAX_PASSWORD_BYTES, VERIFY_BURST_S, VERIFY_CPU_SHARE
from tests.conftest import require_binary, require_root
from tests.fixtures.agent.agent_process import AgentProcess

PASSWORD = b"correct horse battery staple"
LEGIT_SOURCE = "127.0.0.2"
# Cost 10 (~75 ms a check here): a check is real work, as with production hashes (cost 12, ~0.3 s), while
# the tests stay short. The figures were taken at cost 12.
COST = 10


def basic(user: bytes, password: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user + b":" + password).decode()}


def connect(process: AgentProcess, source: str | None = None, timeout: float = 15) -> http.client.HTTPConnection:
    host, port = process.url.removeprefix("http://").rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=timeout, source_address=(source, 0) if source else None)


def get(connection: http.client.HTTPConnection, path: str, headers: dict[str, str]) -> int:
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status


@pytest.fixture
def agent_with(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Starts an agent whose [basic_auth_users] are the given user -> bcrypt hash."""
    started: list[AgentProcess] = []

    def start(users: dict[str, bytes], prefix: list[str] | None = None) -> AgentProcess:
        config = tmp_path / f"agent-{len(started)}.toml"
        table = "".join(f'{user} = "{hashed.decode()}"\n' for user, hashed in users.items())
        config.write_text(f"[basic_auth_users]\n{table}")
        process = AgentProcess("--config", str(config), "--interval", "0.5", prefix=prefix)
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.cleanup()


class Flood:
    """``clients`` threads, each on its own keep-alive connection, sending ``headers()`` until stopped."""

    def __init__(
        self,
        process: AgentProcess,
        headers: Callable[[], dict[str, str]],
        clients: int = 4,
    ) -> None:
        self.answers: collections.Counter[object] = collections.Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(process, headers), daemon=True) for _ in range(clients)
        ]

    def _run(self, process: AgentProcess, headers: Callable[[], dict[str, str]]) -> None:
        connection = connect(process)
        try:
            while not self._stop.is_set():
                try:
                    status: object = get(connection, "/metrics", headers())
                except (OSError, http.client.HTTPException) as exc:
                    status = type(exc).__name__
                    connection.close()  # reconnects on the next request
                with self._lock:
                    self.answers[status] += 1
        finally:
            connection.close()

    def __enter__(self) -> Flood:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)


def unknown_user() -> dict[str, str]:
    return basic(os.urandom(6).hex().encode(), os.urandom(8).hex().encode())


def over_long() -> dict[str, str]:
    return basic(b"prometheus", os.urandom(MAX_PASSWORD_BYTES).hex().encode()[: MAX_PASSWORD_BYTES + 1])


def first_login(process: AgentProcess, user: bytes) -> tuple[int, float]:
    """A login never seen before, on a new connection from another address: (status, seconds)."""
    started = time.monotonic()
    connection = connect(process, LEGIT_SOURCE)
    try:
        return get(connection, "/metrics", basic(user, PASSWORD)), time.monotonic() - started
    finally:
        connection.close()


def fill_with_failures(process: AgentProcess, count: int) -> collections.Counter[object]:
    """Exactly ``count`` 401 answers to over-long passwords, from 4 clients; the other answers counted too."""
    answers: collections.Counter[object] = collections.Counter()
    lock = threading.Lock()
    remaining = count
    deadline = time.monotonic() + 90

    def fill() -> None:
        nonlocal remaining
        connection = connect(process)
        try:
            while time.monotonic() < deadline:
                with lock:
                    if remaining <= 0:
                        return
                    remaining -= 1
                status = 0
                while status != 401 and time.monotonic() < deadline:
                    status = get(connection, "/metrics", over_long())
                    with lock:
                        answers[status] += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=fill, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(100)
    return answers


@dataclasses.dataclass
class FloodResult:
    filled: collections.Counter[object]
    flood: collections.Counter[object]
    scrapes: collections.Counter[int]
    logins: list[tuple[int, float]]


def flood_after_filling_the_cache(process: AgentProcess, flood_s: float = 10.0) -> FloodResult:
    """The issue's lock-out: a scraper verified first, 4 090 cheap failures, then a 4-client unknown-user flood."""
    with contextlib.closing(connect(process)) as scraper:
        assert get(scraper, "/metrics", basic(b"prometheus", PASSWORD)) == 200  # verified and remembered
    # Over-long passwords were the cheap failures (bcrypt refuses them in ~1 µs). Exactly 4 090 refusals (a
    # 503 does not count: it was never remembered), so that the flood's first few failures filled the old
    # shared 4 096-entry cache, which then cleared and dropped the scraper's verified pair mid-flood.
    filled = fill_with_failures(process, 4090)
    scraper = connect(process)  # a new connection: the old one may have idled out while filling
    scrapes: collections.Counter[int] = collections.Counter()
    logins = []
    with Flood(process, unknown_user) as flood:
        started = time.monotonic()
        for user in (b"alice", b"bob", b"carol"):
            login_at = started + {b"alice": 2.0, b"bob": 5.0, b"carol": 8.0}[user]
            while time.monotonic() < login_at:
                scrapes[get(scraper, "/metrics", basic(b"prometheus", PASSWORD))] += 1
                time.sleep(0.2)
            logins.append(first_login(process, user))
        while time.monotonic() < started + flood_s:
            scrapes[get(scraper, "/metrics", basic(b"prometheus", PASSWORD))] += 1
            time.sleep(0.2)
    scraper.close()
    return FloodResult(filled, flood.answers, scrapes, logins)


@pytest.mark.slow
def test_an_unknown_user_flood_after_filling_the_cache_locks_out_neither_scraper_nor_new_login(agent_with):
    hashed = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds=COST))
    process = agent_with({"prometheus": hashed, "alice": hashed, "bob": hashed, "carol": hashed})
    result = flood_after_filling_the_cache(process)
    assert result.filled[401] == 4090, result.filled
    assert result.flood[401] >= 5, result.flood  # the flood's logins were really checked
    scrapes = sum(result.scrapes.values())
    assert scrapes >= 20 and result.scrapes[200] >= 0.95 * scrapes, result.scrapes
    for status, seconds in result.logins:
        assert status == 200 and seconds < 2.0, result.logins


@pytest.mark.slow
def test_over_long_passwords_are_refused_without_a_check(agent_with):
    hashed = bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds=COST))
    process = agent_with({"prometheus": hashed, "alice": hashed, "bob": hashed})
    with Flood(process, over_long) as flood:
        time.sleep(1.0)
        # From the flood's own address: over-long passwords never enter the login lane, so there is nobody
        # to wait behind.
        logins = []
        for user in (b"alice", b"bob"):
            started = time.monotonic()
            with_flood = connect(process)
            logins.append((get(with_flood, "/metrics", basic(user, PASSWORD)), time.monotonic() - started))
            with_flood.close()
            time.sleep(0.5)
    assert flood.answers[401] >= 100 and set(flood.answers) == {401}, flood.answers  # never 503: no slot taken
    for status, seconds in logins:
        assert status == 200 and seconds < 2.0, logins
    # A 72-byte password is still checked (and may be right).
    long_password = b"p" * MAX_PASSWORD_BYTES
    process.cleanup()
    process = agent_with({"prometheus": bcrypt.hashpw(long_password, bcrypt.gensalt(rounds=4))})
    connection = connect(process)
    assert get(connection, "/metrics", basic(b"prometheus", long_password)) == 200
    assert get(connection, "/metrics", basic(b"prometheus", long_password + b"p")) == 401
    connection.close()


def answer_times(process: AgentProcess, kinds: dict[str, bytes], rounds: int, gap_s: float) -> dict[str, float]:
    """Median seconds to a 401 per kind (user name -> a wrong password each time, never cached).

    ``gap_s`` between requests lets the login lane's CPU budget refill, so no answer waits for budget: a
    pause after a dear check would otherwise land on the next request, whatever its kind, and hide a leak.
    """
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    for round_ in range(rounds):
        order = list(kinds)[round_ % len(kinds) :] + list(kinds)[: round_ % len(kinds)]
        for kind in order:
            time.sleep(gap_s)
            with contextlib.closing(connect(process)) as connection:
                connection.connect()  # timed from the request on: connecting is the same for every kind
                started = time.perf_counter()
                status = get(connection, "/metrics", basic(kinds[kind], os.urandom(8).hex().encode()))
                times[kind].append(time.perf_counter() - started)
            assert status == 401
    return {kind: statistics.median(values) for kind, values in times.items()}


def check_cpu_s(*costs: int) -> float:
    """CPU seconds of one bcrypt check at each of ``costs``, here (CPU, not wall: load would inflate that)."""
    started = time.process_time()
    for cost in costs:
        bcrypt.checkpw(b"y", bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=cost)))
    return (time.process_time() - started) / 2  # hashpw and checkpw cost the same


@pytest.mark.slow
def test_answers_take_the_same_time_for_unknown_cheap_and_dear_users(agent_with):
    dear_cost = 9
    process = agent_with(
        {
            "cheap": bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds=4)),  # htpasswd -B's default is cost 5
            "dear": bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds=dear_cost)),
        }
    )
    gap_s = 1.5 * check_cpu_s(4, dear_cost) / VERIFY_CPU_SHARE
    kinds = {"unknown": b"nobody", "cheap": b"cheap", "dear": b"dear"}
    medians = answer_times(process, kinds, rounds=11, gap_s=gap_s)
    # Before: cheap ~3 ms, dear and unknown ~40 ms (a ratio of ~13). Every check now costs cost 4 + cost 9;
    # 1.6 leaves room for a loaded box while a leak of the cost-4 user stays far outside it.
    assert max(medians.values()) / min(medians.values()) < 1.6, medians
    assert min(medians.values()) > 0.01, medians  # every answer paid for a cost-9 check


def cpu_during(process: AgentProcess, seconds: float) -> float:
    before = process.cpu_seconds()
    time.sleep(seconds)
    return process.cpu_seconds() - before


@pytest.mark.slow
@pytest.mark.root
def test_a_login_flood_uses_a_bounded_share_of_cpu(agent_with):
    require_root()
    # Raised priority: the agent gets whatever CPU it asks for even on a box busy with other work, so what
    # is measured is what it takes, not what the box's load left it (under load 5 on 2 cores the old agent
    # got only ~0.45 core at normal priority, within reach of the bound).
    nice = require_binary("nice")
    process = agent_with(
        {"prometheus": bcrypt.hashpw(PASSWORD, bcrypt.gensalt(rounds=COST))}, prefix=[nice, "-n", "-10"]
    )
    window = 15.0
    idle = cpu_during(process, 2.0) / 2.0  # the sampler's own share, measured in the same test
    with Flood(process, unknown_user) as flood:
        time.sleep(1.0)
        used = cpu_during(process, window)
    # The lane's bound: VERIFY_CPU_SHARE of one core, plus its burst (not all spent yet when the window
    # opens: on a loaded box a check takes longer than its CPU time, so the bucket drains slowly) and one
    # check of debt; then the agent's idle share and 10 % of a core for answering the flood's requests.
    # Measured here under load 7 on 2 cores: 0.3 core now (4.5 s of 15); before, two checks at once and a loop
    # of 503s took 0.7-0.8 core (10.5-11.7 s), so the bound (~6.7 s) leaves seconds on either side.
    bound = window * (VERIFY_CPU_SHARE + idle + 0.1) + VERIFY_BURST_S + 2 * check_cpu_s(COST)
    assert used <= bound, (used, bound, idle, flood.answers)
    assert flood.answers[401] >= 5, flood.answers  # the lane was working, not shut


def test_hash_password_reads_a_bounded_line_from_an_endless_stdin():
    limit = 512 * 1024 * 1024

    def cap_memory() -> None:  # before the fix, readline() grew until this limit (1.6 GB within 5 s)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    with open("/dev/zero", "rb") as zero:
        process = subprocess.Popen(
            [sys.executable, "-m", "hypermesh.cli.main", "agent", "--hash-password"],
            stdin=zero,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=cap_memory,
        )
    deadline = time.monotonic() + 20
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if not pid:
        process.kill()
        pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: wait4 gave its peak RSS
    out, err = process.communicate()
    assert process.returncode == 2, err[-500:]
    lines = err.decode().splitlines()
    assert len(lines) == 1 and "over 72 bytes" in lines[0], lines[:3]
    assert out == b""
    assert usage.ru_maxrss * 1024 < 200 * 1024 * 1024, usage.ru_maxrss  # KiB on Linux


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b""])
def test_hash_password_takes_exactly_72_bytes(ending):
    password = bytes(range(0x21, 0x21 + MAX_PASSWORD_BYTES))  # 72 printable, distinct bytes
    result = subprocess.run(
        [sys.executable, "-m", "hypermesh.cli.main", "agent", "--hash-password"],
        input=password + ending,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    hashed = result.stdout.strip()
    assert bcrypt.checkpw(password, hashed)
    assert not bcrypt.checkpw(password[:-1] + b"!", hashed)
    refused = subprocess.run(
        [sys.executable, "-m", "hypermesh.cli.main", "agent", "--hash-password"],
        input=password + b"x" + ending,
        capture_output=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert refused.stderr.decode().strip().endswith("bcrypt uses at most 72"), refused.stderr
