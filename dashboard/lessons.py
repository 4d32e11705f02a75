"""Lesson links: a link that opens a page on a fixed setup with chosen controls locked (shown, not changeable) or
hidden (not shown; their value is the link's), like TensorFlow Playground's `*_hide` parameters:
`?method=magnitude&...&lock=method&lock=model&hide=seed`; `answer=hide` leaves the answer out (a stored training
run of the setup is shown only once the student presses Train, which then reuses it). The teacher builds one from
the page as it stands ("Lesson link" in the sidebar); every page keeps these parameters in its URL
(`state.sync_url`).
"""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from dashboard import state

LOCK, HIDE, ANSWER = state.LESSON_PARAMS
NOT_CONTROLS = (LOCK, HIDE, ANSWER, "run", "sweep", "open")   # URL parameters that are not a control's value


def _names(param: str) -> set[str]:
    return {name.strip() for raw in st.query_params.get_all(param) for name in raw.split(",") if name.strip()}


def locked(key: str) -> bool:
    """Whether the link locks the control of this key (or URL parameter)."""
    return key in _names(LOCK)


def hidden(key: str) -> bool:
    """Whether the link hides the control of this key (or URL parameter)."""
    return key in _names(HIDE)


def active() -> bool:
    """Whether the page was opened from a lesson link (then its presets, which would set locked controls, are
    not offered)."""
    return bool(_names(LOCK) or _names(HIDE) or answer_hidden())


def answer_hidden() -> bool:
    """Whether the link leaves the answer out: students press Train themselves."""
    return st.query_params.get(ANSWER) == "hide"


def lesson_link(params: dict[str, list[str]], lock: list[str], hide: list[str], no_answer: bool = False) -> str:
    """The link of this page's setup (`params`: its URL parameters) with these controls locked and hidden, and
    with `no_answer` the answer left out."""
    base = ""
    try:
        base = st.context.url or ""
    except Exception:   # noqa: BLE001 - no browser behind this session (a test): a relative link
        base = ""
    query = {k: v for k, v in params.items() if k not in NOT_CONTROLS}
    query.update({LOCK: list(lock), HIDE: list(hide), ANSWER: ["hide"] if no_answer else []})
    return f"{base}?{urlencode({k: v for k, v in query.items() if v}, doseq=True)}"


def link_builder() -> None:
    """The teacher's "Lesson link" popover: choose the controls to lock and to hide; the link to copy."""
    params = {k: st.query_params.get_all(k) for k in st.query_params}
    controls = [k for k in params if k not in NOT_CONTROLS]
    with st.popover("Lesson link", icon=":material/link:", width="stretch",
                    help="A link that opens this page on this setup with some controls locked or hidden."):
        lock = st.multiselect("Lock these controls", controls, default=sorted(_names(LOCK) & set(controls)),
                              key="lesson-lock", help="Shown, but students cannot change them.")
        hide = st.multiselect("Hide these controls", controls, default=sorted(_names(HIDE) & set(controls)),
                              key="lesson-hide", help="Not shown at all; the page uses the link's value.")
        no_answer = st.toggle("Leave the answer out", value=answer_hidden(), key="lesson-answer",
                              help="Students see the setup and press Train themselves; a stored run of it is "
                                   "then reused, not shown at once.")
        st.code(lesson_link(params, lock, hide, no_answer), language=None, wrap_lines=True)
        st.caption("Copy it with the button at the code's corner. Opening it in a fresh browser reproduces this view.")
