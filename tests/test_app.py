"""Every page of the dashboard under Streamlit's AppTest: it renders without an exception, the presets and
widgets produce the charts, a collapsed configuration shows the collapse warning, bad input shows a plain
message (never a traceback), URLs reproduce a setup, and background runs are shown from the store.

Everything runs on the built-in digits dataset with tiny budgets (1 epoch); nothing touches the network.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from dashboard import navigation, state, views
from pruning_core.config import RunConfig
from pruning_core.engine.data import load_dataset
from pruning_core.infra import runner
from pruning_core.infra.store import Store
from pruning_core.studies import tasks

TIMEOUT = 90
APP = str(Path(__file__).resolve().parent.parent / "app.py")


def open_page(page: str | None = None, **params) -> AppTest:
    """A new session opening a link: the landing page, or `page`, with these URL parameters."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if page is not None:
        at.run()  # AppTest needs one run of app.py before it can switch pages
        at.switch_page(navigation.PAGES[page])
        at.query_params.clear()
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def figures_of(at: AppTest) -> dict[str, dict]:
    """The Plotly figures on the page, by element key."""
    return {chart.proto.id.split("-", 3)[-1] if not chart.key else chart.key: json.loads(chart.proto.spec)
            for chart in at.get("plotly_chart")}


def texts(at: AppTest, kind: str) -> list[str]:
    return [element.value for element in getattr(at, kind)]


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not texts(at, "error"), texts(at, "error")


def wait_idle(db_path, timeout: float = 60) -> None:
    assert state.manager().wait_idle(timeout), "the background job did not finish in time"


FAST = {"method": "magnitude", "epochs": "1"}  # the cheapest prune, one epoch


# ---- every page renders ------------------------------------------------------------------------------------
@pytest.mark.parametrize("page", ["prune", "compare", "collapse", "runs"])
def test_every_page_renders_without_exception(db, page):
    at = open_page(page, **FAST, methods=["magnitude", "random"])
    assert_clean(at)
    assert at.title[0].value in {"Prune & train", "Compare methods", "Layer collapse", "Runs"}
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "Device:" in sidebar and state.device_label() in sidebar


def test_pages_folder_holds_only_the_registered_pages():
    # Streamlit lists every file in pages/ as a page: a helper module there would show up in the navigation, and
    # a page imported by another module would run as a script at import time. Shared code lives in dashboard/.
    root = Path(APP).parent
    assert sorted(p.relative_to(root).as_posix() for p in (root / "pages").glob("*.py")) == \
        sorted(navigation.PAGES.values())
    sources = [root / "app.py", *(p for folder in ("pages", "dashboard", "pruning_core", "tests", "benchmarks")
                                  for p in (root / folder).rglob("*.py"))]
    importers = [str(p.relative_to(root)) for p in sources
                 if re.search(r"^\s*(from pages\b|import pages\b)", p.read_text(), re.M)]
    assert importers == []


def test_every_control_has_help_text(db):
    store = Store(db)
    runner.execute(RunConfig(method="magnitude", sparsity=0.99, epochs=0), store, kind="prune")
    at = open_page(**FAST)
    for page in (None, "compare", "runs"):
        if page is not None:
            at.switch_page(navigation.PAGES[page]).run()
        if page == "runs":
            at.multiselect(key="runs-selected").set_value([1]).run()
            at.selectbox(key="runs-open").set_value(1).run()
        assert_clean(at)
        widgets = [*at.selectbox, *at.number_input, *at.slider, *at.multiselect, *at.toggle, *at.pills, *at.button]
        assert len(widgets) >= 5
        assert all(w.help for w in widgets), (page, [w.label for w in widgets if not w.help])
        downloads = at.get("download_button")
        assert all(d.proto.help for d in downloads), (page, [d.proto.label for d in downloads if not d.proto.help])


# ---- Prune & train -------------------------------------------------------------------------------------------
def test_landing_page_shows_the_pruning_result_at_once(db):
    at = open_page(**FAST)
    assert_clean(at)
    figs = figures_of(at)
    density = figs["prune-density"]["data"][0]
    assert density["type"] == "bar" and density["x"] == ["conv1", "conv2", "conv3", "fc"]
    assert [m.label for m in at.metric][:2] == ["Weights kept", "FLOPs kept"]
    assert at.metric[0].value == "937"  # 1% of 93,728
    assert at.slider(key="compression").value == 2.0
    assert any("99% of the weights removed" in m.value and "10^2.0 (100×)" in m.value for m in at.caption)
    assert at.toggle(key="prune-log").value is False
    at.toggle(key="prune-log").set_value(True).run()
    assert figures_of(at)["prune-density"]["layout"]["yaxis"]["type"] == "log"


