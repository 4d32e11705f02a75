"""Offline means offline: nothing the dashboard serves makes the browser reach outside the machine (no font
server, icon CDN or usage statistics), so a classroom without internet sees no console errors.

`streamlit run app.py` with only the project's .streamlit/config.toml (no extra flags, so a setting dropped from
that file shows here), every page opened in Debian's Chromium; every request and WebSocket whose host is not this
machine is recorded, and aborted so that none leaves even where there is a network. Chromium's own background
traffic is switched off by its flags. Skipped, with the reason, where Chromium or Playwright is missing (failed
under PRUNING_REQUIRE_BROWSER=1), like tests/test_browser.py, whose browser fixture it shares.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urljoin, urlparse

import pytest
from test_browser import ROOT, browser, free_port  # noqa: F401 - browser is a fixture used by name

pytestmark = pytest.mark.browser

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}


def is_external(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme not in ("data", "blob", "about", "chrome", "chrome-extension") and \
        parsed.hostname not in LOCAL_HOSTS


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    """`streamlit run app.py` as `make run` starts it (only a free port added), with an empty run store."""
    folder = tmp_path_factory.mktemp("offline")
    port = free_port()
    env = {**os.environ, "PRUNING_DB": str(folder / "runs.db"), "PRUNING_DATA_DIR": str(folder / "data")}
    log_path = folder / "streamlit.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://localhost:{port}"
        try:
            deadline = time.time() + 60
            while True:
                if process.poll() is not None:
                    pytest.fail(f"streamlit exited with {process.returncode}:\n{log_path.read_text()}")
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                        if response.status == 200:
                            break
                except OSError:
                    pass
                if time.time() > deadline:
                    pytest.fail(f"streamlit did not answer on {url} within 60 s:\n{log_path.read_text()}")
                time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_no_page_of_the_dashboard_reaches_outside_the_machine(browser, plain_server):  # noqa: F811
    assert not is_external(plain_server) and is_external("https://fonts.gstatic.com/s/i/x.svg")
    context = browser.new_context()
    external: list[str] = []

    def keep_local(route):
        if is_external(route.request.url):
            external.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", keep_local)
    page = context.new_page()
    page.on("websocket", lambda socket: external.append(socket.url) if is_external(socket.url) else None)
    try:
        page.goto(plain_server, timeout=60_000)
        page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=90_000)
        links = page.get_by_test_id("stSidebarNav").locator("a")
        pages = [urljoin(plain_server + "/", links.nth(i).get_attribute("href")) for i in range(links.count())]
        assert len(pages) >= 2, pages
        for address in pages:
            page.goto(address, timeout=60_000)
            page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=90_000)
            page.wait_for_timeout(1_000)  # icons, fonts and charts load after the script run
    finally:
        context.close()
    assert not external, f"the dashboard made the browser ask outside the machine for: {sorted(set(external))}"
