"""Debian's Chromium, driven by Playwright, loads the live dashboard from the real agent."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.fixtures.agent.agent_process import AgentProcess
from tests.kernel_facts import online_cpus

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).parent.parent / "artifacts"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory, playwright):
    chromium = require_binary("chromium")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with AgentProcess("--interval", "0.5") as agent:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1100},
        )
        page = context.pages[0] if context.pages else context.new_page()
        problems: list[str] = []
        requests: list[str] = []
        page.on(
            "console",
            lambda m: problems.append(f"console {m.type}: {m.text} at {m.location}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(agent.url + "/", wait_until="load")
        try:
            yield page, problems, requests, agent.url
        finally:
            context.close()


def wait_for(page, expression: str, timeout_s: float = 15.0) -> None:
    """Poll a JavaScript expression. Not page.wait_for_function: that compiles its predicate with
    ``new Function`` inside the page, which our Content-Security-Policy (rightly) refuses."""
    for _ in range(int(timeout_s * 10)):
        if page.evaluate(expression):
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"still false after {timeout_s}s: {expression}")


def canvas_pixels(page, chart: str) -> str:
    return page.evaluate(f"document.getElementById('chart-{chart}').toDataURL()")


def test_dashboard_renders_the_host_and_live_numbers(browser_page):
    page, problems, _, _ = browser_page
    wait_for(page, "window.hypermeshDashboard && window.hypermeshDashboard.samplesReceived >= 2")
    assert page.inner_text("#hostname") == socket.gethostname()
    assert page.title().startswith(socket.gethostname())
    assert re.fullmatch(r"\d+\.\d %", page.inner_text("#stat-cpu"))
    assert re.search(r"\d", page.inner_text("#stat-mem"))
    assert page.locator(".core").count() == len(online_cpus())
    assert "memory" in page.inner_text("#assets")
    assert page.inner_text("#ebpf").startswith("status")
    assert "live" in page.inner_text("#live-text")
    assert problems == []


def test_charts_change_as_new_samples_arrive(browser_page):
    page, problems, _, _ = browser_page
    wait_for(page, "window.hypermeshDashboard.samplesReceived >= 2")
    before_count = page.evaluate("window.hypermeshDashboard.samplesReceived")
    before = {chart: canvas_pixels(page, chart) for chart in ("cpu", "memory", "network")}
    wait_for(page, f"window.hypermeshDashboard.samplesReceived >= {before_count + 3}")
    page.wait_for_timeout(300)  # one more animation frame draws the new points
    after = {chart: canvas_pixels(page, chart) for chart in ("cpu", "memory", "network")}
    for chart, pixels in before.items():
        assert pixels != after[chart], f"the {chart} chart did not change with new samples"
    # The samples came by push (server-sent events), not by reloading.
    assert page.evaluate("window.hypermeshDashboard.transport") == "sse"
    assert page.evaluate("window.hypermeshDashboard.errors") == []
    assert problems == []


def test_dashboard_uses_only_the_agent_and_keeps_a_screenshot(browser_page):
    page, problems, requests, url = browser_page
    wait_for(page, "window.hypermeshDashboard.samplesReceived >= 4")
    foreign = [r for r in requests if not (r.startswith(url) or r.startswith("data:"))]
    assert foreign == [], "the dashboard must work without internet"
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
    assert problems == []


def launch(playwright, profile: Path, width: int, height: int):
    return playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=require_binary("chromium"),
        headless=True,
        args=CHROMIUM_FLAGS,
        viewport={"width": width, "height": height},
    )


def test_status_says_disconnected_after_the_agent_stops_and_the_page_fits_a_phone(tmp_path, playwright):
    # It said "live · every 1s · polling · last 7.7s ago" with the agent gone; at 420 px the cards, 420 px at
    # least, overflowed sideways.
    agent = AgentProcess("--interval", "0.5").start()
    try:
        context = launch(playwright, tmp_path / "profile", 420, 900)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            problems: list[str] = []
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.goto(agent.url + "/", wait_until="load")
            wait_for(page, "window.hypermeshDashboard.samplesReceived >= 3")
            assert page.inner_text("#live-text").startswith("live")
            assert page.get_attribute("#live-dot", "class") == "dot live"
            page.wait_for_timeout(300)
            overflow = page.evaluate(
                "JSON.stringify({scroll: document.documentElement.scrollWidth,"
                " client: document.documentElement.clientWidth,"
                " right: Math.max(...[...document.querySelectorAll('.card, .stat, header')]"
                ".map((e) => e.getBoundingClientRect().right))})"
            )
            sizes = json.loads(overflow)
            assert sizes["scroll"] <= sizes["client"] <= 420, sizes
            assert sizes["right"] <= sizes["client"], sizes
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard-420px.png"), full_page=True)

            agent.stop()
            wait_for(page, "document.getElementById('live-dot').className === 'dot down'", 15)
            words = page.inner_text("#live-text")
            assert words.startswith("disconnected"), words
            assert "live" not in words
            page.screenshot(path=str(ARTIFACTS / "dashboard-agent-stopped.png"))
            # Console errors for the refused reconnects are the browser's; the page itself threw nothing.
            assert problems == []
        finally:
            context.close()
    finally:
        agent.cleanup()