def test_quick_demo_preset_produces_the_density_chart_and_queues_training(db):
    at = open_page(**FAST)
    at.button(key="preset-quick_demo").click().run()
    assert_clean(at)
    assert at.selectbox(key="method").value == "synflow"
    assert at.slider(key="compression").value == 2.0
    assert at.number_input(key="epochs").value == 10
    figs = figures_of(at)
    assert figs["prune-density"]["data"][0]["name"] == "SynFlow"
    run_id = int(at.query_params["run"])
    record = Store(db).get_run(run_id)
    assert record["config"]["method"] == "synflow" and record["config"]["sparsity"] == 0.99
    assert record["status"] in ("queued", "running", "done")
    state.manager().cancel(run_id)


def test_collapsed_configuration_shows_the_collapse_warning(db):
    at = open_page(method="magnitude", sparsity="0.999", epochs="1", compare="synflow")
    assert not at.exception
    (error,) = texts(at, "error")
    assert "Layer collapse" in error and "`conv2`, `conv3`" in error and "Effective density 0%" in error
    figs = figures_of(at)
    names = [trace["name"] for trace in figs["prune-density"]["data"]]
    assert names[0] == "Magnitude" and "SynFlow" in names and "Magnitude: collapsed layer" in names
    # SynFlow at the same compression keeps every layer connected: said beside the chart.
    assert any("**SynFlow**: no layer collapsed" in m.value for m in at.markdown)


def test_magnitude_preset_sets_every_widget_and_compares_with_synflow(db):
    at = open_page(**FAST)
    at.button(key="preset-magnitude_collapse").click().run()
    assert at.selectbox(key="method").value == "magnitude"
    assert at.slider(key="compression").value == 3.0
    assert at.multiselect(key="compare").value == ["synflow"]
    assert any("Layer collapse" in e for e in texts(at, "error"))
    state.manager().cancel(int(at.query_params["run"]))


def test_training_runs_in_the_background_and_draws_live_curves(db):
    at = open_page(**FAST)
    at.button(key="train").click().run()
    assert_clean(at)
    run_id = int(at.query_params["run"])
    wait_idle(db)
    at.run()
    assert_clean(at)
    figs = figures_of(at)
    curves = figs["train-curves"]["data"]
    accuracy = next(t for t in curves if t["name"] == "test accuracy")
    assert accuracy["x"] == [0, 1]
    assert [m.label for m in at.metric][-4:] == ["Final test accuracy", "Best test accuracy", "Training time", "Speed"]
    assert Store(db).get_run(run_id)["status"] == "done"
    # A new viewer with the same configuration and seed gets the stored run, not a new one.
    again = open_page(**FAST)
    assert any("Reused from the store" in s for s in texts(again, "success"))
    assert int(again.query_params["run"]) == run_id
    assert "train" not in [b.key for b in again.button]
    assert len(Store(db).list_runs()) == 1


def test_training_started_from_the_page_prunes_once(db, monkeypatch):
    # The page prunes to draw the density bars; the training run it starts gets those masks through the store
    # instead of pruning the same configuration again.
    calls = []
    real = runner.prune

    def counting(model, method, *args, **kwargs):
        calls.append(method)
        return real(model, method, *args, **kwargs)

    monkeypatch.setattr(runner, "prune", counting)
    at = open_page(method="snip", sparsity="0.99", epochs="1", seed="23")   # a configuration no other test prunes
    assert_clean(at)
    assert calls == ["snip"]
    at.button(key="train").click().run()
    run_id = int(at.query_params["run"])
    wait_idle(db)
    at.run()
    assert_clean(at)
    assert calls == ["snip"]
    store = Store(db)
    assert store.get_run(run_id)["status"] == "done"
    shown = figures_of(at)["prune-density"]["data"][0]["text"]       # the kept counts on the page's bars
    assert [f"{k:,}" for k in store.layers(run_id)["kept"]] == shown
    monkeypatch.setattr(runner, "prune", real)
    config = RunConfig(method="snip", sparsity=0.99, epochs=1, seed=23)
    digits = load_dataset("digits")
    fresh = runner.prune_with_config(runner.build_model(config, digits), config, digits)
    assert all(bool((store.load_masks(run_id)[n] == fresh.masks[n]).all()) for n in fresh.masks)


def halfway_run(store: Store) -> int:
    """A run of the FAST page's configuration that another process is training, halfway through its epoch."""
    config = RunConfig(method="magnitude", sparsity=0.99, epochs=1)
    run_id = store.create_run(config.to_dict(), key=config.key(), kind="train")
    store.start_run(run_id, "CPU")
    store.update_progress(run_id, 0.5, 1, "training: epoch 1 of 1")
    return run_id


