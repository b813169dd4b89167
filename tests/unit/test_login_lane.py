"""The agent's login lane (``security.LoginLane``) on a real event loop and real worker threads.

The attacks themselves run against a real agent in tests/integration/test_agent_login_flood.py; these pin the
lane's rules one at a time: round-robin over addresses, the per-address cap, the wait limit, the CPU budget.
"""

from __future__ import annotations

import asyncio
import threading
import time

from hypermesh.agent.security import LoginLane, client_source


def lane(**options: float) -> LoginLane:
    return LoginLane(
        **{"cpu_share": 1.0, "burst_s": 100.0, "per_source": 8, "max_waiting": 64, "max_wait_s": 10.0, **options}
    )  # type: ignore[arg-type]


def test_checks_go_round_robin_over_client_addresses():
    ran: list[str] = []

    def job(name: str):
        def run() -> bool:
            ran.append(name)
            return name.startswith("b")

        return run

    async def main() -> list[bool | None]:
        login_lane = lane()
        runs = [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1")]
        return await asyncio.gather(*(login_lane.run(source, job(name)) for source, name in runs))

    answers = asyncio.run(main())
    # b1 arrived last but waits for one check of address a, not three.
    assert ran == ["a1", "b1", "a2", "a3"]
    assert answers == [False, False, False, True]


def test_an_address_over_its_cap_is_refused_at_once_and_others_are_not():
    release = threading.Event()

    def blocked() -> bool:
        return release.wait(10)

    async def main() -> tuple[list[bool | None], float]:
        login_lane = lane(per_source=2)
        first = [asyncio.create_task(login_lane.run("a", blocked))]
        await asyncio.sleep(0.1)  # running: it no longer counts against its address's cap
        first += [asyncio.create_task(login_lane.run("a", blocked)) for _ in range(2)]  # queued, up to the cap
        await asyncio.sleep(0.1)
        started = time.monotonic()
        refused = await login_lane.run("a", blocked)
        refused_after = time.monotonic() - started
        other = asyncio.create_task(login_lane.run("b", blocked))  # another address still gets in line
        await asyncio.sleep(0.1)
        release.set()
        return [refused, *await asyncio.gather(*first, other)], refused_after

    answers, refused_after = asyncio.run(main())
    assert answers == [None, True, True, True, True]
    assert refused_after < 1.0  # at once: nothing to wait for


def test_a_queued_login_gives_up_after_max_wait_but_a_started_one_is_answered():
    release = threading.Event()

    def slow() -> bool:
        release.wait(10)
        return True

    async def main() -> list[bool | None]:
        login_lane = lane(max_wait_s=0.3)
        running = asyncio.create_task(login_lane.run("a", slow))
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(login_lane.run("b", slow))
        await asyncio.sleep(0.6)  # both past max_wait_s: the queued one has given up
        assert queued.done()
        release.set()
        return [await running, await queued]

    assert asyncio.run(main()) == [True, None]


def test_checks_use_at_most_the_cpu_share():
    def burn() -> bool:
        started = time.thread_time()
        while time.thread_time() - started < 0.05:
            pass
        return False

    async def main() -> float:
        login_lane = lane(cpu_share=0.5, burst_s=0.0)
        started = time.monotonic()
        await asyncio.gather(*(login_lane.run(f"a{index}", burn) for index in range(6)))
        return time.monotonic() - started

    elapsed = asyncio.run(main())
    # 6 checks of >= 50 ms CPU at half a core: the last starts only after the first five have been paid for
    # (5 x 0.1 s). Load on the box can only make it slower.
    assert elapsed >= 0.5 * 0.95


def test_client_source_groups_ipv6_by_64_and_unmaps_ipv4():
    assert client_source({"client": ("192.0.2.7", 40000)}) == "192.0.2.7"
    assert client_source({"client": ("::ffff:192.0.2.7", 40000)}) == "192.0.2.7"
    assert client_source({"client": ("2001:db8:1:2:aaaa::1", 1)}) == client_source({"client": ("2001:db8:1:2::9", 2)})
    assert client_source({"client": ("2001:db8:1:3::1", 1)}) == "2001:db8:1:3::/64"
    assert client_source({"client": None}) == "local"
