"""The dashboard's dynamic sparse training (SET, RigL): the Prune & train page's choice and its mask-changes plot,
and the Gradient flow page's relearning study, under Streamlit's AppTest on digits with tiny budgets."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from dashboard import navigation, state
from pruning_core.studies import tasks
from pruning_core.infra.store import Store

TIMEOUT = 90
APP = str(Path(__file__).resolve().parent.parent / "app.py")


def open_page(page: str | None = None, **params) -> AppTest:
    """A new session opening a link (to `page`, else the landing page) with these URL parameters."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if page is not None:
        at.switch_page(navigation.PAGES[page])   # before the first run, so the link's settings are the session's first
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def figures_of(at: AppTest) -> dict[str, dict]:
    return {chart.key: json.loads(chart.proto.spec) for chart in at.get("plotly_chart") if chart.key}


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error], [e.value for e in at.error]


def test_choosing_rigl_starts_from_the_erk_mask(db):
    at = open_page(method="synflow", epochs="1")
    assert at.selectbox(key="sparse_training").value == "static"
    assert at.number_input(key="update_every").proto.disabled
    at.selectbox(key="sparse_training").set_value("rigl").run()
    assert_clean(at)
    assert at.selectbox(key="method").value == "random_erk"
    assert at.query_params["sparse_training"] == "rigl"


def test_a_rigl_run_draws_its_mask_changes_and_stores_its_final_mask(db):
    at = open_page(method="random_erk", sparsity="0.9", epochs="2", sparse_training="rigl", update_every="3")
    assert_clean(at)
    at.button(key="train").click().run()
    assert state.manager().wait_idle(60), "the background job did not finish in time"
    at.run()
    assert_clean(at)
    figure = figures_of(at)["train-mask"]
    bars = [trace for trace in figure["data"] if trace["type"] == "bar"]
    assert bars and sum(sum(trace["y"]) for trace in bars) > 0
    store = Store(db)
    run_id = int(at.query_params["run"])
    record = store.get_run(run_id)
    assert record["config"]["sparse_training"] == "rigl" and record["summary"]["weights_moved"] > 0
    assert sum(sum(trace["y"]) for trace in bars) == record["summary"]["weights_moved"]


def test_gradient_flow_page_offers_set_and_rigl_and_measures_the_relearning(db):
    at = open_page("gradient_flow", dataset="digits", model="mlp", method="random_erk", epochs="1", seed="3",
                   variants=["sparse", "rigl"])
    assert_clean(at)
    options = at.multiselect(key="gf-variants").options
    assert "SET (dynamic, random regrowth)" in options and "RigL (dynamic, gradient regrowth)" in options
    at.button(key="rl-run").click().run()
    assert state.manager().wait_idle(120), "the relearning study did not finish in time"   # a worker measures it
    spec = tasks.relearning_spec("digits", "mlp", 0.9, 1, 3)
    record = state.store().find_done(tasks.study_key(spec), kind=tasks.STUDY_KIND)
    table = tasks.study_tables(record)["relearning"]
    at.run()
    assert_clean(at)
    sentence = next(m.value for m in at.markdown if "lottery ticket" in m.value and "L2 distance" in m.value)
    assert f"{table.set_index('variant').loc['lottery', 'distance']:#.3g}".rstrip(".") in sentence
    assert len(at.dataframe) >= 1 and "rl-run" not in [b.key for b in at.button]