def test_live_panel_shows_progress_and_cancel_while_running(db):
    store = Store(db)
    run_id = halfway_run(store)
    at = open_page(**FAST)
    assert_clean(at)
    assert int(at.query_params["run"]) == run_id
    (bar,) = at.get("progress")
    assert "training: epoch 1 of 1" in bar.proto.text and "50%" in bar.proto.text and "left" in bar.proto.text
    at.button(key=f"train-cancel-{run_id}").click().run()
    assert store.get_run(run_id)["status"] == "cancelled"
    assert any("cancelled" in w for w in texts(at, "warning"))


def test_queued_run_shows_its_queue_position(db):
    store = Store(db)
    for seed in (1, 2):  # two jobs of other viewers, not tracked by this server's manager
        other = RunConfig(method="random", sparsity=0.9, epochs=1, seed=seed)
        store.create_run(other.to_dict(), key=other.key(), kind="train")
    config = RunConfig(method="magnitude", sparsity=0.99, epochs=1)
    run_id = store.create_run(config.to_dict(), key=config.key(), kind="train")
    at = open_page(**FAST, run=str(run_id))
    assert any("2 jobs ahead" in i for i in texts(at, "info"))


def test_big_model_on_a_cpu_prunes_in_the_background(db, monkeypatch):
    monkeypatch.setattr(state, "on_gpu", lambda: False)  # on a GPU every model is pruned in the page
    # SynFlow's 100 rounds over VGG-11's 9 million weights: seconds of work, too long for the page itself.
    at = open_page(model="vgg11", method="synflow", epochs="1")
    assert_clean(at)
    assert any("runs in the background job queue" in i for i in texts(at, "info"))
    assert "prune-density" not in figures_of(at)
    at.button(key="prune-background").click().run()
    assert_clean(at)
    wait_idle(db)
    at.run()
    assert_clean(at)
    density = figures_of(at)["prune-density"]["data"][0]
    assert density["name"] == "SynFlow" and len(density["x"]) == 9  # VGG-11: 8 convolutions and a classifier
    assert Store(db).list_runs()["kind"].tolist() == ["prune"]


def test_configuration_lives_in_the_url(db):
    at = open_page(method="snip", sparsity="0.999", seed="3", epochs="2", schedule="linear", iterations="5")
    assert_clean(at)
    params = at.query_params
    assert params["method"] == "snip" and params["sparsity"] == "0.999" and params["seed"] == "3"
    assert params["schedule"] == "linear" and params["iterations"] == "5" and params["epochs"] == "2"
    assert at.selectbox(key="method").value == "snip"
    assert at.number_input(key="iterations").value == 5
    at.selectbox(key="method").set_value("random").run()
    assert at.query_params["method"] == "random"


def test_bad_link_parameters_are_ignored_with_a_note(db):
    at = open_page(method="nonsense", sparsity="1.5", epochs="1")
    assert not at.exception
    warnings = texts(at, "warning")
    assert any("`method=nonsense` was ignored" in w for w in warnings)
    assert any("`sparsity=1.5` was ignored" in w for w in warnings)
    assert at.selectbox(key="method").value == "synflow"


def test_missing_dataset_shows_a_message_not_a_traceback(db):
    at = open_page(dataset="tiny_imagenet", **FAST)
    assert not at.exception
    (error,) = texts(at, "error")
    assert "The dataset is not available" in error and "tiny-imagenet-200" in error
    # A downloadable dataset that is not here yet: training will fetch it (nothing is downloaded by the page).
    at = open_page(dataset="mnist", **FAST)
    assert not at.exception and not texts(at, "error")
    assert any("MNIST is not on this machine yet" in i for i in texts(at, "info"))


