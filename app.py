"""The dashboard: `streamlit run app.py`.

A multipage app: this file sets up the page, lists every page explicitly (so the `pages/` folder is not
auto-discovered: pages/common.py holds shared helpers and is no page), draws the shared sidebar and runs
the chosen page inside the error boundary, so no page ever shows a traceback.
"""

import streamlit as st

from pages import common

common.limit_cpu_threads()
st.set_page_config(page_title="Pruning at initialization", page_icon=":material/content_cut:", layout="wide",
                   initial_sidebar_state="expanded")

page = st.navigation([
    st.Page(common.PAGES["prune"], title="Prune & train", icon=":material/content_cut:", default=True),
    st.Page(common.PAGES["compare"], title="Compare methods", icon=":material/stacked_line_chart:"),
    st.Page(common.PAGES["collapse"], title="Layer collapse", icon=":material/layers_clear:"),
    st.Page(common.PAGES["lottery"], title="Lottery tickets", icon=":material/confirmation_number:"),
    st.Page(common.PAGES["gradient_flow"], title="Gradient flow", icon=":material/waves:"),
    st.Page(common.PAGES["sanity"], title="Sanity checks", icon=":material/fact_check:"),
    st.Page(common.PAGES["runs"], title="Runs", icon=":material/history:"),
])
with common.error_boundary():
    common.sidebar()
with common.error_boundary():
    page.run()
