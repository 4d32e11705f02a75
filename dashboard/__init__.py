"""The Streamlit side of the dashboard, shared by the pages in `pages/` (which hold pages only: Streamlit lists
every file there as a page, so nothing imports from it).

- `state`: one run store, job manager and study pool per server; the device; widget values in the session
  and in the URL;
- `widgets`: config widgets built from `RunConfig` fields;
- `panels`: run status and live panels, submit helpers, a study's progress, the sidebar's job queue;
- `views`: a run's pruning result and training curves, method explanations, downloads;
- `errors`: the error boundary that turns exceptions into plain messages;
- `navigation`: the page files and the start of every page.

Nothing here runs long work in the script thread, and nothing called from the job manager's worker uses `st.*`.
"""
