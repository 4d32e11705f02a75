"""Runs: the run store's history. Filter it, select runs to overlay their training curves and density
profiles, export them (CSV, JSON, masks) or delete them, and open one run to see exactly what it showed
when it ran (the same views, read back from the store)."""

from __future__ import annotations

import json
from datetime import datetime

import pandas as pd
import streamlit as st

from dashboard import classroom, errors, navigation, panels, state, views, widgets
from dashboard.text import escape_markdown
from pruning_core.config import DENSE, RunConfig
from pruning_core.infra.store import STATUSES, UnknownRunError
from pruning_core.presentation import charts, findings, units
from pruning_core.studies import tasks

PAGE_SIZE = 500


@st.cache_data(max_entries=4096, show_spinner=False)
def _variant(run_id: int, key: str) -> str:
    # A run's configuration never changes under its key, so this is read once per run, not on every rerun.
    return units.run_variant(state.store().get_run(run_id)["config"])


def variants(runs: pd.DataFrame) -> dict[int, str]:
    """Each listed run's variant ('scores inverted: best weights removed', ...; '' for a plain run)."""
    with state.store().snapshot():
        return {int(r): _variant(int(r), str(k)) for r, k in zip(runs["run_id"], runs["key"])}


def short_label(row: pd.Series | dict, variant: str = "") -> str:
    """'#2 SynFlow 99.9%', '#3 SynFlow 90% (scores inverted: best weights removed)': a legend entry."""
    return units.run_name(row["method"], None if row["method"] == DENSE else (row["sparsity"] or 0), variant,
                          run_id=int(row["run_id"]))


def run_label(row: pd.Series | dict, variant: str = "") -> str:
    return (f"{short_label(row, variant)} · {widgets.choice_label('model', row['model'])} on "
            f"{row['dataset']} · seed {row['seed']} · {row['status']}")


def distinct_warnings(warnings: list[str]) -> list[str]:
    """The recorded warnings without repeats: a warning that another one says in full (the same sentence
    with more detail, e.g. the chance accuracy for the number of classes) is left out."""
    unique = list(dict.fromkeys(w.strip() for w in warnings if w and w.strip()))
    return [w for w in unique if not any(o != w and o.startswith(w.rstrip(".")) for o in unique)]


def filters(runs: pd.DataFrame) -> pd.DataFrame:
    with st.container(border=True):
        cols = st.columns([1.2, 1.4, 1, 1, 0.9], gap="medium", vertical_alignment="bottom")
        status = cols[0].multiselect("Status", list(STATUSES), key="runs-status", placeholder="any",
                                     help="Show only runs with these statuses.")
        methods = cols[1].multiselect("Method", sorted(runs["method"].dropna().unique()), key="runs-method",
                                      format_func=units.method_label, placeholder="any",
                                      help="Show only runs of these pruning methods.")
        models = cols[2].multiselect("Model", sorted(runs["model"].dropna().unique()), key="runs-model",
                                     format_func=lambda m: widgets.choice_label("model", m), placeholder="any",
                                     help="Show only runs of these architectures.")
        datasets = cols[3].multiselect("Dataset", sorted(runs["dataset"].dropna().unique()), key="runs-dataset",
                                       format_func=lambda d: widgets.choice_label("dataset", d), placeholder="any",
                                       help="Show only runs on these datasets.")
        kinds = cols[4].multiselect("Kind", sorted(runs["kind"].dropna().unique()), key="runs-kind",
                                    placeholder="any", help="'train': pruned and trained; 'prune': pruned only.")
    for column, chosen in (("status", status), ("method", methods), ("model", models), ("dataset", datasets),
                           ("kind", kinds)):
        if chosen:
            runs = runs[runs[column].isin(chosen)]
    return runs