def test_out_of_memory_shows_what_to_do(db, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(runner, "prune_with_config", out_of_memory)
    at = open_page(**FAST, seed="17")  # a configuration no other test has cached
    assert not at.exception
    (error,) = texts(at, "error")
    assert "Out of memory" in error and "smaller model" in error
    # The page stays usable: the widgets are there and a change reruns cleanly.
    monkeypatch.undo()
    at.number_input(key="seed").set_value(0).run()
    assert_clean(at)


def test_incompatible_model_and_data_is_a_plain_message(db, monkeypatch):
    def does_not_fit(*args, **kwargs):
        raise ValueError("the model cannot take inputs of shape (3, 64, 64): mat1 and mat2 shapes cannot be "
                         "multiplied. Check that the data matches the model (input channels, image size or features).")

    monkeypatch.setattr(runner, "prune_with_config", does_not_fit)
    at = open_page(**FAST, seed="18")
    assert not at.exception
    (error,) = texts(at, "error")
    assert error.startswith("**This input does not work:** the model cannot take inputs")


def test_compression_zero_is_the_dense_network(db):
    at = open_page(**FAST)
    at.slider(key="compression").set_value(0.0).run()
    assert_clean(at)
    assert figures_of(at)["prune-density"]["data"][0]["name"] == "Dense baseline"
    assert at.metric[0].value == "93,728"
    assert any("0% of the weights removed" in m.value for m in at.caption)


def test_failed_run_shows_the_stores_error(db):
    store = Store(db)
    config = RunConfig(method="magnitude", sparsity=0.99, epochs=1)
    run_id = store.create_run(config.to_dict(), key=config.key(), kind="train")
    store.start_run(run_id, "CPU")
    store.fail_run(run_id, "Out of memory: choose a smaller model.")
    at = open_page(**FAST)
    assert any(f"Run #{run_id} failed" in e and "smaller model" in e for e in texts(at, "error"))
    assert at.button(key="train").label.startswith("Again: train")


# ---- Compare methods -------------------------------------------------------------------------------------
def test_sweep_fills_the_chart_marks_collapse_and_downloads_csv(db):
    at = open_page("compare", epochs="1", methods=["magnitude", "random"], sparsities=["0.999"], seeds="1")
    assert_clean(at)
    at.button(key="run-sweep").click().run()
    assert_clean(at)
    sweep_id = int(at.query_params["sweep"])
    wait_idle(db, 90)
    at.run()
    assert_clean(at)
    fig = figures_of(at)["tradeoff"]
    names = [t["name"] for t in fig["data"]]
    assert "Magnitude" in names and "Random" in names and any(n.startswith("dense baseline") for n in names)
    assert any(n.startswith("collapsed") for n in names)
    assert fig["layout"]["xaxis"]["type"] == "log"
    assert any(f"Sweep #{sweep_id}: 3 of 3 cells done" in s for s in texts(at, "success")), texts(at, "success")
    (download,) = [b for b in at.get("download_button")]
    assert "sweep" in download.proto.label.lower() or "csv" in download.proto.label.lower()
    assert "ISO 8601" in download.proto.help and "plain fractions" in download.proto.help
    # The table has the page's width: every column, the collapse note included, and a wide accuracy bar.
    (table,) = at.dataframe
    columns = json.loads(table.proto.columns)
    assert {"Method", "Removed", "Accuracy", "Connected", "Note"} <= set(columns)
    assert columns["Accuracy"]["width"] == "large" and columns["Note"]["width"] == "large"
    assert any(note.startswith("✕ ") for note in table.value["Note"])   # the collapsed cell names its layers


def test_a_sweep_of_every_registered_method_runs_from_the_page(db):
    """Every method of the registry (a new one is in this test without editing it), one sparsity, one seed."""
    from pruning_core.engine.methods import METHODS

    methods = list(METHODS)
    at = open_page("compare", model="mlp", epochs="1", methods=methods, sparsities=["0.9"], seeds="1")
    assert_clean(at)
    assert at.multiselect(key="methods").value == methods
    at.button(key="run-sweep").click().run()
    assert_clean(at)
    sweep_id = int(at.query_params["sweep"])
    wait_idle(db, 600)
    at.run()
    assert_clean(at)
    cells = len(methods) + 1   # and the dense baseline
    assert any(f"Sweep #{sweep_id}: {cells} of {cells} cells done" in s for s in texts(at, "success")), (
        texts(at, "success"), texts(at, "warning"))
    runs = Store(db).list_runs()
    done = runs[runs["status"] == "done"]
    assert sorted(done["method"]) == sorted(methods + ["dense"])
    assert set(done.loc[done["method"] != "dense", "sparsity"]) == {0.9}
    table = at.dataframe[0].value
    assert len(table) == cells and table["Accuracy"].notna().all()


def test_quick_sweep_preset_sets_the_grid(db):
    at = open_page("compare", epochs="1", methods=["magnitude"], sparsities=["0.9"])
    at.button(key="preset-quick_sweep").click().run()
    assert at.multiselect(key="methods").value == ["synflow", "snip", "grasp", "magnitude", "random"]
    assert sorted(at.pills(key="sparsities").value) == [0.5, 0.9, 0.99, 0.999]
    sweep_id = int(at.query_params["sweep"])
    state.manager().cancel_sweep(sweep_id)
    assert Store(db).get_sweep(sweep_id)["config"]["methods"][0] == "synflow"


def test_empty_grid_is_a_message(db):
    at = open_page("compare", epochs="1", methods=["magnitude"], sparsities=["0.9"])
    at.multiselect(key="methods").set_value([]).run()
    at.button(key="run-sweep").click().run()
    assert not at.exception
    assert any("at least one method" in e for e in texts(at, "error"))


# ---- Layer collapse --------------------------------------------------------------------------------------
def test_layer_collapse_study_draws_critical_compression_heatmap_and_conservation(db):
    at = open_page("collapse", methods=["magnitude", "random"])
    assert_clean(at)
    # The study is quick, so it was queued without a click; a worker process runs it.
    spec = tasks.collapse_spec("digits", "conv", 0, ["magnitude", "random"])
    assert Store(db).latest_runs([tasks.study_key(spec)], kind=tasks.STUDY_KIND)["status"].tolist() in (
        ["queued"], ["running"], ["done"])
    wait_idle(db, 90)
    at.run()
    assert_clean(at)
    figs = figures_of(at)
    assert set(figs) >= {"critical", "heatmap", "conservation"}
    assert figs["critical"]["data"][0]["x"] == ["Random", "Magnitude"]
    heat = figs["heatmap"]["data"][0]
    assert heat["y"] == ["Magnitude", "Random"] and heat["x"] == ["conv1", "conv2", "conv3", "fc"]
    assert any("Conserved" in s for s in texts(at, "success"))


# ---- Runs ------------------------------------------------------------------------------------------------
def test_runs_page_overlays_exports_opens_and_deletes(db):
    store = Store(db)
    first = runner.execute(RunConfig(method="magnitude", sparsity=0.99, epochs=1), store).run_id
    second = runner.execute(RunConfig(method="random", sparsity=0.9, epochs=1), store).run_id
    at = open_page("runs")
    assert_clean(at)
    at.multiselect(key="runs-selected").set_value([first, second]).run()
    assert_clean(at)
    figs = figures_of(at)
    curves = [t["name"] for t in figs["overlay-curves"]["data"]]
    assert sum(n.endswith("test accuracy") for n in curves) == 2
    assert len([t for t in figs["overlay-density"]["data"] if t["type"] == "bar"]) == 2
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels[:3] == ["Export CSV", "Export JSON", "Download masks"]

    # Opening a run shows what the Prune & train page showed: its stored layers and curves.
    at.selectbox(key="runs-open").set_value(first).run()
    assert_clean(at)
    assert at.query_params["open"] == str(first)
    figs = figures_of(at)
    stored = store.layers(first)
    assert figs["open-density"]["data"][0]["y"] == pytest.approx(list(stored["density"]))
    assert "open-curves" in figs

    # Deleting removes the runs from the store.
    at.button(key="delete-confirm").click().run()
    assert not at.exception
    assert store.list_runs().empty


def test_a_run_opens_in_prune_and_train(db):
    store = Store(db)
    run_id = runner.execute(RunConfig(method="random", sparsity=0.9, epochs=1, seed=4), store).run_id
    at = open_page("runs")
    at.selectbox(key="runs-open").set_value(run_id).run()
    at.button(key="open-in-prune").click().run()
    assert_clean(at)
    assert at.title[0].value == "Prune & train"
    assert at.selectbox(key="method").value == "random"
    assert at.number_input(key="seed").value == 4
    assert at.slider(key="compression").value == 1.0
    assert int(at.query_params["run"]) == run_id


def test_masks_archive_holds_one_npz_per_run(db):
    import io
    import zipfile

    import numpy as np

    store = Store(db)
    run_id = runner.execute(RunConfig(method="magnitude", sparsity=0.99, epochs=0), store, kind="prune").run_id
    at = open_page("runs")  # makes the page's store the one at PRUNING_DB
    assert_clean(at)
    archive = zipfile.ZipFile(io.BytesIO(views.masks_archive([run_id])))
    (name,) = archive.namelist()
    masks = np.load(io.BytesIO(archive.read(name)))
    assert set(masks.files) == set(store.load_masks(run_id))
    assert int(sum(m.sum() for m in masks.values())) == store.get_run(run_id)["summary"]["kept"]


def test_a_link_to_a_run_reattaches_to_it(db):
    store = Store(db)
    config = RunConfig(method="random", sparsity=0.9, epochs=1, seed=5)
    run_id = runner.execute(config, store).run_id
    at = open_page(run=str(run_id))
    assert_clean(at)
    assert at.selectbox(key="method").value == "random"
    assert at.number_input(key="seed").value == 5
    assert "train-curves" in figures_of(at)
    assert time.time() - store.get_run(run_id)["finished_at"] < 120


def test_runs_page_names_sanity_variants_and_prints_a_warning_once(db):
    store = Store(db)
    plain = runner.execute(RunConfig(method="magnitude", sparsity=0.9, epochs=0), store).run_id
    inverted = runner.execute(RunConfig(method="magnitude", sparsity=0.9, epochs=0, sanity="invert"), store).run_id
    collapsed = runner.execute(RunConfig(method="magnitude", sparsity=0.9999, epochs=0), store).run_id
    # The store may hold the collapse warning twice: from pruning and, with the chance level, from training.
    at = open_page("runs")
    assert_clean(at)
    names = {r: at.multiselect(key="runs-selected").format_func(r) for r in (plain, inverted)}
    assert names[plain].startswith(f"#{plain} Magnitude 90% · ")
    assert names[inverted].startswith(f"#{inverted} Magnitude 90% (scores inverted: best weights removed) · ")
    at.multiselect(key="runs-selected").set_value([plain, inverted]).run()
    legend = [t["name"] for t in figures_of(at)["overlay-density"]["data"] if t["type"] == "bar"]
    assert legend == [f"#{plain} Magnitude 90%", f"#{inverted} Magnitude 90% (scores inverted: best weights removed)"]

    at.selectbox(key="runs-open").set_value(collapsed).run()
    assert not at.exception   # (the collapse itself is shown as an st.error finding, as intended)
    recorded = [c for c in texts(at, "caption") if c.startswith("Recorded warning:")]
    assert len(recorded) == 1, recorded
    assert "10% for 10 classes" in recorded[0]          # the more precise of the two is the one kept


# ---- wording (issue 17) ------------------------------------------------------------------------------------
def test_dataset_box_shows_short_names_and_its_help_the_full_ones(db):
    at = open_page("prune", **FAST)
    box = at.selectbox(key="dataset")
    assert "Digits" in box.options and not any("(" in o for o in box.options)   # nothing for the box to cut off
    assert "Digits: 8x8, built in." in box.help


def test_lottery_widgets_have_help_of_their_own(db):
    at = open_page("lottery")
    assert not at.exception
    helps = {key: at.number_input(key=key).help for key in ("lt-rounds", "lt-epochs", "lt-gem-epochs")}
    assert "SynFlow" not in helps["lt-rounds"] and "IMP prunes" in helps["lt-rounds"]
    assert "prune and evaluate only" not in helps["lt-gem-epochs"] and "GemMiner" in helps["lt-gem-epochs"]
    assert "prune and evaluate only" not in helps["lt-epochs"]


# ---- a server that never gets stuck (issue 10) ------------------------------------------------------------
BIG = "9" * 20    # past SQLite's integers
HOSTILE = "x`](https://evil.example)![i](https://evil.example/a.png)`"


def unescaped(text: str) -> list[str]:
    """Markdown characters of a link or an image or a code span in `text` that no backslash escapes."""
    return re.findall(r"(?<!\\)[\[\]()`!]", text)


def assert_controls(at: AppTest, *keys: str) -> None:
    """The page still has its controls (after an error it must stay usable)."""
    present = {w.key for kind in ("selectbox", "slider", "multiselect", "number_input", "button", "pills")
               for w in getattr(at, kind)}
    assert set(keys) <= present, sorted(k for k in present if k)


def test_a_failing_callback_is_a_message_and_the_page_stays_usable(db, monkeypatch):
    from dashboard import panels

    real, down = panels.submit_run, [True]

    def queue_down(*args, **kwargs):
        if down:
            raise RuntimeError("the job queue is down")
        return real(*args, **kwargs)

    at = open_page(**FAST)
    monkeypatch.setattr(panels, "submit_run", queue_down)
    at.button(key="train").click().run()
    assert not at.exception
    (error,) = texts(at, "error")
    assert error.startswith("**Something went wrong:** RuntimeError\\: the job queue is down")
    assert_controls(at, "method", "compression", "train", "preset-quick_demo")
    down.clear()
    at.button(key="train").click().run()   # usable: the next click works
    assert_clean(at)
    assert Store(db).get_run(int(at.query_params["run"]))["status"] in ("queued", "running", "done")


def test_the_sanity_checks_button_reports_a_failure(db, monkeypatch):
    at = open_page("sanity", epochs="1")
    assert_clean(at)

    def refuse(*args, **kwargs):
        raise ValueError("batch_size must be at most 4096")

    monkeypatch.setattr(state.manager(), "submit_or_reuse", refuse)
    at.button(key="sc-run").click().run()
    assert not at.exception
    assert texts(at, "error") == ["**This input does not work:** batch\\_size must be at most 4096"]
    assert_controls(at, "sc-method", "sc-compression", "sc-run")


def test_deleting_runs_someone_else_deleted_meanwhile_deletes_the_rest(db):
    store = Store(db)
    first = runner.execute(RunConfig(method="magnitude", sparsity=0.9, epochs=0), store, kind="prune").run_id
    second = runner.execute(RunConfig(method="random", sparsity=0.9, epochs=0), store, kind="prune").run_id
    at = open_page("runs")
    at.multiselect(key="runs-selected").set_value([first, second]).run()
    store.delete_run(first)            # another viewer, a moment before this one confirms
    at.button(key="delete-confirm").click().run()
    assert not at.exception and not texts(at, "error")
    assert store.list_runs().empty


def test_a_failing_delete_is_a_message_and_deletes_nothing_more(db, monkeypatch):
    store = Store(db)
    run_id = runner.execute(RunConfig(method="magnitude", sparsity=0.9, epochs=0), store, kind="prune").run_id
    at = open_page("runs")
    at.multiselect(key="runs-selected").set_value([run_id]).run()

    def disk_error(self, run_id):
        raise OSError("disk I/O error")

    monkeypatch.setattr(Store, "delete_run", disk_error)
    at.button(key="delete-confirm").click().run()
    assert not at.exception
    assert any("disk I/O error" in e for e in texts(at, "error"))
    assert_controls(at, "runs-selected", "runs-open", "delete-confirm")
    assert len(store.list_runs()) == 1


def test_cancelling_a_run_someone_just_deleted_leaves_the_page_usable(db):
    store = Store(db)
    run_id = halfway_run(store)
    at = open_page(**FAST)
    assert int(at.query_params["run"]) == run_id
    store.delete_run(run_id)           # from the Runs page, a moment before this viewer presses Cancel
    at.button(key=f"train-cancel-{run_id}").click().run()
    assert_clean(at)
    assert_controls(at, "method", "compression", "train")
    assert store.list_runs().empty


@pytest.mark.parametrize("page,params,ignored", [
    (None, {"run": BIG}, f"run={BIG}"),
    (None, {"run": "-3"}, "run=-3"),
    (None, {"sparsity": "0.999999"}, "sparsity=0.999999"),
    ("compare", {"sweep": BIG}, f"sweep={BIG}"),
])
def test_numbers_out_of_range_in_the_link_are_reported_and_replaced(db, page, params, ignored):
    at = open_page(page, **FAST, **params)
    assert_clean(at)
    (note,) = [w for w in texts(at, "warning") if "was ignored" in w]
    assert note.startswith(f"Link parameter `{ignored}` was ignored: ")
    if page is None:
        assert at.slider(key="compression").value == 2.0     # the default replaces it
        assert_controls(at, "method", "compression", "train")
        assert "run" not in at.query_params or at.query_params["run"] != BIG
    else:
        assert_controls(at, "methods", "sparsities", "run-sweep")
        assert "sweep" not in at.query_params
    if "sparsity" in params:
        assert note.endswith("this page takes sparsities from 0% to 99.99%")
        assert at.query_params["sparsity"] == "0.99"


def test_a_run_id_past_the_store_opens_nothing_on_the_runs_page(db):
    store = Store(db)
    runner.execute(RunConfig(method="magnitude", sparsity=0.9, epochs=0), store, kind="prune")
    at = open_page("runs", open=BIG)
    assert_clean(at)
    assert at.selectbox(key="runs-open").value is None
    assert any(f"`open={BIG}` was ignored" in w for w in texts(at, "warning"))


def test_a_study_opens_on_the_runs_page_with_a_link_to_the_page_that_draws_it(db):
    store = Store(db)
    spec = tasks.gradient_flow_spec("digits", "mlp", "snip", 0.9, 3, 2, ["static"])
    run_id = store.create_run(spec, tasks.study_key(spec), kind=tasks.STUDY_KIND)
    store.cancel_run(run_id)
    at = open_page("runs", open=str(run_id))
    assert_clean(at)
    heading = next(m.value for m in at.markdown if m.value.startswith(f"**Run #{run_id}**"))
    assert heading.endswith("— Gradient flow study · MLP on Digits · seed 2 · SNIP · 90% removed · compression "
                            "10^1.0 (10×) · 3 epochs")
    assert "open-in-prune" not in [b.key for b in at.button]   # a study is not one configuration to retrain
    (link,) = [e for e in at.get("page_link") if "study" in e.proto.label]
    assert link.proto.page == "gradient_flow"   # the Gradient flow page (url path)
    assert any("cancelled" in w for w in texts(at, "warning"))


def link_note(note: str) -> tuple[str, str]:
    """(the parameter, the reason) of a note on an ignored link parameter, checking that the parameter is one
    code span (its fence longer than any backticks inside) and that the reason has no unescaped markup."""
    match = re.fullmatch(r"Link parameter (`+) ?(.*?) ?\1 was ignored: (.*)", note)
    assert match is not None, note
    fence, parameter, reason = match.groups()
    assert fence not in parameter and unescaped(reason) == [], note
    return parameter, reason


def test_link_values_reach_markdown_escaped(db):
    at = open_page(method=HOSTILE, **{"epochs": "1"})
    assert_clean(at)
    (note,) = [w for w in texts(at, "warning") if "was ignored" in w]
    parameter, reason = link_note(note)
    assert parameter == f"method={HOSTILE}"
    assert "https\\:\u2060//evil.example" in reason   # no link drawn from the bare address either
    at = open_page("compare", methods=[HOSTILE], sweep=HOSTILE)
    assert_clean(at)
    notes = [link_note(w) for w in texts(at, "warning") if "was ignored" in w]
    assert [p for p, _ in notes] == [f"sweep={HOSTILE}", f"methods={[HOSTILE]}"], notes


def test_errors_that_quote_input_are_escaped(db, monkeypatch):
    def quotes_the_input(*args, **kwargs):
        raise ValueError(f"unknown option {HOSTILE!r}")

    monkeypatch.setattr(runner, "prune_with_config", quotes_the_input)
    at = open_page(**FAST, seed="19")
    (error,) = texts(at, "error")
    assert error.startswith("**This input does not work:** ") and unescaped(error) == []


def test_escape_markdown_shows_every_character_as_written():
    from dashboard.text import escape_markdown

    assert escape_markdown("a*b_[c](d)`e`!\n# f") == r"a\*b\_\[c\]\(d\)\`e\`\! \# f"
    assert escape_markdown(":red[x] $1$ <b> ~y~ |") == r"\:red\[x\] \$1\$ \<b\> \~y\~ \|"
    assert escape_markdown("- www.evil.example") == "\\- www\u2060.evil.example"   # no list item, no link
    assert escape_markdown("https://a.example me@b.example") == "https\\:\u2060//a.example me@\u2060b.example"
    assert escape_markdown("plain words, 12% = 'x'/y") == "plain words, 12% = 'x'/y"
    assert escape_markdown("rounds=0", code=True) == "`rounds=0`"
    assert escape_markdown("a`b``c", code=True) == "```a`b``c```"          # the fence outlasts every run inside
    assert escape_markdown("`x`", code=True) == "`` `x` ``"                # padded: a backtick touches the fence
    assert escape_markdown("a\n# b", code=True) == "`a # b`"


# ---- wording on Prune & train (issue 17, items 10 and 13) --------------------------------------------------
def test_training_says_which_method_its_curves_show(db):
    at = open_page(method="magnitude", sparsity="0.9", epochs="1", compare=["synflow", "snip"])
    assert_clean(at)
    assert ("**Train** trains Magnitude only; SynFlow, SNIP are pruned for the densities above. **Train SynFlow, "
            "SNIP too** trains them the same way and draws the curves together.") in texts(at, "caption")
    assert at.button(key="train-compare").label == "Train SynFlow, SNIP too"
    at = open_page(method="magnitude", sparsity="0.9", epochs="1")
    assert not any(c.startswith("**Train** trains") for c in texts(at, "caption"))
    assert "train-compare" not in [b.key for b in at.button]


def test_compare_with_trains_the_compared_methods_and_draws_the_curves_together(db):
    at = open_page(model="mlp", method="magnitude", sparsity="0.9", epochs="2", seed="17", compare=["random"])
    at.button(key="train").click().run()
    at.button(key="train-compare").click().run()
    assert_clean(at)
    wait_idle(db, 120)
    at.run()
    assert_clean(at)
    store = Store(db)
    runs = store.list_runs().set_index("method")
    assert sorted(runs.index) == ["magnitude", "random"] and set(runs["status"]) == {"done"}
    # The compared run is the chosen configuration with the other method: same seed, settings and epochs.
    mine, other = (store.get_run(int(runs.loc[m, "run_id"]))["config"] for m in ("magnitude", "random"))
    assert {k: v for k, v in other.items() if k != "method"} == {k: v for k, v in mine.items() if k != "method"}
    curves = figures_of(at)["train-compare-curves"]["data"]
    accuracy = {t["name"].split(":")[0] for t in curves if "accuracy" in t["name"]}
    assert accuracy == {"Magnitude", "Random"}
    assert all(t["x"] == [0, 1, 2] for t in curves if "accuracy" in t["name"])
    assert "train-compare" not in [b.key for b in at.button]   # both trained: nothing left to queue


def test_the_training_estimate_is_a_sentence(db, monkeypatch):
    monkeypatch.setattr(state, "on_gpu", lambda: False)
    at = open_page(model="vgg16", method="magnitude", epochs="1")
    assert not at.exception
    (estimate,) = [c for c in texts(at, "caption") if "epoch takes" in c]
    assert estimate.startswith("An epoch takes minutes on the CPU; the built-in digits with the small CNN or the MLP "
                               "train in seconds.")
    at = open_page(**FAST)
    (estimate,) = [c for c in texts(at, "caption") if "epoch takes" in c]
    assert estimate.startswith("An epoch takes one to two seconds on the CPU.")
