"""Retake the README's two screenshots (docs/screenshot-*.png) from a real server, in Debian's Chromium.

    pruning-core sweep --preset quick --db /tmp/shots.db     # the Compare screenshot shows this sweep
    python docs/screenshots.py --db /tmp/shots.db

Prune & train: the quick-demo preset, after its training finished. Compare methods: the quick-sweep preset,
whose cells the store already holds (so they show at once). 1400 px wide, as a laptop browser.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="run store holding the quick sweep")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--only", choices=("prune", "compare"), help="retake one of the two")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PRUNING_DB": str(Path(args.db).resolve())}
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                               "--server.headless", "true", "--browser.gatherUsageStats", "false"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            if args.only in (None, "prune"):
                page.goto(url)
                page.get_by_role("button", name="Quick demo").first.click()
                page.get_by_text("Final test accuracy").wait_for(timeout=300_000)
                time.sleep(2)
                page.screenshot(path=str(ROOT / "docs" / "screenshot-prune-and-train.png"), full_page=True)
            if args.only in (None, "compare"):
                page.goto(f"{url}/compare_methods")
                page.locator("[data-testid='stButton'] button", has_text="Quick sweep").first.click()
                page.get_by_text("cells done").first.wait_for(timeout=300_000)
                page.mouse.move(5, 5)   # no tooltip over the page
                page.get_by_test_id("stPlotlyChart").first.scroll_into_view_if_needed()
                time.sleep(3)
                page.screenshot(path=str(ROOT / "docs" / "screenshot-compare-methods.png"))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