def history_table(runs: pd.DataFrame, variant: dict[int, str]) -> None:
    shown = pd.DataFrame({
        "run": runs["run_id"], "status": runs["status"], "kind": runs["kind"],
        "method": runs["method"].map(units.method_label),
        "variant": runs["run_id"].map(lambda r: variant.get(int(r), "")),
        "removed": runs["sparsity"].map(lambda s: units.percent(s) if s == s and s is not None else ""),
        "model": runs["model"].map(lambda m: widgets.choice_label("model", m)), "dataset": runs["dataset"],
        "seed": runs["seed"], "accuracy": runs["final_test_accuracy"], "connected": runs["effective_density"],
        "created": pd.to_datetime(runs["created_at"], unit="s"),
        "duration": runs["duration_s"].map(units.duration_text),
        "sweep": runs["sweep_id"],
    })
    if classroom.classroom_mode():   # whose run: the name its owner gave ("" for none, or work of no one in particular)
        shown.insert(2, "by", runs["user_name"].fillna("").to_numpy())
    st.dataframe(shown, hide_index=True, width="stretch", height=min(420, 38 + 35 * len(shown)), key="runs-table",
                 column_config={
                     "run": st.column_config.NumberColumn("Run", format="#%d", width="small"),
                     "variant": st.column_config.TextColumn("Variant", help="What sets the run apart from the plain "
                                                            "method: a sanity check (mask shuffled, weights "
                                                            "reinitialised, scores inverted) or the "
                                                            "sparsity-aware initialisation."),
                     "accuracy": st.column_config.ProgressColumn("Test accuracy", format="percent", min_value=0.0,
                                                                 max_value=1.0),
                     "connected": st.column_config.NumberColumn("Connected density", format="percent",
                                                                help="Effective density: kept weights on a path "
                                                                     "from input to output."),
                     "created": st.column_config.DatetimeColumn("Created", format="YYYY-MM-DD HH:mm"),
                     "sweep": st.column_config.NumberColumn("Sweep", format="%d", width="small")})


def actions(selected: list[int], runs: pd.DataFrame) -> None:
    chosen = runs[runs["run_id"].isin(selected)]
    cols = st.columns(4, gap="small")
    cols[0].download_button("Export CSV", units.export_csv(chosen), file_name="runs.csv", mime="text/csv",
                            icon=":material/table:", width="stretch", on_click="ignore", key="export-csv",
                            help="One row per selected run: configuration, status, accuracy, timings. "
                                 + units.EXPORT_NOTE)
    cols[1].download_button("Export JSON", lambda: json.dumps(state.store().export_runs(selected), indent=1),
                            file_name="runs.json", mime="application/json", icon=":material/data_object:",
                            width="stretch", on_click="ignore", key="export-json",
                            help="Full records of the selected runs: configuration, summary, per-epoch metrics and "
                                 "per-layer table.")
    with_masks = [r for r in selected if state.store().get_run(r)["has_masks"]]
    cols[2].download_button("Download masks", lambda: views.masks_archive(with_masks), file_name="masks.zip",
                            mime="application/zip", icon=":material/grid_on:", width="stretch", on_click="ignore",
                            key="export-masks", disabled=not with_masks,
                            help="A zip with one .npz per run: a boolean array per layer (True = weight kept). "
                                 "Load with numpy.load.")
    # On a classroom server only your own runs (the teacher: any run) can be deleted; others' stay.
    owners = dict(zip(chosen["run_id"].astype(int), chosen["user_token"]))
    mine = [r for r in selected if classroom.may_change(owners.get(r))]
    with cols[3].popover("Delete", icon=":material/delete:", width="stretch", disabled=not mine,
                         help="Delete the selected runs with their metrics and masks." if mine else
                         "These runs were started by someone else: only they or the teacher can delete them."):
        others = len(selected) - len(mine)
        st.markdown(f"Delete {len(mine)} run{'s' if len(mine) != 1 else ''}? This cannot be undone."
                    + (f" The other {others} selected {'is' if others == 1 else 'are'} someone else's and "
                       f"{'stays' if others == 1 else 'stay'}." if others else ""))
        st.button("Delete for good", type="primary", key="delete-confirm", icon=":material/delete_forever:",
                  on_click=errors.callback(delete_runs), args=(mine,),
                  help="Remove the runs, their metrics and their mask files from the store.")


