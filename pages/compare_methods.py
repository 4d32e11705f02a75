"""Compare methods: a method x sparsity grid (with seeds) run as one sweep in the background job queue.
The accuracy-vs-compression chart fills in live as cells finish, with mean ± std bands over seeds, the
dense baseline and collapsed cells marked; the table beside it downloads as CSV. Cells of the same
configuration and seed that ran before (here or on another page) are reused from the store."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from dashboard import classroom, errors, lessons, navigation, panels, state, views, widgets
from pruning_core.config import DENSE, help_text
from pruning_core.engine.data import DATASETS
from pruning_core.engine.methods import METHODS
from pruning_core.infra.store import ACTIVE_STATUSES, UnknownRunError
from pruning_core.presentation import charts, units
from pruning_core.studies.presets import PRESETS
from pruning_core.studies.sweep import sweep_cells

SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999)
MAX_SEEDS = 5
PRESET = "quick_sweep"


def sparsity_option(sparsity: float) -> str:
    return f"{units.percent(sparsity)} (10^{units.log_compression(sparsity):.1f})"


def apply_preset() -> None:
    preset = PRESETS[PRESET]
    state.set_widget_values({"dataset": preset.config.get("dataset", "digits"),
                             "model": preset.config.get("model", "conv"), "epochs": preset.config.get("epochs", 10),
                             "methods": list(preset.grid["methods"]), "sparsities": list(preset.grid["sparsities"]),
                             "seeds": len(preset.grid["seeds"])})
    st.session_state["autosweep"] = True
    st.session_state.pop("sweep_id", None)


def initial_values() -> dict:
    """This device's defaults with the quick sweep's grid, or the grid of the sweep the link names."""
    grid = PRESETS[PRESET].grid
    values = {**state.device_defaults(), "methods": list(grid["methods"]), "sparsities": list(grid["sparsities"]),
              "seeds": len(grid["seeds"])}
    if state.has_saved_widget_value("methods") or "sweep" not in st.query_params:
        return values
    try:
        config = state.store().get_sweep(widgets.parse_id(st.query_params["sweep"], "sweep"))["config"]
        values.update({k: config[k] for k in ("dataset", "model", "methods", "sparsities") if k in config})
        values["seeds"] = len(config.get("seeds", [0]))
        if config.get("epochs") is not None:
            values["epochs"] = config["epochs"]
    except (KeyError, UnknownRunError):
        state.note_ignored_link(f"sweep={st.query_params['sweep']}", "no such sweep in the store")
    except ValueError as error:
        state.note_ignored_link(f"sweep={st.query_params['sweep']}", str(error))
    return values


def _sparsities(raw: list[str]) -> list[float]:
    values = [float(v) for v in raw]
    if any(not 0 < v < 1 for v in values):
        raise ValueError("sparsities must be fractions between 0 and 1, such as 0.99")
    return values


def grid_form(defaults: dict) -> dict:
    with st.container(border=True):
        top = st.columns([1.2, 1.2, 0.7, 0.7], gap="medium", vertical_alignment="bottom")
        dataset = widgets.field_input("dataset", default=defaults["dataset"], options=widgets.dataset_choices(),
                                      container=top[0])
        model = widgets.field_input("model", default=defaults["model"], container=top[1])
        epochs = widgets.field_input("epochs", default=defaults["epochs"], container=top[2])
        state.restore_widget_value("seeds", defaults["seeds"], lambda raw: min(max(int(raw), 1), MAX_SEEDS))
        seeds = top[3].number_input("Seeds", min_value=1, max_value=MAX_SEEDS, step=1, key="seeds",
                                    help="How many random initialisations every cell is run with (seeds 0, 1, ...). "
                                         "With two or more, the chart shows mean ± standard deviation as a band.")
        state.save_widget_values("seeds")
        state.restore_widget_value("methods", defaults["methods"], widgets.known_names("method", METHODS), many=True)
        methods = st.multiselect("Methods", widgets.method_choices(), key="methods",
                                 format_func=lambda m: widgets.choice_label("method", m),
                                 help="Pruning methods to compare. Each prunes the same initial weights for a seed.")
        state.save_widget_values("methods")
        state.restore_widget_value("sparsities", defaults["sparsities"], _sparsities, many=True)
        st.session_state["sparsities"] = [s for s in st.session_state["sparsities"] if s in SPARSITIES]
        sparsities = st.pills("Sparsities (% of weights removed, compression 10^x)", SPARSITIES, key="sparsities",
                              selection_mode="multi", format_func=sparsity_option,
                              help="Each chosen sparsity is one column of the grid. " + help_text("sparsity"))
        state.save_widget_values("sparsities")
        cells = len(methods) * len(sparsities) * seeds + seeds
        st.caption(f"**{cells} runs**: {len(methods)} method(s) × {len(sparsities)} sparsit"
                   f"{'y' if len(sparsities) == 1 else 'ies'} × {seeds} seed(s), plus the dense baseline for each "
                   f"seed; {epochs} epoch(s) each. Finished cells are reused, not recomputed.")
    return {"dataset": dataset, "model": model, "epochs": int(epochs), "methods": list(methods),
            "sparsities": sorted(sparsities), "seeds": list(range(int(seeds)))}


def sweep_table(keys: list[str]) -> pd.DataFrame:
    """One row per cell of a sweep (its best run in the store), with the collapse flag from its summary."""
    db = state.store()
    runs = db.latest_runs(keys, kind="train")
    rows = []
    for run in runs.itertuples():
        summary = {}
        if run.status == "done":
            try:
                summary = db.get_run(int(run.run_id)).get("summary") or {}
            except UnknownRunError:
                continue
        collapsed = list(summary.get("collapsed", []))
        sparsity = float(run.sparsity or 0.0)
        rows.append({
            "method": run.method, "sparsity": sparsity, "seed": int(run.seed),
            "compression": 1 / (1 - sparsity), "status": run.status,
            "final_test_accuracy": summary.get("final_test_accuracy"),
            "best_test_accuracy": summary.get("best_test_accuracy"),
            "effective_density": summary.get("effective_density"),
            "collapsed": bool(collapsed) if run.status == "done" else None,
            "collapsed_layers": ", ".join(n.removesuffix(".weight") for n in collapsed),
            "train_s": summary.get("train_s"), "run_id": int(run.run_id), "key": run.key,
            "progress": run.progress_message if run.status in ACTIVE_STATUSES else "",
        })
    columns = ["method", "sparsity", "seed", "compression", "status", "final_test_accuracy", "best_test_accuracy",
               "effective_density", "collapsed", "collapsed_layers", "train_s", "run_id", "key", "progress"]
    return pd.DataFrame(rows, columns=columns)


CELL_COLUMNS = {
    "Method": st.column_config.TextColumn(width="medium"),
    "Removed": st.column_config.TextColumn(width="small", help="Share of the weights removed (the sparsity)."),
    "Seed": st.column_config.NumberColumn(width="small"),
    "Accuracy": st.column_config.ProgressColumn("Test accuracy", format="percent", min_value=0.0, max_value=1.0,
                                                width="large", help="Final test accuracy after training."),
    "Connected": st.column_config.NumberColumn("Connected density", format="percent", width="small",
                                               help="Effective density: kept weights on a path from input to "
                                                    "output."),
    "Note": st.column_config.TextColumn("Note", width="large",
                                        help="✕ lists the layers that kept no weights (layer collapse); "
                                             "unfinished cells show their status."),
}


def cells_table(table: pd.DataFrame) -> pd.DataFrame:
    """The sweep table as the page shows it: one row per cell, readable names (see `CELL_COLUMNS`)."""
    layers = table["collapsed_layers"]
    note = layers.where(layers == "", "✕ " + layers)
    note = note.where(table["status"] == "done", table["status"])
    shown = pd.DataFrame({
        "Method": table["method"].map(lambda m: "Dense" if m == DENSE else units.method_label(m)),
        "Removed": table["sparsity"].map(units.percent), "Seed": table["seed"],
        "Accuracy": table["final_test_accuracy"], "Connected": table["effective_density"], "Note": note})
    return shown.drop(columns=["Seed"]) if table["seed"].nunique() <= 1 else shown


def sweep_csv(table: pd.DataFrame) -> str:
    """The sweep table's CSV download, in the export convention of `units.EXPORT_NOTE`."""
    return units.export_csv(table, drop=("progress",))


