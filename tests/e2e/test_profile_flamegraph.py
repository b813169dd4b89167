"""The flame graph `hypermesh ebpf profile` writes, opened from a file in Debian's Chromium (Playwright):
it renders offline, the Search button highlights the frame a user looks for, a click zooms."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import require, require_binary
from tests.e2e.test_dashboard import CHROMIUM_FLAGS
from tests.integration.ebpf_support import require_ebpf, run_cli
from tests.integration.test_ebpf_profile import SPINNER_C

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.ebpf, pytest.mark.root]

HIGHLIGHT = "rgb(230,0,230)"


def _svg_of_a_spinner(tmp_path: Path) -> Path:
    cc = require_binary("cc")
    (tmp_path / "spin.c").write_text(SPINNER_C)
    exe = tmp_path / "hm_spinner"
    subprocess.run([cc, "-O1", "-fno-omit-frame-pointer", "-o", str(exe), str(tmp_path / "spin.c")], check=True)
    out = tmp_path / "profile.svg"
    with subprocess.Popen([str(exe), "60"], stdout=subprocess.PIPE, text=True) as spinner:
        try:
            assert spinner.stdout is not None
            spinner.stdout.readline()
            result = run_cli("ebpf", "profile", "--pid", str(spinner.pid), "--duration", "3", "--output", str(out))
        finally:
            spinner.kill()
    assert result.returncode == 0, result.stderr
    return out


def test_flame_graph_renders_searches_and_zooms(tmp_path: Path) -> None:
    require_ebpf()
    chromium = require_binary("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright is not installed: make venv")
    svg = _svg_of_a_spinner(tmp_path)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1300, "height": 900},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            problems: list[str] = []
            requests: list[str] = []
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("request", lambda r: requests.append(r.url))
            page.goto(svg.as_uri(), wait_until="load")

            frame = page.locator('g.f[data-n="hm_spin_target"]').first
            box = frame.locator("rect").bounding_box()
            assert box is not None and box["width"] > 100 and box["height"] > 10  # rendered, and wide
            total_width = float(page.evaluate("document.documentElement.getAttribute('data-width')"))
            share = float(frame.get_attribute("data-v") or 0) / float(
                page.evaluate("document.documentElement.getAttribute('data-total')")
            )
            assert share >= 0.8
            assert frame.locator("rect").get_attribute("fill") != HIGHLIGHT

            # Search: the button asks for a regular expression (a prompt), the frame turns magenta.
            page.once("dialog", lambda dialog: dialog.accept("hm_spin_tar"))
            page.locator("#search").click()
            assert frame.locator("rect").get_attribute("fill") == HIGHLIGHT
            matched = page.locator("#matched").text_content() or ""
            assert matched.startswith("Matched: ") and float(matched.split()[1].rstrip("%")) >= 80, matched
            others = page.locator("g.f:not(.match) rect").evaluate_all("rs => rs.map(r => r.getAttribute('fill'))")
            assert others and HIGHLIGHT not in others

            # Hover shows the details line; a click on the caller zooms it to the full width.
            frame.hover()
            assert "hm_spin_target" in (page.locator("#details").text_content() or "")
            before = box["width"]
            frame.click(position={"x": 2, "y": 5})
            zoomed = float(frame.locator("rect").get_attribute("width") or 0)
            assert abs(zoomed - total_width) < 1 and before <= zoomed, (before, zoomed)
            # Frames beside the zoomed one are hidden; the ones left are its callers and callees.
            target = frame.get_attribute("data-x"), frame.get_attribute("data-v")
            visible = page.locator("g.f:not(.hidden)").evaluate_all(
                "gs => gs.map(g => [+g.getAttribute('data-x'), +g.getAttribute('data-v')])"
            )
            x, v = int(target[0] or 0), int(target[1] or 0)
            assert all((fx <= x and fx + fv >= x + v) or (x <= fx and fx + fv <= x + v) for fx, fv in visible)
            assert page.locator("#reset").is_visible()
            page.locator("#reset").click()
            assert not page.locator("#reset").is_visible()

            assert problems == [], problems
            assert all(url.startswith("file://") for url in requests), requests  # nothing from the network
        finally:
            context.close()
