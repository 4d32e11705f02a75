"""The dashboard: `streamlit run app.py`.

A multipage app: this file sets up the page, lists every page explicitly (st.navigation: the `pages/` folder
is not auto-discovered), draws the shared sidebar and runs the chosen page inside the error boundary, so no
page ever shows a traceback. What the pages share lives in the `dashboard` package.
"""

import streamlit as st

from dashboard import classroom, panels, state
from dashboard.errors import error_boundary
from dashboard.navigation import PAGES

state.limit_cpu_threads()
st.set_page_config(page_title="Pruning at initialization", page_icon="✂️", layout="wide",
                   initial_sidebar_state="expanded")

pages = [
    st.Page(PAGES["prune"], title="Prune & train", icon=":material/content_cut:", default=True),
    st.Page(PAGES["compare"], title="Compare methods", icon=":material/stacked_line_chart:"),
    st.Page(PAGES["collapse"], title="Layer collapse", icon=":material/layers_clear:"),
    st.Page(PAGES["lottery"], title="Lottery tickets", icon=":material/confirmation_number:"),
    st.Page(PAGES["gradient_flow"], title="Gradient flow", icon=":material/waves:"),
    st.Page(PAGES["sanity"], title="Sanity checks", icon=":material/fact_check:"),
    st.Page(PAGES["runs"], title="Runs", icon=":material/history:"),
]
if classroom.classroom_mode():   # a teacher password is set: the queue with owners, and the teacher's controls
    pages.append(st.Page(PAGES["classroom"], title="Classroom", icon=":material/school:"))
page = st.navigation(pages)
with error_boundary():
    panels.sidebar()
with error_boundary():
    page.run()
