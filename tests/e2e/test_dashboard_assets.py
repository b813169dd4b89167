"""The dashboard's assets panel in Debian's Chromium (Playwright), against the real agent and its ledger.

What the page shows is checked against the kernel (the CPU mask, /proc/meminfo), against an allocation made through
the API while the page is open, and, for GPU cards, against the recorded AMD and Intel cards served through --root.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_binary
from tests.e2e.test_dashboard import ARTIFACTS, CHROMIUM_FLAGS, wait_for
from tests.fixtures.agent.agent_process import AgentProcess
from tests.fixtures.agent.gpu_root import AMD_DEVICE, gpu_root

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def human_bytes(value: float) -> str:
    """The panel's byte format (assets.js bytes()), written again here from its definition."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    i = 0
    while abs(value) >= 1024 and i < len(units) - 1:
        value /= 1024
        i += 1
    return f"{value:.0f} {units[i]}" if i == 0 else f"{value:.1f} {units[i]}"


def mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


def open_page(playwright, profile: Path, url: str):
    context = playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=require_binary("chromium"),
        headless=True,
        args=CHROMIUM_FLAGS,
        viewport={"width": 1400, "height": 1400},
    )
    page = context.pages[0] if context.pages else context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(url + "/", wait_until="load")
    return context, page, problems


def test_the_panel_shows_this_hosts_capacity_and_an_allocation_made_while_it_is_open(tmp_path, playwright):
    import hypermesh

    limit = hypermesh.profile().limits.memory_limit_bytes
    memory = mem_total() if limit is None else min(mem_total(), limit)
    cores = len(os.sched_getaffinity(0))
    with AgentProcess("--interval", "0.5", "--state-dir", str(tmp_path / "state")) as agent:
        context, page, problems = open_page(playwright, tmp_path / "profile", agent.url)
        try:
            wait_for(page, "window.hypermeshAssets && window.hypermeshAssets.refreshes >= 1")
            cpu = page.locator('.asset-kind[data-kind="cpu"]')
            assert float(cpu.get_attribute("data-capacity")) == cores
            assert f"0 cores of {cores} cores allocated" in cpu.inner_text()
            mem = page.locator('.asset-kind[data-kind="memory"]')
            assert int(float(mem.get_attribute("data-capacity"))) == memory
            assert f"of {human_bytes(memory)} allocated" in mem.inner_text()
            assert page.inner_text("#gpu-cards") == "no GPUs on this host"
            assert page.inner_text("#allocations-list") == "no allocations"

            grant = httpx.post(
                f"{agent.url}/v1/allocations",
                json={"kind": "memory", "amount": "64MiB", "owner": "e2e-job", "id": "e2e-mem"},
                timeout=20,
            )
            assert grant.status_code == 201, grant.text
            wait_for(page, "document.querySelector('#allocations-list tr[data-id=\"e2e-mem\"]') !== null")
            row = page.locator('#allocations-list tr[data-id="e2e-mem"]').inner_text()
            assert "e2e-job" in row and "memory" in row and "64.0 MiB" in row
            assert float(mem.get_attribute("data-allocated")) == 64 * 2**20
            assert f"64.0 MiB of {human_bytes(memory)} allocated" in mem.inner_text()
            # the bar is drawn to scale: 64 MiB of the whole memory
            width = page.evaluate("document.querySelector('.asset-kind[data-kind=\"memory\"] .asset-fill').style.width")
            assert width == f"{100 * 64 * 2**20 / memory:.1f}%"

            ARTIFACTS.mkdir(exist_ok=True)
            page.locator("#assets-panel").screenshot(path=str(ARTIFACTS / "dashboard-assets.png"))
            assert httpx.delete(f"{agent.url}/v1/allocations/e2e-mem", timeout=20).status_code == 200
            wait_for(page, "document.querySelector('#allocations-list').textContent === 'no allocations'")
            assert page.evaluate("window.hypermeshAssets.errors") == []
            assert problems == []
        finally:
            context.close()


def test_gpu_cards_of_the_fixture_cards(tmp_path, playwright):
    root = gpu_root(tmp_path)
    with AgentProcess("--root", str(root), "--interval", "0.5", "--state-dir", str(tmp_path / "state")) as agent:
        context, page, problems = open_page(playwright, tmp_path / "profile", agent.url)
        try:
            wait_for(page, "window.hypermeshAssets && window.hypermeshAssets.refreshes >= 1")
            cards = page.locator(".gpu-card")
            assert cards.count() == 2
            amd = page.locator(f'.gpu-card[data-uuid="{(AMD_DEVICE / "unique_id").read_text().strip()}"]').inner_text()
            assert (AMD_DEVICE / "product_name").read_text().strip() in amd
            celsius = int((AMD_DEVICE / "hwmon/hwmon2/temp1_input").read_text()) / 1000
            assert f"{celsius:.0f} °C" in amd
            vram = int((AMD_DEVICE / "mem_info_vram_total").read_text())
            assert f"of {human_bytes(vram)}" in amd
            intel = page.locator('.gpu-card[data-uuid="0000:00:02.0"]').inner_text()
            assert "intel" in intel and "0000:00:02.0" in intel
            gpu = page.locator('.asset-kind[data-kind="gpu"]')
            assert float(gpu.get_attribute("data-capacity")) == 2.0
            ARTIFACTS.mkdir(exist_ok=True)
            page.locator("#assets-panel").screenshot(path=str(ARTIFACTS / "dashboard-assets-gpus.png"))
            assert problems == []
        finally:
            context.close()
