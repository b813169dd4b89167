"""The dashboard at a glance, in Debian's Chromium against the real agent: round axis ticks in one unit, a
disconnected page that says so on every card (and retries without console errors), the eBPF programs' panels
with their data, filesystems and down interfaces, and a header that wraps between facts at 420 px."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import require_root
from tests.e2e.test_dashboard import launch, wait_for
from tests.fixtures.agent.agent_process import AgentProcess

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BYTE_UNITS = ["B", "KiB", "MiB", "GiB", "TiB"]
BYTE_STEPS = {1, 2, 5, 10, 20, 25, 50, 100, 128, 200, 250, 256, 500, 512}
DECIMAL_STEPS = {m * 10**e for m in (1, 2, 2.5, 5) for e in range(-3, 7)}
LABEL = re.compile(r"^(\d+(?:\.\d+)?) (%|B|KiB|MiB|GiB|TiB)(/s)?$|^(\d+(?:\.\d+)?)$")
TIME_LABEL = re.compile(r"^−(\d+) (s|min)$")


def axis_labels(page) -> dict[str, dict[str, list[str]]]:
    return json.loads(
        page.evaluate(
            "JSON.stringify(Object.fromEntries([...document.querySelectorAll('canvas[data-chart]')].map((c) => "
            "[c.dataset.chart, {y: [...c.parentNode.querySelectorAll('.axis-y .tick')].map((t) => t.textContent),"
            " x: [...c.parentNode.querySelectorAll('.axis-x .tick')].map((t) => t.textContent)}])))"
        )
    )


def check_value_axis(chart: str, labels: list[str]) -> tuple[float, str]:
    """The axis counts 0, s, 2s, … in one unit, s a round step of that unit; returns (top in base units, unit)."""
    assert labels[0] == "0", (chart, labels)
    assert len(labels) >= 2, (chart, labels)
    units, values = set(), []
    for label in labels[1:]:
        match = LABEL.match(label)
        assert match, f"{chart}: {label!r} is not a number in a unit"
        if match.group(4) is not None:
            units.add("")
            values.append(float(match.group(4)))
        else:
            units.add(match.group(2) + (match.group(3) or ""))
            values.append(float(match.group(1)))
    assert len(units) == 1, f"{chart}: one unit per axis, got {units}"
    unit = units.pop()
    step = values[0]
    assert all(abs(v - (i + 1) * step) < 1e-9 * max(1, v) for i, v in enumerate(values)), (chart, labels)
    base = unit.removesuffix("/s")
    allowed = BYTE_STEPS | DECIMAL_STEPS if base in BYTE_UNITS else DECIMAL_STEPS | {25}
    assert any(abs(step - a) < 1e-9 for a in allowed), f"{chart}: step {step} {unit} is not round"
    scale = 1024 ** BYTE_UNITS.index(base) if base in BYTE_UNITS else 1
    return values[-1] * scale, unit


def check_time_axis(chart: str, labels: list[str]) -> None:
    assert labels[0] == "now", (chart, labels)
    parsed = [TIME_LABEL.match(label) for label in labels[1:]]
    assert all(parsed), (chart, labels)
    units = {m.group(2) for m in parsed if m}
    assert len(units) == 1, f"{chart}: one time unit per axis, got {labels}"
    seconds = [int(m.group(1)) for m in parsed if m]
    step = seconds[0]
    assert seconds == [step * (i + 1) for i in range(len(seconds))], (chart, labels)
    assert step in ({10, 15, 20, 30, 60} if units == {"s"} else {1, 2, 5}), (chart, labels)


def test_axis_ticks_are_round_in_one_unit_and_cover_the_data(tmp_path, playwright):
    with AgentProcess("--interval", "0.5") as agent:
        context = launch(playwright, tmp_path / "profile", 1280, 1000)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(agent.url + "/", wait_until="load")
            wait_for(page, "window.hypermeshDashboard.samplesReceived >= 6")
            page.wait_for_timeout(300)
            axes = axis_labels(page)
            assert set(axes) == {"cpu", "memory", "pressure", "disk", "network"}
            tops = {}
            for chart, labels in axes.items():
                tops[chart] = check_value_axis(chart, labels["y"])
                check_time_axis(chart, labels["x"])
            assert tops["cpu"] == (100, "%")
            assert tops["memory"][1] in BYTE_UNITS and tops["network"][1].endswith("/s")
            # The memory axis reaches above every value drawn, read independently from the agent's history.
            first = page.evaluate("window.hypermeshDashboard.firstTimestamp")
            history = httpx.get(f"{agent.url}/v1/samples", timeout=10).json()["samples"]
            drawn = [s for s in history if s["timestamp"] >= first]
            peak = max(max(s["memory"]["used_bytes"], s["memory"]["cached_bytes"]) for s in drawn)
            assert peak <= tops["memory"][0] < peak * 5 + 4 * 2**20
            # The labels sit beside their grid lines: from the top of the plot down to its base, evenly.
            tops_px = page.evaluate(
                "[...document.querySelectorAll('#chart-memory ~ .axis-y .tick')].map((t) => parseFloat(t.style.top))"
            )
            gaps = [a - b for a, b in itertools.pairwise(tops_px)]
            assert all(gap > 10 and abs(gap - gaps[0]) <= 1 for gap in gaps), tops_px
        finally:
            context.close()


def test_disconnected_cards_dim_within_5s_and_retries_log_no_console_error(tmp_path, playwright):
    agent = AgentProcess("--interval", "0.5").start()
    port = urlsplit(agent.url).port
    second = None
    try:
        context = launch(playwright, tmp_path / "profile", 1280, 900)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            console: list[str] = []
            page.on(
                "console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None
            )
            page.on("pageerror", lambda e: console.append(f"page error: {e}"))
            probes: list[float] = []
            page.on("request", lambda r: probes.append(time.monotonic()) if r.url.endswith("/healthz") else None)
            page.goto(agent.url + "/", wait_until="load")
            wait_for(page, "window.hypermeshDashboard.samplesReceived >= 3")
            assert page.evaluate("document.querySelectorAll('[data-offline]').length") == 0
            every_card = "[...document.querySelectorAll('.card, .stat')].every((c) => c.dataset.offline)"

            agent.stop()
            stopped = time.monotonic()
            wait_for(page, every_card, 5)
            assert time.monotonic() - stopped < 5.5
            assert page.evaluate("document.body.classList.contains('offline')")
            note = page.get_attribute(".card", "data-offline")
            assert re.fullmatch(r"no data since \d\d:\d\d:\d\d \(\d+ s ago\)", note), note
            words = page.inner_text("#live-text")
            assert re.match(r"disconnected since \d\d:\d\d:\d\d", words), words
            # Dimmed: the card's content, not only the dot in the corner.
            # The dimming is a CSS transition: read once it has run (on a loaded machine it was mid-way, 0.79).
            dimmed = "parseFloat(getComputedStyle(document.querySelector('.card > h2')).opacity) < 0.6"
            wait_for(page, dimmed, 3)

            # A few retries while the agent is away, none of them an error in the console.
            probes.clear()
            page.wait_for_timeout(6000)
            assert len(probes) >= 2, "the page stopped retrying"
            assert console == []

            # The agent comes back on the same address: the page reconnects by itself.
            second = AgentProcess("--interval", "0.5", "--listen", f"127.0.0.1:{port}").start()
            received = page.evaluate("window.hypermeshDashboard.samplesReceived")
            wait_for(page, f"window.hypermeshDashboard.samplesReceived > {received + 2}", 20)
            wait_for(page, "document.querySelectorAll('[data-offline]').length === 0", 5)
            assert page.inner_text("#live-text").startswith("live")
            assert console == []
        finally:
            context.close()
    finally:
        agent.cleanup()
        if second is not None:
            second.cleanup()


def write_and_sync(directory: str, blocks: int) -> None:
    with tempfile.NamedTemporaryFile(dir=directory) as f:
        for _ in range(blocks):
            os.write(f.fileno(), os.urandom(64 * 1024))
            os.fsync(f.fileno())


@pytest.mark.root
@pytest.mark.ebpf
def test_ebpf_program_panels_render_their_data(tmp_path, playwright):
    from tests.integration.ebpf_support import require_ebpf

    require_ebpf()
    with AgentProcess("--interval", "0.5", "--ebpf", "syscalls", "--ebpf", "biolatency") as agent:
        write_and_sync(str(Path(__file__).parent), 8)  # block I/O on a real disk for biolatency
        context = launch(playwright, tmp_path / "profile", 1280, 1000)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
            page.goto(agent.url + "/", wait_until="load")
            # Rates need two readings, 2 s apart.
            wait_for(page, "document.querySelector('#panel-syscalls .num')?.textContent.endsWith('/s')", 15)
            wait_for(page, "document.querySelectorAll('#panel-biolatency .cell').length > 0", 15)
            status = httpx.get(f"{agent.url}/v1/ebpf", timeout=10).json()
            rows = page.evaluate(
                "[...document.querySelectorAll('#panel-syscalls .barrow')].map((r) =>"
                " [r.querySelector('.name').textContent, r.querySelector('.num').textContent])"
            )
            assert len(rows) >= 3
            known = set(status["programs"]["syscalls"]["reading"]["syscalls"])
            assert all(name in known for name, _ in rows), rows
            rates = [int(num.removesuffix("/s").replace(",", "")) for _, num in rows]
            assert rates == sorted(rates, reverse=True) and rates[0] > 0

            cells = page.evaluate(
                "[...document.querySelectorAll('#panel-biolatency .cell')].map((c) => Number(c.dataset.count))"
            )
            shown = sum(cells)
            metrics = httpx.get(f"{agent.url}/metrics", timeout=10).text
            counted = sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("hypermesh_ebpf_block_io_latency_seconds_count")
            )
            assert 8 <= shown <= counted  # the test's own fsyncs at least; never more than the agent counted later
            # Panels only for what runs; the program panels' refresh leaves the other cards alone.
            assert page.locator("#panel-execsnoop").count() == 0
            assert page.locator("article.program").count() == 2
            wait_for(page, "document.getElementById('panel-filesystems') !== null", 15)
            page.wait_for_timeout(2500)  # one more refresh of the program panels
            assert page.locator("#panel-filesystems").count() == 1

            # The eBPF card speaks in words, and what is not supported says why on hover.
            card = page.inner_text("#ebpf")
            with open("/proc/sys/kernel/unprivileged_bpf_disabled") as f:
                level = int(f.read())
            words = {
                0: "allowed for every user (0)",
                1: "disabled for users until reboot (1)",
                2: "disabled for users (2)",
            }
            assert words[level] in card
            assert "unprivileged_bpf_disabled" not in card and "btf_present" not in card
            reasons = {f["reason"] for f in status["probe"]["features"] if not f["supported"]}
            titles = set(page.evaluate("[...document.querySelectorAll('#ebpf .features .no')].map((n) => n.title)"))
            assert titles == reasons
            assert console == []
        finally:
            context.close()


@pytest.mark.root
@pytest.mark.netns
def test_filesystems_down_interfaces_and_the_header_at_420px(tmp_path, playwright):
    require_root()  # to make an interface that is down
    name = f"hmdown{os.getpid() % 10000}"
    # A veth pair left down (this kernel has no dummy driver): both ends down, no traffic.
    command = ["ip", "link", "add", name, "type", "veth", "peer", "name", name + "p"]
    subprocess.run(command, check=True, capture_output=True, timeout=10)
    try:
        with AgentProcess("--interval", "0.5") as agent:
            context = launch(playwright, tmp_path / "profile", 420, 900)
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.goto(agent.url + "/", wait_until="load")
                wait_for(page, "document.getElementById('network-down') !== null", 15)
                wait_for(page, "window.hypermeshDashboard.samplesReceived >= 4")
                assert name in page.inner_text("#network-down")
                legend = page.inner_text("#legend-network")
                assert f"{name} rx" not in legend
                assert "lo rx" in legend  # lo carries traffic (this very page): kept, whatever its operstate

                # Filesystems: used per mount, against statvfs of the same mount.
                rows = page.evaluate(
                    "[...document.querySelectorAll('#panel-filesystems .barrow')].map((r) =>"
                    " [r.querySelector('.name').textContent, r.querySelector('.num').textContent])"
                )
                root = dict(rows)["/"]
                st = os.statvfs("/")
                used = (st.f_blocks - st.f_bfree) * st.f_frsize
                shown = re.match(r"([\d.]+) (B|KiB|MiB|GiB|TiB) used", root)
                assert shown, root
                value = float(shown.group(1)) * 1024 ** BYTE_UNITS.index(shown.group(2))
                assert abs(value - used) <= 0.05 * used + 2**30, (root, used)

                # The header wraps between facts: each fact on one line, none starting with a separator.
                facts = page.evaluate(
                    "[...document.querySelectorAll('#host-detail span')].map((s) =>"
                    " [s.textContent, s.getClientRects().length, s.getBoundingClientRect().right])"
                )
                assert len(facts) >= 4
                for fact, lines, right in facts:
                    assert lines == 1 and not fact.startswith("·") and right <= 420, facts
                assert any(fact.startswith("kernel ") for fact, _, _ in facts)
            finally:
                context.close()
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True, timeout=10, check=False)
