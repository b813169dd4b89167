"""Screenshots of the dashboard for docs/: ``make screenshots`` (Debian's Chromium, driven by Playwright).

Starts the agent on a free port of 127.0.0.1 (with the syscalls, biolatency and execsnoop eBPF programs when run as
root, so their panels show), lets it gather half a minute of history, then saves the whole page at 1280 and 420 px
as docs/dashboard-1280.png and docs/dashboard-420.png.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
HISTORY_S = float(os.environ.get("SCREENSHOT_HISTORY_S", "30"))


def start_agent(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    args = [sys.executable, "-m", "hypermesh.cli.main", "agent", "--listen", "127.0.0.1:0", "--interval", "0.5"]
    if os.geteuid() == 0:
        args += ["--ebpf", "syscalls", "--ebpf", "biolatency", "--ebpf", "execsnoop"]
    with open(log, "wb") as out:
        agent = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(r"serving (http://\S+?)/ ", log.read_text(errors="replace"))
        if match:
            return agent, match.group(1)
        if agent.poll() is not None:
            break
        time.sleep(0.1)
    agent.terminate()
    sys.exit(f"screenshots: the agent did not start: {log.read_text(errors='replace').strip()}")


def main() -> int:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("screenshots: playwright is missing: run make venv", file=sys.stderr)
        return 4
    if not os.access(CHROMIUM, os.X_OK):
        print(f"screenshots: {CHROMIUM} is missing: scripts/deps.sh browser installs it", file=sys.stderr)
        return 4
    with tempfile.TemporaryDirectory(prefix="hypermesh-shots-") as tmp:
        agent, url = start_agent(Path(tmp) / "agent.log")
        try:
            # Some block I/O and a few execs, so the eBPF panels have something to show.
            for _ in range(5):
                subprocess.run(["true"], check=False)
            with tempfile.NamedTemporaryFile(dir=REPO) as f:
                for _ in range(8):
                    os.write(f.fileno(), os.urandom(64 * 1024))
                    os.fsync(f.fileno())
            time.sleep(HISTORY_S)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
                try:
                    for width in (1280, 420):
                        page = browser.new_page(viewport={"width": width, "height": 900})
                        page.goto(url + "/", wait_until="load")
                        page.wait_for_timeout(5000)  # the stream, two eBPF readings (rates), /metrics
                        path = DOCS / f"dashboard-{width}.png"
                        page.screenshot(path=str(path), full_page=True)
                        print(f"screenshots: {path.relative_to(REPO)}")
                        page.close()
                finally:
                    browser.close()
        finally:
            agent.terminate()
            agent.wait(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
