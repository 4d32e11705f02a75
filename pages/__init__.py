"""The dashboard's pages. app.py lists every page file in st.navigation; common.py and analyses.py are helper
modules the pages import, not pages."""
