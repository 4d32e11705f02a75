"""The pages app.py registers, and the start of every page: its header, and a workaround that routes a page
opened on its own through app.py."""

from __future__ import annotations

import runpy
from pathlib import Path

import streamlit as st

from dashboard import errors, state

# Page files, as app.py registers them (st.page_link / st.switch_page take these paths).
PAGES = {
    "prune": "pages/prune_and_train.py",
    "compare": "pages/compare_methods.py",
    "collapse": "pages/layer_collapse.py",
    "runs": "pages/runs.py",
    "lottery": "pages/lottery_tickets.py",
    "gradient_flow": "pages/gradient_flow.py",
    "sanity": "pages/sanity_checks.py",
    "classroom": "pages/classroom.py",   # registered on a classroom server only (a teacher password is set)
}
APP = Path(__file__).resolve().parent.parent / "app.py"


def ensure_navigation() -> None:
    """Run this page through app.py. Until some session has run app.py's st.navigation, Streamlit treats
    the `pages/` folder as old-style auto-discovered pages, so a link straight to a page (/runs) on a
    freshly started server runs the page alone, without the app's layout, sidebar and error boundary
    (AppTest starts every run this way). Then run app.py here instead (it routes to this same page) and
    end the lone run."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        runpy.run_path(str(APP), run_name="__main__")
        st.stop()


def page_header(title: str, intro: str) -> None:
    """The page's title and introduction; call it first on every page (it also notes a page switch, and shows what
    the widget callbacks before this run met)."""
    ensure_navigation()
    state.enter_page(title)
    st.title(title)
    st.caption(intro)
    errors.show_callback_errors()