def sweep_progress(sweep_id: int, table: pd.DataFrame, n_cells: int) -> None:
    counts = table["status"].value_counts().to_dict() if not table.empty else {}
    done, failed = counts.get("done", 0), counts.get("failed", 0) + counts.get("cancelled", 0)
    running = table[table["status"] == "running"]
    queued = table[table["status"] == "queued"]
    if len(running) or len(queued):
        text, cancel = st.columns([5, 1], vertical_alignment="bottom")
        durations = table.loc[table["status"] == "done", "train_s"].dropna()
        eta = durations.mean() * (len(running) + len(queued)) if len(durations) else None
        current = ""
        if len(running):
            cell = running.iloc[0]
            where = "" if cell["method"] == DENSE else f" at {units.percent(cell['sparsity'])}"
            current = (f" · now: {units.method_label(cell['method'])}{where}, seed {cell['seed']} "
                       f"({cell['progress']})")
        elif len(queued):
            ahead = state.store().queue_position(int(queued.iloc[0]["run_id"]))
            current = f" · waiting: {ahead} job(s) of other viewers ahead in the queue" if ahead else ""
        text.progress(done / max(n_cells, 1), text=f"Sweep #{sweep_id}: {done} of {n_cells} cells done{current}"
                      + (f" · about {units.duration_text(eta)} left" if eta else ""))
        if classroom.may_change(state.store().sweep_user(sweep_id)):   # a classroom: the owner's or the teacher's
            cancel.button("Cancel sweep", key=f"cancel-sweep-{sweep_id}", icon=":material/stop_circle:",
                          on_click=errors.callback(classroom.cancel_sweep), args=(sweep_id,), width="stretch",
                          help="Stop the running cell and drop the queued ones; finished cells stay in the store.")
    else:
        note = f" ({failed} failed or cancelled: see the Runs page)" if failed else ""
        st.success(f"Sweep #{sweep_id}: {done} of {n_cells} cells done{note}.", icon=":material/done_all:")