def delete_runs(run_ids: list[int]) -> None:
    """on_click of the delete confirmation: cancel what still runs, delete, clear the selection. A run that someone
    else deleted meanwhile is already gone: the others are deleted all the same."""
    for run_id in run_ids:
        try:
            classroom.delete_run(run_id)   # cancelled first if it still runs; someone else's is refused
        except UnknownRunError:
            continue
    st.session_state["runs-selected"] = []
    if st.session_state.get("runs-open") in run_ids:
        st.session_state["runs-open"] = None


def overlay(selected: list[int], runs: pd.DataFrame, variant: dict[int, str]) -> None:
    db = state.store()
    labels = {int(r["run_id"]): short_label(r, variant.get(int(r["run_id"]), ""))
              for _, r in runs[runs["run_id"].isin(selected)].iterrows()}
    curves = {labels[r]: db.metrics(r) for r in selected if r in labels}
    curves = {k: v for k, v in curves.items() if not v.empty}
    profiles = {labels[r]: db.layers(r) for r in selected if r in labels}
    profiles = {k: v for k, v in profiles.items() if v is not None}
    left, right = st.columns(2, gap="medium")
    with left:
        st.markdown("**Training curves**")
        if curves:
            st.plotly_chart(charts.training_curves(curves, uirevision="runs-overlay"), width="stretch",
                            key="overlay-curves", config={"displaylogo": False})
        else:
            st.caption("None of the selected runs has training metrics.")
    with right:
        st.markdown("**Density profiles**")
        if profiles:
            first, *rest = profiles.items()
            log_scale = st.toggle("Log scale", key="overlay-log", value=True,
                                  help="Show densities on a logarithmic axis, so small ones stay visible.")
            fig = charts.density_bars(first[1], log_scale=log_scale, compare=dict(rest), label=first[0],
                                      uirevision="runs-overlay-density")
            st.plotly_chart(fig, width="stretch", key="overlay-density", config={"displaylogo": False})
        else:
            st.caption("None of the selected runs has a layer table.")


def open_in_prune_page(record: dict) -> None:
    """Load a run's configuration into the Prune & train page's widgets and go there."""
    config = RunConfig.from_dict(record["config"])
    values = {f: getattr(config, f) for f in ("dataset", "model", "method", "schedule", "iterations", "scope",
                                              "seed", "epochs")}
    if config.is_dense:
        values["method"] = "synflow"
    values["compression"] = round(units.log_compression(config.sparsity), 1)
    values["compare"] = []
    state.set_widget_values(values)
    st.session_state["run_id"] = record["id"]
    st.switch_page(navigation.PAGES["prune"])


