"""The research pages under Streamlit's AppTest (Lottery tickets, Gradient flow, Sanity checks), and the engine
path that feeds the Lottery page live: the rounds of a mask search recorded as the run's metric rows.

Each page renders without an exception, its main action on tiny settings produces its chart, and bad input
shows a plain message. Everything runs on the built-in digits dataset with one-epoch budgets.
"""

from __future__ import annotations

import time

import pytest
from streamlit.testing.v1 import AppTest
from test_app import APP, TIMEOUT, assert_clean, figures_of, texts, wait_idle

import pruning_core as pc
from dashboard import navigation
from pruning_core.config import RunConfig
from pruning_core.infra import runner
from pruning_core.infra.store import Store
from pruning_core.presentation import findings, units
from pruning_core.studies import tasks

TINY_LOTTERY = {"model": "mlp", "rounds": "2", "epochs": "1", "gem_epochs": "1"}


def open_page(page: str, **params) -> AppTest:
    """A new session opening a link to `page` with these URL parameters, as a new browser tab does (the page is
    the session's first run, so the link's dataset, model and seed are not overridden by the landing page's)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.switch_page(navigation.PAGES[page])   # before the first run: found by its file name, as the URL path finds it
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


# ---- the engine: a mask search's rounds reach the store as they happen ---------------------------------------
def test_imp_and_gemminer_rounds_are_stored_as_search_rows(tmp_path):
    store = Store(tmp_path / "runs.db")
    seen = []
    imp = runner.execute(RunConfig(model="mlp", method="imp", sparsity=0.9, iterations=2, epochs=1), store)
    rounds = findings.split_metrics(store.metrics(imp.run_id))[1]
    assert rounds["round"].tolist() == [0, 1]
    assert rounds["density"].tolist()[0] == 1.0 and rounds["density"].tolist()[1] == pytest.approx(0.316, abs=1e-3)
    assert rounds["trained_test_accuracy"].between(0, 1).all()
    assert rounds["search_steps"].is_monotonic_increasing and (rounds["search_s"] > 0).all()
    training = findings.split_metrics(store.metrics(imp.run_id))[0]
    assert training["epoch"].max() == 1 and "phase" not in training.dropna(axis=1, how="all")
    # The hook sees each record as soon as the round is trained (same records as details["rounds"]).
    result = pc.prune(pc.MODELS["mlp"]((1, 8, 8), 10), "gemminer", 0.9, pc.load_dataset("digits"),
                      iterations=3, options={"epochs": 1, "on_round": seen.append})
    assert [r["round"] for r in seen] == [0, 1, 2] and seen == result.details["rounds"]
    assert all(0 <= r["mining_accuracy"] <= 1 for r in seen[1:]) and seen[-1]["density"] == pytest.approx(0.1)
    gem = runner.execute(RunConfig(model="mlp", method="gemminer", sparsity=0.9, iterations=3, epochs=1), store)
    events = findings.split_metrics(store.metrics(gem.run_id))[1]
    assert events["search_step"].tolist() == [r["step"] for r in seen]   # 'step' renamed: it names a metric column
    with pytest.raises(ValueError, match="on_round"):
        pc.prune(pc.MODELS["mlp"]((1, 8, 8), 10), "imp", 0.9, pc.load_dataset("digits"), options={"on_round": 3})


# ---- every research page renders, every control explains itself ------------------------------------------------
@pytest.mark.parametrize("page, title", [("lottery", "Lottery tickets"), ("gradient_flow", "Gradient flow"),
                                         ("sanity", "Sanity checks")])
def test_research_pages_render_with_help_on_every_control(db, page, title):
    at = open_page(page)
    assert_clean(at)
    assert at.title[0].value == title
    widgets = [*at.selectbox, *at.number_input, *at.slider, *at.multiselect, *at.button]
    assert len(widgets) >= 6
    assert all(w.help for w in widgets), [w.label for w in widgets if not w.help]
    assert Store(db).list_runs().empty   # nothing runs before the user asks


def test_method_choices_come_from_the_registry(db):
    at = open_page("sanity")
    assert at.selectbox(key="sc-method").options == [units.method_label(m) for m in pc.METHODS]
    at = open_page("lottery")
    assert at.multiselect(key="lt-compare").options == [units.method_label(m) for m in pc.METHODS
                                                          if m not in ("imp", "gemminer")]


# ---- Lottery tickets -------------------------------------------------------------------------------------------
def test_lottery_page_runs_imp_and_gemminer_and_compares_them(db):
    at = open_page("lottery", **TINY_LOTTERY)
    assert_clean(at)
    assert at.query_params["rounds"] == "2" and at.query_params["gem_epochs"] == "1"
    at.button(key="lt-run").click().run()
    assert_clean(at)
    wait_idle(db)
    at.run()
    assert_clean(at)
    figs = figures_of(at)
    rounds = figs["lt-imp-rounds"]["data"][0]
    assert rounds["x"] == pytest.approx([1.0, 1 / 0.316228, 10.0], rel=1e-3)   # dense, round 1, the ticket
    assert any(t.get("marker", {}).get("symbol") == "star" for t in figs["lt-imp-rounds"]["data"])
    assert any(t["name"] == "weights still in the running" for t in figs["lt-gemminer"]["data"])
    cost = figs["lt-cost"]["data"]
    assert cost[0]["x"] == ["IMP (lottery ticket)", "GemMiner"] and all(a is not None for a in cost[0]["y"])
    assert any(m.value.startswith("**GemMiner found its mask") for m in at.markdown)
    records = Store(db).list_runs()
    assert sorted(records["method"]) == ["gemminer", "imp"] and set(records["status"]) == {"done"}
    # A new viewer with the same settings gets the stored runs, not new ones.
    again = open_page("lottery", **TINY_LOTTERY)
    assert any("Reused from the store" in s for s in texts(again, "success"))
    assert "lt-run" not in [b.key for b in again.button] and len(Store(db).list_runs()) == 2


def test_lottery_page_draws_imp_rounds_while_the_search_runs(db):
    store = Store(db)
    config = RunConfig(model="mlp", method="imp", sparsity=0.9, iterations=2, epochs=1)
    run_id = store.create_run(config.to_dict(), key=config.key(), kind="train")
    store.start_run(run_id, "CPU")
    store.add_metrics(run_id, [{"phase": "search", "round": 0, "density": 1.0, "trained_test_accuracy": 0.8,
                                "search_steps": 11, "search_s": 1.0}])
    store.update_progress(run_id, 1, 2, "pruning: round 1 of 2")
    at = open_page("lottery", **TINY_LOTTERY)
    assert_clean(at)
    rounds = figures_of(at)["lt-imp-rounds"]
    assert rounds["data"][0]["y"] == [0.8]
    assert len(rounds["layout"]["xaxis"]["tickvals"]) == 3    # the rounds still to come keep their place
    bars = [p.proto.text for p in at.get("progress")]
    assert any("pruning: round 1 of 2" in b for b in bars)
    assert any("1 of 3 networks trained" in c.value for c in at.caption)
    at.button(key=f"lt-imp-cancel-{run_id}").click().run()
    assert store.get_run(run_id)["status"] == "cancelled"


def test_lottery_page_bad_input_is_a_message(db):
    at = open_page("lottery", dataset="tiny_imagenet", rounds="0", compare="nonsense")
    assert not at.exception
    assert any("The dataset is not available" in e for e in texts(at, "error"))
    warnings = texts(at, "warning")
    assert any("`rounds=0` was ignored" in w for w in warnings)
    assert any("`compare=['nonsense']` was ignored" in w for w in warnings)


# ---- Gradient flow -------------------------------------------------------------------------------------------
GF = {"epochs": "1", "variants": ["dense", "sparse", "sparse_init"]}


def test_gradient_flow_page_measures_in_the_background_and_draws_the_curves(db):
    at = open_page("gradient_flow", **GF)
    assert_clean(at)
    assert at.selectbox(key="gf-model").value == "mlp"
    at.button(key="gf-run").click().run()
    wait_idle(db, 90)   # a worker process measures it
    at.run()
    assert_clean(at)
    chart = figures_of(at)["gf-chart"]
    names = [t["name"] for t in chart["data"] if t.get("showlegend") is not False]
    assert names == ["Dense", "Sparse, standard init (10% kept)", "Sparse, sparsity-aware init (10% kept)"]
    assert any(m.value.startswith("At initialisation the sparse network's gradient is") for m in at.markdown)
    # The same settings re-attach to the finished measurement (a rerun, another viewer): nothing is recomputed.
    again = open_page("gradient_flow", **GF)
    assert "gf-chart" in figures_of(again) and "gf-run" not in [b.key for b in again.button]


def gf_spec(**changes) -> dict:
    values = {"dataset": "digits", "model": "mlp", "method": "random", "sparsity": 0.9, "epochs": 1, "seed": 0,
              "variants": GF["variants"], **changes}
    return tasks.gradient_flow_spec(**values)


def test_gradient_flow_page_shows_progress_and_cancels(db):
    at = open_page("gradient_flow", **{**GF, "epochs": "20"}, seed="7")
    at.button(key="gf-run").click().run()
    run_id = int(Store(db).latest_runs([tasks.study_key(gf_spec(epochs=20, seed=7))], kind=tasks.STUDY_KIND)
                 ["run_id"].iloc[0])
    deadline = time.time() + 60
    while not any("Dense: epoch" in b.proto.text for b in at.get("progress")) and time.time() < deadline:
        time.sleep(0.2)
        at.run()
    (bar,) = at.get("progress")
    assert bar.proto.text.startswith("**The measurement**: Dense: epoch ") and " of 20 · " in bar.proto.text
    at.button(key=f"gf-task-cancel-{run_id}").click().run()
    assert not at.exception
    assert wait_for_status(db, run_id, "cancelled")
    at.run()
    assert "gf-run" in [b.key for b in at.button]   # cancelled: the measurement can be started again
    assert any("was cancelled" in w for w in texts(at, "warning"))


def wait_for_status(db, run_id: int, status: str, timeout: float = 30) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if Store(db, recover=False).get_run(run_id)["status"] == status:
            return True
        time.sleep(0.1)
    return False


def test_gradient_flow_page_bad_input_is_a_message(db):
    at = open_page("gradient_flow", variants=["nonsense"], dataset="tiny_imagenet", epochs="1")
    assert not at.exception
    assert any("`variants=['nonsense']` was ignored" in w for w in texts(at, "warning"))
    assert any("The dataset is not available" in e for e in texts(at, "error"))

    # A measurement that failed in its worker is its message, and can be started again.
    store = Store(db)
    spec = gf_spec(seed=8)
    failed = store.create_run(spec, tasks.study_key(spec), kind=tasks.STUDY_KIND)
    store.start_run(failed, "cpu")
    store.fail_run(failed, "the model cannot take inputs of shape (1, 8, 8)")
    at = open_page("gradient_flow", **GF, seed="8")
    assert not at.exception
    assert any(e.startswith("**The measurement failed:** the model cannot take") for e in texts(at, "error"))
    assert at.button(key="gf-run").label == "Measure again"


# ---- Sanity checks -------------------------------------------------------------------------------------------
def test_sanity_page_trains_the_four_variants_and_explains_them(db):
    at = open_page("sanity", method="magnitude", epochs="1")
    assert_clean(at)
    at.button(key="sc-run").click().run()
    assert_clean(at)
    wait_idle(db)
    at.run()
    assert_clean(at)
    bars = figures_of(at)["sc-chart"]["data"][0]
    assert bars["x"][0] == "Method's mask" and len(bars["x"]) == 4 and None not in bars["y"]
    assert any(m.value.startswith("Magnitude's own mask reaches") for m in at.markdown)
    assert any("Shuffling" in t for t in texts(at, "warning") + texts(at, "success"))
    runs = Store(db).list_runs()
    assert len(runs) == 4 and set(runs["status"]) == {"done"}
    assert sorted(Store(db).get_run(int(r))["config"]["sanity"] for r in runs["run_id"]) == \
        ["invert", "none", "reinit", "shuffle"]


def test_sanity_page_reuses_the_methods_own_run(db):
    store = Store(db)
    own = runner.execute(RunConfig(method="magnitude", sparsity=0.9, epochs=1), store)
    at = open_page("sanity", method="magnitude", epochs="1")
    assert_clean(at)
    bars = figures_of(at)["sc-chart"]["data"][0]
    assert bars["y"][0] == pytest.approx(own.summary["final_test_accuracy"]) and bars["y"][1:] == [None] * 3
    assert at.button(key="sc-run").label == "Run the missing checks"
    assert any("1 of 4 variants trained" in c.value for c in at.caption)


def test_sanity_page_bad_input_is_a_message(db):
    at = open_page("sanity", dataset="tiny_imagenet", method="dense", sparsity="1.5")
    assert not at.exception
    assert any("The dataset is not available" in e for e in texts(at, "error"))
    warnings = texts(at, "warning")
    assert any("`method=dense` was ignored" in w for w in warnings)
    assert any("`sparsity=1.5` was ignored" in w for w in warnings)
    at = open_page("sanity", sparsity="0", epochs="1")   # dense: a valid sparsity, not one this page offers
    assert_clean(at)
    assert any("`sparsity=0` was ignored: this page takes sparsities from 20.6% to 99.9%" in w
               for w in texts(at, "warning"))
    assert at.slider(key="sc-compression").value == 1.0
