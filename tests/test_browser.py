"""End to end in a real browser: `streamlit run app.py` on a free local port, driven through Debian's Chromium
with Playwright (no browser download). A newcomer's first minute: open the page, click the quick demo preset,
see the density bars and the live training curves; then a preset whose network collapses shows the warning.
Screenshots go to test-artifacts/ (gitignored).

Skipped, with the reason, where Chromium or Playwright is missing; .ci/run installs Chromium and sets
PRUNING_REQUIRE_BROWSER=1, which turns that skip into a failure, so CI can never pass without running it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from pruning_core.presentation import units
from pruning_core.studies.presets import PRESETS

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def unavailable(reason: str) -> None:
    """Skip where the browser cannot run, unless this run requires it (CI): then fail."""
    if os.environ.get("PRUNING_REQUIRE_BROWSER") == "1":
        pytest.fail(f"PRUNING_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def chromium_path() -> str | None:
    """$PRUNING_CHROMIUM, else Debian's chromium on the PATH or at /usr/bin/chromium."""
    for candidate in (os.environ.get("PRUNING_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    path = chromium_path()
    if path is None:
        unavailable("Chromium is not installed (looked for $PRUNING_CHROMIUM, `chromium` on the PATH and "
                    "/usr/bin/chromium): install Debian's chromium package, as .ci/run does, to run this test")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed: pip install -r requirements-test.txt")
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, timeout=60_000)
        except Exception as error:  # noqa: BLE001 - any launch failure means: cannot run here
            unavailable(f"Chromium at {path} could not be started by Playwright: {str(error).splitlines()[0]}")
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run app.py` on a free port, with its own empty run store; always stopped at the end."""
    folder = tmp_path_factory.mktemp("server")
    port = free_port()
    env = {**os.environ, "PRUNING_DB": str(folder / "runs.db"), "PRUNING_DATA_DIR": str(folder / "data")}
    log = open(folder / "streamlit.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.headless", "true",
         "--server.address", "localhost", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}"
    try:
        deadline = time.time() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"streamlit exited with {process.returncode}:\n{(folder / 'streamlit.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"streamlit did not answer on {url} within 60 s:\n{(folder / 'streamlit.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def wait_until_idle(page, timeout_ms: int = 60_000) -> None:
    """The script run has finished (fragments may still poll afterwards)."""
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout_ms)


@pytest.fixture
def app_page(browser):
    """A fresh browser tab and the JavaScript errors it reports; closed after the test."""
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1700})
    page_errors: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    yield page, page_errors
    page.close()


def assert_no_traceback(page) -> None:
    exceptions = page.locator("[data-testid='stException']")
    assert exceptions.count() == 0, exceptions.first.inner_text()


def test_quick_demo_shows_density_bars_collapse_warning_and_live_training(server, app_page):
    page, page_errors = app_page
    page.goto(server, timeout=60_000)
    page.wait_for_selector("[data-testid='stApp']", timeout=60_000)
    page.get_by_role("button", name=PRESETS["quick_demo"].label).wait_for(timeout=60_000)
    wait_until_idle(page)

    started = time.time()
    page.get_by_role("button", name=PRESETS["quick_demo"].label).click()
    # The pruning result at once: the density chart with its numbers beside it.
    page.get_by_text("Weights kept").first.wait_for(timeout=60_000)
    density = page.get_by_test_id("stPlotlyChart").first
    density.wait_for(timeout=60_000)
    assert "conv2" in density.inner_text()
    assert page.get_by_text("No layer collapsed").count() == 1
    # Training runs in the background; its curves appear and fill in live, then the final numbers.
    page.locator("[data-testid='stPlotlyChart']", has_text="Test accuracy").wait_for(timeout=90_000)
    page.get_by_text("Final test accuracy").wait_for(timeout=150_000)
    elapsed = time.time() - started
    assert "run=" in page.url and "method=synflow" in page.url  # a shareable link to this setup
    assert_no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "browser-quick-demo.png"), full_page=True)
    print(f"quick demo: density bars and finished training {elapsed:.0f} s after the click")

    # A configuration that collapses shows the warning next to the chart.
    page.get_by_role("button", name=PRESETS["magnitude_collapse"].label).click()
    page.get_by_text("Layer collapse:").first.wait_for(timeout=60_000)
    assert_no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "browser-magnitude-collapse.png"), full_page=True)
    assert not page_errors, page_errors


def test_research_pages_render_and_measure_gradient_flow(server, app_page):
    """The three research pages open from the navigation without a traceback; on Gradient flow the main action,
    on tiny settings, draws the gradient-norm chart and its explanation."""
    page, page_errors = app_page
    page.goto(server, timeout=60_000)
    page.wait_for_selector("[data-testid='stApp']", timeout=60_000)
    wait_until_idle(page)
    for title, button in (("Lottery tickets", "Find both tickets"), ("Sanity checks", "Run the sanity checks"),
                          ("Gradient flow", "Measure the gradient flow")):
        page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
        page.get_by_role("heading", name=title).wait_for(timeout=60_000)
        page.get_by_role("button", name=button).wait_for(timeout=60_000)
        wait_until_idle(page)
        assert_no_traceback(page)
    # Tiny settings through the link, as a shared URL would carry them.
    page.goto(f"{server}/gradient_flow?epochs=1&variants=dense&variants=sparse&variants=sparse_init",
              timeout=60_000)
    page.get_by_role("button", name="Measure the gradient flow").click()
    chart = page.locator("[data-testid='stPlotlyChart']", has_text="Gradient norm")
    chart.wait_for(timeout=90_000)
    page.get_by_text("At initialisation the sparse network's gradient is").wait_for(timeout=30_000)
    assert "Sparse, sparsity-aware init" in chart.inner_text()
    assert "epochs=1" in page.url and "variants=sparse_init" in page.url
    assert_no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "browser-gradient-flow.png"), full_page=True)
    assert not page_errors, page_errors


def test_compare_table_and_runs_overlay_screenshots(server, app_page):
    """Screenshots at 1400×1000 for a person to look at (test-artifacts/): the Compare methods table under the
    chart of a small sweep, and the Runs page's overlay of its three runs (legends below the plots, the
    'collapsed' labels above their marks)."""
    page, page_errors = app_page
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(f"{server}/compare_methods?epochs=1&methods=magnitude&methods=random&sparsities=0.999&seeds=1",
              timeout=60_000)
    page.get_by_role("button", name="Run sweep").click()
    page.get_by_text("3 of 3 cells done").wait_for(timeout=150_000)
    wait_until_idle(page)
    table = page.get_by_test_id("stDataFrame").first
    table.scroll_into_view_if_needed()
    page.mouse.move(0, 0)   # no tooltip over the screenshot
    assert_no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "browser-compare-table.png"))

    page.get_by_test_id("stSidebarNav").get_by_text("Runs", exact=True).click()
    page.get_by_role("heading", name="Runs").wait_for(timeout=60_000)
    wait_until_idle(page)
    chooser = page.get_by_test_id("stMultiSelect").filter(has_text="Select runs to compare")
    for _ in range(3):
        chooser.locator("input").first.click()
        page.get_by_role("option").first.click()
        page.keyboard.press("Escape")
        wait_until_idle(page)
    page.mouse.move(0, 0)   # no tooltip over the screenshot
    overlay = page.locator("[data-testid='stPlotlyChart']", has_text="Test accuracy").first
    overlay.wait_for(timeout=60_000)
    overlay.scroll_into_view_if_needed()
    page.mouse.wheel(0, 350)   # the legends under the charts in view too
    wait_until_idle(page)
    assert "collapsed" in page.locator("[data-testid='stPlotlyChart']").nth(1).inner_text()
    assert_no_traceback(page)
    page.screenshot(path=str(ARTIFACTS / "browser-runs-overlay.png"))
    assert not page_errors, page_errors


def settled_slider(page, timeout_s: float = 30.0) -> tuple[str, str]:
    """The sparsity slider's shown value and the result beside it, once they have stopped changing."""
    deadline, last = time.time() + timeout_s, None
    while time.time() < deadline:
        wait_until_idle(page)
        shown = page.get_by_test_id("stSliderThumbValue").first.inner_text()
        result = page.locator("[data-testid='stCaptionContainer'], [data-testid='stMarkdownContainer']",
                              has_text="of the weights removed").first.inner_text()
        if (shown, result) == last:
            return last
        last = (shown, result)
        time.sleep(1.0)
    return last


def test_quick_arrow_keys_leave_the_result_where_the_slider_is(server, app_page):
    """Ten quick presses of an arrow key on the sparsity slider: once it settles, the result beside it and the
    link show the slider's value (issue 17, item 14)."""
    page, page_errors = app_page
    page.goto(f"{server}/?method=magnitude&epochs=1&sparsity=0.99", timeout=60_000)
    page.get_by_text("Weights kept").first.wait_for(timeout=60_000)
    wait_until_idle(page)
    thumb = page.get_by_role("slider").first
    for key, start in (("ArrowRight", 2.0), ("ArrowLeft", 3.0)):
        thumb.focus()
        for _ in range(10):
            page.keyboard.press(key)
        shown, result = settled_slider(page)
        x = float(shown.split("^")[1])
        assert x == start + (1.0 if key == "ArrowRight" else -1.0), shown
        assert f"compression 10^{x:.1f}" in result, (shown, result)
        link = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(page.url).query))
        assert float(link["sparsity"]) == units.sparsity_from_log(x), (shown, page.url)
    assert_no_traceback(page)
    assert not page_errors, page_errors


BIG = "9" * 20
HOSTILE = "x`](https://evil.example)![i](https://evil.example/a.png)`"
HOSTILE_LINK = urllib.parse.urlencode(
    {"run": BIG, "sweep": BIG, "open": BIG, "sparsity": "0.999999", "seed": BIG, "epochs": "NaN",
     "iterations": "-1", "seeds": "nan", "rounds": "1e400", "gem_epochs": BIG, "method": HOSTILE,
     "methods": ["nope", HOSTILE], "sparsities": ["nan", BIG], "compare": [HOSTILE], "variants": [HOSTILE],
     "dataset": "nope", "model": HOSTILE}, doseq=True)
PAGE_PATHS = {"Prune & train": "", "Compare methods": "compare_methods", "Layer collapse": "layer_collapse",
              "Lottery tickets": "lottery_tickets", "Gradient flow": "gradient_flow", "Sanity checks": "sanity_checks",
              "Runs": "runs"}


def test_hostile_links_leave_every_page_usable(server, app_page):
    """Every page opened with a link of huge numbers, NaN, backticks and unknown names: no traceback, no error
    box, its controls in place, and nothing from the link drawn as a link or an image (issue 10)."""
    page, page_errors = app_page
    for title, path in PAGE_PATHS.items():
        page.goto(f"{server}/{path}?{HOSTILE_LINK}", timeout=60_000)
        page.get_by_role("heading", name=title).wait_for(timeout=60_000)
        if title != "Runs":   # the page's controls (the notes on what was ignored go at the page's next rerun)
            page.get_by_test_id("stSelectbox").filter(has_text="Dataset").first.wait_for(timeout=60_000)
        wait_until_idle(page)
        assert_no_traceback(page)
        errors = page.locator("[data-testid='stAlertContentError']")
        assert errors.count() == 0, (title, errors.first.inner_text())
        if title != "Runs":
            assert page.get_by_test_id("stSelectbox").filter(has_text="Dataset").count() == 1, title
            assert page.get_by_role("button").count() > 0, title
        injected = page.locator("[data-testid='stMain'] a[href*='evil.example'], img[src*='evil.example']")
        assert injected.count() == 0, (title, injected.first.evaluate("e => e.closest('[data-testid]').innerText"))
    page.screenshot(path=str(ARTIFACTS / "browser-hostile-link.png"), full_page=True)
    assert not page_errors, page_errors


def test_a_browser_stays_the_same_person_across_reloads_and_another_browser_is_someone_else(server, browser):
    """The owner token lives in a cookie that a line of JavaScript sets and `st.context.cookies` reads back when
    the browser opens a new session: a reload keeps the token (were it not read back, the server would make a
    new one and the script would overwrite the cookie with it); a second browser gets a token of its own."""
    from dashboard.classroom import TOKEN_COOKIE

    def token(context) -> str | None:
        return next((c["value"] for c in context.cookies() if c["name"] == TOKEN_COOKIE), None)

    def open_in(context) -> None:
        page = context.pages[0] if context.pages else context.new_page()
        page.goto(server, timeout=60_000)
        page.wait_for_selector("[data-testid='stApp']", timeout=60_000)
        wait_until_idle(page)
        page.wait_for_function(f"document.cookie.includes('{TOKEN_COOKIE}=')", timeout=30_000)

    first, second = browser.new_context(), browser.new_context()
    try:
        open_in(first)
        before = token(first)
        assert before is not None and len(before) == 32 and int(before, 16) >= 0
        first.pages[0].reload()
        wait_until_idle(first.pages[0])
        time.sleep(1.0)   # the script run's JavaScript has run
        assert token(first) == before
        open_in(second)
        assert token(second) not in (None, before)
    finally:
        first.close()
        second.close()


def test_a_lesson_link_hides_and_locks_the_chosen_controls_in_a_fresh_browser(server, browser):
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{server}/?dataset=digits&model=mlp&method=magnitude&lock=method&lock=model&hide=seed",
                  timeout=60_000)
        page.wait_for_selector("[data-testid='stApp']", timeout=60_000)
        wait_until_idle(page)
        page.get_by_role("button", name="Train 10 epochs").wait_for(timeout=60_000)
        method = page.locator("[data-testid='stSelectbox']", has_text="Method").first
        dataset = page.locator("[data-testid='stSelectbox']", has_text="Dataset").first
        assert method.locator("input").is_disabled() and "method=magnitude" in page.url
        assert not dataset.locator("input").is_disabled()
        assert page.locator("[data-testid='stNumberInput']", has_text="Seed").count() == 0
        assert "lock=method" in page.url and "hide=seed" in page.url   # the page keeps the lesson in its link
        page.screenshot(path=str(ARTIFACTS / "browser-lesson-link.png"), full_page=True)
    finally:
        context.close()
