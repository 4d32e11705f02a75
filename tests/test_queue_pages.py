"""The one job queue as the pages show it (AppTest): a study queued from the Layer collapse page has a place that
another session sees; a long prune asked for by a link is a queued, cancellable job, not the page's own work; a
queued run shows only its place; watching fetches only new metric rows and slows down while nothing changes;
the panel of a deleted run stops polling."""

from __future__ import annotations

import pandas as pd
import streamlit
from streamlit.testing.v1 import AppTest
from support import wait_for
from test_app import APP, TIMEOUT, texts

from dashboard import navigation, panels, state
from pruning_core.config import RunConfig
from pruning_core.infra.store import Store
from pruning_core.studies import tasks

LONG = RunConfig(dataset="digits", model="mlp", method="magnitude", sparsity=0.5, epochs=5000)   # stopped by tests


def open_page(page: str, **params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page(navigation.PAGES[page])
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def occupy_the_worker() -> int:
    """Submit a long run and wait until the worker runs it: what is submitted next waits in the queue."""
    run_id = state.manager().submit(LONG)
    assert wait_for(lambda: state.store().get_run(run_id)["status"] == "running", 90)
    return run_id


def test_a_study_from_the_layer_collapse_page_has_a_place_every_session_sees(db):
    blocker = occupy_the_worker()
    first = open_page("collapse", methods=["magnitude", "random"])      # quick: queued without a click
    assert not first.exception
    spec = tasks.collapse_spec("digits", "conv", 0, ["magnitude", "random"])
    (study,) = Store(db).latest_runs([tasks.study_key(spec)], kind=tasks.STUDY_KIND)["run_id"]
    second = open_page("collapse", methods=["magnitude", "random"])     # another viewer, another session
    assert not second.exception
    assert any(t.startswith("**The study** is queued: 1 job ahead of it.") for t in texts(second, "info"))
    assert f"study-cancel-{study}" in [b.key for b in second.button]    # anyone may cancel it
    assert len(Store(db).list_runs(kind=tasks.STUDY_KIND)) == 1         # both sessions share one job
    state.manager().cancel(blocker)
    assert state.manager().wait_idle(120)
    second.run()
    assert {"critical", "heatmap", "conservation"} <= {c.key for c in second.get("plotly_chart")}


def test_a_long_prune_asked_for_by_a_link_is_a_queued_job_that_can_be_cancelled(db):
    # 100,000 SynFlow rounds: minutes of work, so the page does not prune it itself.
    at = open_page("prune", dataset="digits", model="conv", method="synflow", iterations="100000", epochs="1")
    assert not at.exception
    assert any("runs in the background job queue rather than in the page" in t for t in texts(at, "info"))
    assert "prune-density" not in [c.key for c in at.get("plotly_chart")]
    at.button(key="prune-background").click().run()
    (run_id,) = Store(db).list_runs(kind="prune")["run_id"]
    assert wait_for(lambda: state.store().get_run(int(run_id))["progress"]["message"].startswith("pruning"), 90)
    at.run()
    assert any("pruning: round" in p.proto.text for p in at.get("progress")), [p.proto.text for p in at.get("progress")]
    at.button(key=f"prune-job-cancel-{run_id}").click().run()
    assert wait_for(lambda: state.store().get_run(int(run_id))["status"] == "cancelled", 30)
    assert state.store().get_run(int(run_id))["progress"]["done"] < 100_000


def test_a_queued_run_shows_only_its_place(db, monkeypatch):
    occupy_the_worker()
    config = RunConfig(dataset="digits", model="mlp", method="magnitude", sparsity=0.9, epochs=1)
    run_id = state.manager().submit(config)
    fetched = []
    real = Store.new_metrics
    monkeypatch.setattr(Store, "new_metrics", lambda self, *a, **k: fetched.append(a) or real(self, *a, **k))
    at = open_page("prune", dataset="digits", model="mlp", method="magnitude", sparsity="0.9", epochs="1",
                   run=str(run_id))
    assert not at.exception
    assert any(t.startswith(f"**Run #{run_id}** is queued: 1 job ahead of it.") for t in texts(at, "info"))
    assert "train-curves" not in [c.key for c in at.get("plotly_chart")] and fetched == []


def test_watching_fetches_only_the_rows_added_since_the_last_poll_once_for_every_viewer(db):
    store = state.store()
    run_id = store.create_run(RunConfig().to_dict(), "k")
    store.start_run(run_id, "cpu")
    store.add_metrics(run_id, [{"step": s, "epoch": s / 10, "train_loss": 1.0 / (s + 1)} for s in range(5)])
    asked = []
    real = Store.new_metrics
    Store.new_metrics = lambda self, r, after=0: asked.append(after) or real(self, r, after=after)
    try:
        first = panels.run_metrics(store.get_run(run_id), now=100.0)
        assert len(first) == 5 and asked == [0]
        assert panels.run_metrics(store.get_run(run_id), now=100.1) is first and asked == [0]   # nothing new
        store.add_metrics(run_id, [{"step": s, "epoch": s / 10, "test_accuracy": 0.5} for s in range(5, 8)])
        # Another tab polls within the same second: it draws the rows the first one drew (one figure for all).
        assert panels.run_metrics(store.get_run(run_id), now=100.5) is first and asked == [0]
        both = panels.run_metrics(store.get_run(run_id), now=101.5)
        assert asked[-1] > 0 and len(both) == 8                    # asked only for what followed the cursor
        pd.testing.assert_frame_equal(both[store.metrics(run_id).columns], store.metrics(run_id))
        store.add_metrics(run_id, [{"step": 8, "epoch": 0.8}])
        store.finish_run(run_id, {})
        assert len(panels.run_metrics(store.get_run(run_id), now=101.6)) == 9   # ended: all its rows at once
    finally:
        Store.new_metrics = real


def test_polling_slows_while_nothing_changes_and_stops_when_nothing_is_active():
    assert panels.poll_interval(["running"], 0) == panels.POLL_S
    assert panels.poll_interval(["queued"], 0) == panels.QUEUED_POLL_S
    assert panels.poll_interval(["running"], 15) == 3.0 and panels.poll_interval(["running"], 120) == 10.0
    assert panels.poll_interval(["done", "failed"], 0) is None
    assert panels.poll_interval(["done", "queued"], 0) == panels.QUEUED_POLL_S
    # 30 tabs watching one run poll it about 10 times a second together, not 30.
    assert panels.poll_interval(["running"], 0, viewers=30) == 3.0
    assert panels.poll_interval(["running"], 0, viewers=10) == panels.POLL_S
    assert panels.poll_interval(["running"], 0, viewers=1000) == 10.0
    watch = panels.Watch()
    record = {"id": 1, "status": "running", "n_metrics": 3, "progress": {"done": 1, "message": "training"}}
    assert watch.note([record], now=100.0) == 0.0
    assert watch.note([record], now=112.0) == 12.0                 # unchanged for 12 s
    assert watch.note([{**record, "n_metrics": 4}], now=113.0) == 0.0


CAPTURED: list = []   # (fragment body, run_every) of every fragment the panel registers


def watch_script():
    import streamlit as st
    import test_queue_pages as here

    from dashboard import panels

    if st.session_state.pop("replay", False):
        here.CAPTURED[-1][0]()    # the fragment's body, as its timer runs it
    else:
        panels.live_panel(int(st.query_params["run"]), key="w")


def test_the_panel_of_a_deleted_run_says_so_and_stops_polling(db, monkeypatch):
    real = streamlit.fragment

    def recording(func=None, *, run_every=None, **kwargs):
        CAPTURED.append((func, run_every))
        return real(func, run_every=run_every, **kwargs)

    monkeypatch.setattr(streamlit, "fragment", recording)
    CAPTURED.clear()
    store = Store(db)
    run_id = store.create_run(RunConfig().to_dict(), "k", queue=True)
    at = AppTest.from_function(watch_script, default_timeout=TIMEOUT)
    at.query_params["run"] = str(run_id)
    at.run()
    assert CAPTURED[-1][1] == panels.QUEUED_POLL_S          # queued: polled
    store.delete_run(run_id)
    at.session_state["replay"] = True
    at.run()                                                # the next poll finds it gone: the page reruns once
    assert not at.exception
    assert any(f"Run #{run_id} is no longer in the store" in t for t in texts(at, "info"))
    assert [r for _, r in CAPTURED[1:] if r is not None] == []   # and registers no polling fragment again


def sidebar_script():
    from dashboard import panels

    panels.sidebar()


def test_the_sidebar_polls_the_queue_only_while_it_is_not_empty(db, monkeypatch):
    real = streamlit.fragment
    registered = []
    monkeypatch.setattr(streamlit, "fragment", lambda func=None, *, run_every=None, **kwargs: registered.append(
        (kwargs.get("key"), run_every)) or real(func, run_every=run_every, **kwargs))
    at = AppTest.from_function(sidebar_script, default_timeout=TIMEOUT).run()
    assert registered[-1] == ("sidebar-queue", None) and "idle" in at.sidebar.markdown[-1].value
    Store(db).create_run(RunConfig().to_dict(), "k", queue=True)   # someone's job waits
    at.run()
    assert registered[-1] == ("sidebar-queue", panels.QUEUE_POLL_S)
    assert "1 job queued or running" in at.sidebar.markdown[-1].value


def test_objects_of_loaded_modules_are_frozen_out_of_the_collectors_walk(monkeypatch):
    import gc
    import sys
    import types

    monkeypatch.setattr(state, "_FROZEN_AT", [0])
    try:
        state.freeze_long_lived_objects()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000                          # torch, pandas, streamlit...: out of every full collection
        state.freeze_long_lived_objects()               # nothing new loaded: nothing more to do
        assert gc.get_freeze_count() == frozen
        monkeypatch.setitem(sys.modules, "a_module_loaded_later", types.ModuleType("a_module_loaded_later"))
        kept = [[i] for i in range(1000)]               # objects a newly loaded module would hold
        state.freeze_long_lived_objects()
        assert gc.get_freeze_count() >= frozen + 1000 and kept
    finally:
        gc.unfreeze()


def test_viewers_of_a_run_are_the_sessions_that_polled_it_lately(db, monkeypatch):
    import types

    sessions = iter(["tab-a", "tab-b", "tab-a", "tab-c"])
    monkeypatch.setattr(panels, "get_script_run_ctx", lambda: types.SimpleNamespace(session_id=next(sessions)))
    assert panels.viewers(7, now=100.0) == 1
    assert panels.viewers(7, now=101.0) == 2
    assert panels.viewers(7, now=102.0) == 2                      # tab-a again: still two tabs
    assert panels.viewers(7, now=100.0 + panels.VIEWER_SPAN_S + 1.5) == 2   # tab-b stopped looking; tab-c came


def test_a_poll_changes_or_stops_its_own_polling_without_drawing_the_page_again(monkeypatch):
    import types

    sent, reruns = [], []
    monkeypatch.setattr(panels, "_fragment_rerun", lambda: "fragment-1")
    monkeypatch.setattr(panels, "get_script_run_ctx", lambda: types.SimpleNamespace(enqueue=sent.append))
    monkeypatch.setattr(panels.st, "rerun", lambda: reruns.append(1))
    watch = panels.Watch(interval=2.0)
    panels._follow(watch, 1.0, page_draws_the_end=False)        # the run started: poll faster
    assert watch.interval == 1.0 and reruns == []
    assert (sent[-1].auto_rerun.fragment_id, sent[-1].auto_rerun.interval) == ("fragment-1", 1.0)
    panels._follow(watch, 1.0, page_draws_the_end=False)        # nothing to change: nothing sent
    assert len(sent) == 1
    panels._follow(watch, None, page_draws_the_end=False)       # done, drawn by the panel: stop polling
    assert watch.interval is None and list(sent[-1].stop_auto_rerun.fragment_ids) == ["fragment-1"]
    assert reruns == []
    ended = panels.Watch(interval=1.0)
    panels._follow(ended, None, page_draws_the_end=True)        # the page draws the outcome: one rerun
    assert reruns == [1] and ended.interval is None and len(sent) == 2