def sweep_view(sweep_id: int) -> None:
    db = state.store()
    sweep = db.get_sweep(sweep_id)
    keys = list(sweep["config"].get("cells", []))
    dataset = sweep["config"].get("dataset")
    classes = DATASETS[dataset].num_classes if dataset in DATASETS else 0
    first = sweep_table(keys)
    active = bool(first["status"].isin(ACTIVE_STATUSES).any())

    def draw() -> None:
        table = None
        with errors.error_boundary():
            table = sweep_table(keys)
            sweep_progress(sweep_id, table, len(keys))
            fig = charts.tradeoff_chart(table, chance=1 / classes if classes else None,
                                        uirevision=f"sweep-{sweep_id}")
            st.plotly_chart(fig, width="stretch", key="tradeoff", config={"displaylogo": False})
            st.caption("Each line is a method (mean over seeds; the band is ± one standard deviation); ✕ marks "
                       "a cell whose network collapsed (a layer kept no weights); the dashed line is the "
                       "dense network.")
            # The table gets the page's width under the chart: beside it, the notes were cut off and the
            # accuracy bars were a few pixels long.
            st.dataframe(cells_table(table), hide_index=True, width="stretch", height=min(420, 38 + 35 * len(table)),
                         key="sweep-table", column_config=CELL_COLUMNS)
            st.download_button("Download table (CSV)", sweep_csv(table), file_name=f"sweep-{sweep_id}.csv",
                               mime="text/csv", icon=":material/download:", key=f"download-sweep-{sweep_id}",
                               on_click="ignore",
                               help="Every cell with its method, sparsity, seed, accuracy, connected density, "
                                    "collapsed layers, timing and run id. " + units.EXPORT_NOTE)
        if active and table is not None and not table["status"].isin(ACTIVE_STATUSES).any():
            st.rerun()

    st.fragment(draw, run_every=panels.POLL_S if active else None, key=f"sweep-live-{sweep_id}")()


def start_sweep(grid: dict) -> None:
    """Queue every cell of the grid (a button's on_click, or the preset's autosweep)."""
    try:
        cells = sweep_cells(model=grid["model"], dataset=grid["dataset"], methods=grid["methods"],
                            sparsities=grid["sparsities"], seeds=grid["seeds"], epochs=grid["epochs"])
        st.session_state["sweep_id"] = classroom.submit_sweep(cells, {**grid, "started": time.time()})
    except Exception as error:  # noqa: BLE001 - shown as a message on the page
        st.session_state["sweep_error"] = errors.friendly_error(error)


def current_sweep() -> int | None:
    for candidate in (st.session_state.get("sweep_id"), st.query_params.get("sweep")):
        try:
            return int(state.store().get_sweep(widgets.parse_id(candidate, "sweep"))["id"])
        except ValueError:   # no id, a bad one (the note says so), or a sweep deleted since
            continue
    return None


navigation.page_header("Compare methods", "Prune the same network with several methods at several sparsities, train "
                                          "every cell, and watch accuracy against compression fill in.")
with errors.error_boundary():
    grid = grid_form(initial_values())
    state.show_ignored_link_notes()
    buttons = st.columns([1, 1.5, 2.5], gap="small")
    buttons[0].button("Run sweep", type="primary", icon=":material/play_arrow:", width="stretch", key="run-sweep",
                      on_click=errors.callback(start_sweep), args=(grid,),
                      help="Queue every cell in the server's background job queue. You can leave the page: the "
                           "sweep keeps running and this page picks it up again (the link holds it).")
    if not lessons.active():   # a lesson link's setup is the lesson's: no preset to replace it
        buttons[1].button(PRESETS[PRESET].label, on_click=errors.callback(apply_preset), icon=":material/bolt:",
                          width="stretch",
                          help=PRESETS[PRESET].description, key="preset-quick_sweep")
    if st.session_state.pop("autosweep", False):
        start_sweep(grid)
    if "sweep_error" in st.session_state:
        st.error(st.session_state.pop("sweep_error"), icon=":material/error:")
    views.methods_glossary(grid["methods"])
    sweep_id = current_sweep()
    state.sync_url({"dataset": grid["dataset"], "model": grid["model"], "epochs": grid["epochs"],
                    "methods": grid["methods"], "sparsities": grid["sparsities"], "seeds": len(grid["seeds"]),
                    "sweep": sweep_id})
    if sweep_id is None:
        st.info("Choose a grid and press **Run sweep**, or start from the quick sweep preset (digits on a CPU: "
                "about a minute or two).", icon=":material/info:")
    else:
        sweep_view(sweep_id)