def run_detail(run_id: int) -> None:
    """One run, shown with the same views the Prune & train page used when it ran."""
    db = state.store()
    record = db.get_run(run_id)
    created = datetime.fromtimestamp(record["created_at"]).strftime("%Y-%m-%d %H:%M")
    study = record["kind"] == tasks.STUDY_KIND
    caption = views.study_caption(record["config"]) if study else views.config_caption(record["config"])
    st.markdown(f"**Run #{run_id}** ({record['kind']}, {record['status']}, created {created} on "
                f"{record.get('device') or 'not started'}) — {caption}")
    if study:
        study_detail(run_id, record)
        return
    head = st.columns([1, 1, 3], gap="small")
    if head[0].button("Open in Prune & train", icon=":material/open_in_new:", key="open-in-prune", width="stretch",
                      help="Load this run's configuration on the Prune & train page."):
        open_in_prune_page(record)
    head[1].download_button("Config (JSON)", json.dumps(record["config"], indent=1), file_name=f"run-{run_id}.json",
                            mime="application/json", icon=":material/download:", width="stretch", on_click="ignore",
                            key="open-config", help="This run's configuration as JSON "
                                                    "(pruning_core.RunConfig.from_dict reads it).")
    layers = db.layers(run_id)
    if layers is not None:
        summary = {**findings.layer_summary(layers), **(record.get("summary") or {})}
        views.pruning_result(layers, summary, key="open", label=record["method"] or "kept")
    if record["kind"] != "prune":
        def draw(rec: dict, metrics: pd.DataFrame | None) -> None:
            views.run_summary(rec)
            views.training_curves(rec, metrics, "open")

        panels.live_panel(run_id, key="open", draw=draw)
    elif record["status"] != "done":
        panels.live_panel(run_id, key="open")
    for warning in distinct_warnings((record.get("summary") or {}).get("warnings") or []):
        st.caption(f"Recorded warning: {escape_markdown(warning)}")
    with st.expander("Everything recorded for this run", icon=":material/receipt_long:"):
        st.json({k: record[k] for k in ("config", "summary", "timings", "versions", "device", "error", "key")},
                expanded=False)


def study_detail(run_id: int, record: dict) -> None:
    """A study is drawn by the page that asked for it: a link there, its progress while it runs, what it recorded."""
    page = views.STUDY_TITLES.get(record["config"].get("study"), (None, None))[1]
    if page is not None:
        st.page_link(navigation.PAGES[page], label="Open the page that shows this study", icon=":material/open_in_new:")
    if record["status"] != "done":
        panels.live_panel(run_id, key="open")
    with st.expander("Everything recorded for this study", icon=":material/receipt_long:"):
        st.json({k: record[k] for k in ("config", "timings", "versions", "device", "error", "key")}, expanded=False)


navigation.page_header("Runs", "Every run in the store: filter, overlay, export, delete, or open one to see what it "
                               "showed when it ran.")
with errors.error_boundary():
    db = state.store()
    all_runs = db.list_runs(limit=PAGE_SIZE)
    if all_runs.empty:
        st.info("No runs yet. Train something on **Prune & train** or run a sweep on **Compare methods**.",
                icon=":material/info:")
        st.stop()
    runs = filters(all_runs)
    st.caption(f"{len(runs)} of {len(all_runs)} run(s)" + (f" (the newest {PAGE_SIZE})" if len(all_runs) ==
                                                           PAGE_SIZE else ""))
    variant = variants(runs)
    history_table(runs, variant)

    options = [int(r) for r in runs["run_id"]]
    labels = {int(r["run_id"]): run_label(r, variant[int(r["run_id"])]) for _, r in runs.iterrows()}
    st.session_state["runs-selected"] = [r for r in st.session_state.get("runs-selected", []) if r in labels]
    selected = st.multiselect("Select runs to compare, export or delete", options, key="runs-selected",
                              format_func=lambda r: labels.get(r, f"#{r}"), placeholder="choose runs",
                              help="Their training curves and density profiles are drawn on top of each other.")
    if selected:
        actions(selected, runs)
        overlay(selected, runs, variant)

    st.divider()
    st.subheader("Open a run", anchor=False)
    if "runs-open" not in st.session_state and "open" in st.query_params:
        try:
            wanted = widgets.parse_id(st.query_params["open"])
            if wanted not in labels:
                raise ValueError("no such run in the store")
            st.session_state["runs-open"] = wanted
        except ValueError as error:
            state.note_ignored_link(f"open={st.query_params['open']}", str(error))
        state.show_ignored_link_notes()
    if st.session_state.get("runs-open") not in labels:
        st.session_state["runs-open"] = None
    opened = st.selectbox("Run", options, key="runs-open", index=None, format_func=lambda r: labels.get(r, f"#{r}"),
                          placeholder="choose a run to open", help="Shows the run as the Prune & train page showed it.")
    state.sync_url({"open": opened})
    if opened is not None:
        run_detail(int(opened))
