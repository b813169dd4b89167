"""The cluster page in Debian's Chromium: three real agents registered in a real etcd, one killed."""

from __future__ import annotations

import contextlib
import signal

import pytest

from tests.conftest import require, require_binary
from tests.e2e.test_dashboard import CHROMIUM_FLAGS, wait_for
from tests.fixtures.agent.agent_process import AgentProcess
from tests.integration.cluster_support import Etcd, registered

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_cluster_page_shows_every_node_and_a_failed_one_with_its_reason(tmp_path):
    chromium = require_binary("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright is not installed: make venv")
    config = tmp_path / "agent.toml"
    config.write_text("etcd_ttl = 3\n")
    etcd = Etcd(tmp_path).start()
    with contextlib.ExitStack() as stack:
        stack.callback(etcd.stop)
        agents = [
            stack.enter_context(
                AgentProcess("--interval", "0.5", "--etcd", etcd.url, "--node-id", f"n{i}", "--config", str(config))
            )
            for i in range(3)
        ]
        playwright = stack.enter_context(sync_playwright())
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        stack.callback(context.close)
        page = context.pages[0] if context.pages else context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.goto(agents[0].url + "/cluster", wait_until="load")
        wait_for(page, "document.querySelectorAll('.node[data-state=ok]').length === 3", 15)
        cards = page.eval_on_selector_all(".node", "els => els.map(e => [e.dataset.node, e.querySelector('a').href])")
        assert cards == [[f"n{i}", agents[i].url + "/"] for i in range(3)]
        assert page.text_content("#c-current") == "3 / 3"
        assert "this node" in page.text_content(".node[data-node=n0]")

        agents[2].proc.send_signal(signal.SIGKILL)
        agents[2].proc.wait(10)
        # Listed as failed while its lease lasts, with the reason; gone once etcd drops it.
        wait_for(page, "document.querySelector('.node[data-node=n2]')?.dataset.state === 'failed'", 10)
        assert "refused" in page.text_content(".node[data-node=n2] .reason")
        assert page.text_content("#c-current") == "2 / 3"
        wait_for(page, "!document.querySelector('.node[data-node=n2]')", 15)
        assert registered([], etcd.url) == ["n0", "n1"]

        # A click on a node opens that node's own dashboard.
        page.click(".node[data-node=n1] h2 a")
        page.wait_for_url(agents[1].url + "/", timeout=10000)
        wait_for(page, "document.getElementById('hostname') !== null")
        assert problems == []


def test_an_agent_without_etcd_has_no_cluster():
    import httpx

    with AgentProcess("--interval", "0.5") as agent:
        answer = httpx.get(agent.url + "/v1/cluster", timeout=10)
        assert answer.status_code == 404 and "--etcd" in answer.json()["error"]
