"""The dashboard's "profile this node for N s" in Debian's Chromium, against the real agent and the real profiler.

A spinner with a name of its own (a copy of /bin/sh called hm-spinner-PID) runs while the button is pressed: the
flame graph the page shows must name it. An agent without CAP_BPF and CAP_PERFMON keeps the button off, saying why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import httpx
import pytest

from tests.conftest import require_binary, require_root
from tests.e2e.test_dashboard import CHROMIUM_FLAGS, wait_for
from tests.fixtures.agent.agent_process import AgentProcess

pytestmark = [pytest.mark.browser, pytest.mark.ebpf, pytest.mark.root, pytest.mark.slow]


def open_page(playwright, tmp_path, url: str):
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile-browser"), executable_path=require_binary("chromium"), headless=True,
        args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": 1400},
    )  # fmt: skip
    page = context.pages[0] if context.pages else context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(url + "/", wait_until="load")
    return context, page, problems


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def processes(svg: str) -> dict[str, int]:
    """The flame graph's first level (one frame a command name) with its samples."""
    return {m[0]: int(m[1]) for m in re.findall(r'data-n="([^"]*)" data-v="(\d+)" data-x="\d+" data-d="1"', svg)}


def test_the_button_profiles_the_node_and_shows_the_flame_graph(playwright, tmp_path):
    require_root("the profiler needs CAP_BPF and CAP_PERFMON")
    spinner = tmp_path / f"hm-spinner-{os.getpid()}"[:15]
    shutil.copy("/bin/sh", spinner)
    spin = subprocess.Popen([str(spinner), "-c", "while :; do :; done"])
    try:
        with AgentProcess("--interval", "0.5") as agent:
            state = httpx.get(agent.url + "/v1/cpu-profile", timeout=10).json()
            assert state["available"] is True and state["reason"] is None
            too_long = httpx.post(agent.url + "/v1/cpu-profile", json={"seconds": state["max_seconds"] + 1}, timeout=10)
            assert too_long.status_code == 422 and "seconds" in too_long.json()["error"]
            context, page, problems = open_page(playwright, tmp_path, agent.url)
            try:
                wait_for(page, "!document.getElementById('profile-run').disabled")
                page.fill("#profile-seconds", "2")
                ran_before = cpu_ticks(spin.pid)
                page.click("#profile-run")
                wait_for(page, "!document.getElementById('profile-frame').hidden", 30)
                ran = cpu_ticks(spin.pid) - ran_before
                status = page.text_content("#profile-status")
                assert "samples" in status
                frame = page.frame_locator("#profile-frame")
                frame.locator("svg").wait_for(timeout=15000)
                svg = page.frames[1].content()
                # the spinner's own stacks, under its comm; if not, what the graph holds and what the spinner did
                assert spinner.name in svg, (
                    f"status {status!r}; the spinner ran {ran} ticks during the profile, alive: {spin.poll() is None}; "
                    f"the graph's processes: {processes(svg)}"
                )
                assert page.frames[1].locator("rect").count() > 5
                assert problems == []
            finally:
                context.close()
    finally:
        spin.kill()
        spin.wait(10)


def test_without_the_capabilities_the_button_is_off_and_says_why(playwright, tmp_path):
    require_root("dropping capabilities needs root")
    setpriv = require_binary("setpriv")
    prefix = [setpriv, "--inh-caps=-all", "--bounding-set=-bpf,-perfmon,-sys_admin", "--"]
    with AgentProcess("--interval", "0.5", prefix=prefix) as agent:
        state = httpx.get(agent.url + "/v1/cpu-profile", timeout=10).json()
        assert state["available"] is False and "CAP_BPF" in state["reason"]
        refused = httpx.post(agent.url + "/v1/cpu-profile", json={"seconds": 1}, timeout=10)
        assert refused.status_code == 409 and "cannot profile" in refused.json()["error"]
        context, page, _ = open_page(playwright, tmp_path, agent.url)
        try:
            wait_for(page, "document.getElementById('profile-status').textContent.startsWith('off')")
            assert page.is_disabled("#profile-run")
            assert "CAP_BPF" in page.get_attribute("#profile-run", "title")
        finally:
            context.close()
