"""Sanity checks (Frankle et al. 2021, "Pruning Neural Networks at Initialization: Why are We Missing the
Mark?"): for a method and a sparsity, train the method's mask and three transformed versions of it (shuffled
within each layer, weights reinitialised, scores inverted) and say in plain words what the comparison means.

Each variant is one run configuration (RunConfig.sanity) in the server's job queue, so the checks queue with
everyone's jobs, fill the chart in as they finish, and reuse any variant that ran before (the method's own
mask is the same run as on Prune & train).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import errors, navigation, panels, state, views, widgets
from pruning_core.config import RunConfig
from pruning_core.engine.data import DATASETS
from pruning_core.presentation import charts, findings, study_charts, units
from pruning_core.studies.sanity import SANITY_LABELS, SANITY_VARIANTS, TOLERANCE, explain_sanity, sanity_table

DEFAULTS = {"method": "synflow", "sparsity": 0.9, "epochs": 5}


def controls() -> RunConfig:
    defaults = state.device_defaults()
    with st.container(border=True):
        top = st.columns([1.1, 1.1, 1.3, 0.6, 0.6], gap="medium", vertical_alignment="bottom")
        dataset = widgets.field_input("dataset", default=defaults["dataset"], options=widgets.dataset_choices(),
                                      container=top[0])
        model = widgets.field_input("model", default=defaults["model"], container=top[1])
        method = widgets.field_input("method", key="sc-method", default=DEFAULTS["method"],
                                     options=widgets.method_choices(), container=top[2],
                                     help="Its mask is checked against the three transformed versions.")
        epochs = widgets.field_input("epochs", key="sc-epochs", default=DEFAULTS["epochs"], container=top[3],
                                     help="Every variant trains this long: too short, and run-to-run noise hides the "
                                          "differences.")
        seed = widgets.field_input("seed", default=0, container=top[4])
        bottom = st.columns([1.6, 2], gap="medium", vertical_alignment="top")
        sparsity = widgets.sparsity_slider("sc-compression", DEFAULTS["sparsity"], container=bottom[0], max_log=3.0)
        with bottom[1]:
            views.method_popover(method)
    return RunConfig(dataset=dataset, model=model, method=method, sparsity=sparsity, epochs=int(epochs),
                     seed=int(seed)).validate()


def variant_configs(config: RunConfig) -> dict[str, RunConfig]:
    return {variant: config.replace(sanity=variant) for variant in SANITY_VARIANTS}


def verdict(table: pd.DataFrame) -> tuple[str, str] | None:
    """The headline (level, text) of finished checks: what shuffling says about the method."""
    accuracy = dict(zip(table["variant"], table["test_accuracy"]))
    own, shuffled = accuracy.get("none"), accuracy.get("shuffle")
    if own is None or shuffled is None or pd.isna(own) or pd.isna(shuffled):
        return None
    chance = 1 / table.attrs["num_classes"]
    label = units.method_label(table.attrs["method"])
    if own <= chance + TOLERANCE:
        return "warning", (f"**{label}'s own mask does not train at this sparsity**: the checks cannot tell "
                           "anything apart.")
    if shuffled >= own - TOLERANCE:
        return "warning", (f"**Shuffling did not hurt: {label} only chose how many weights to keep in each layer**, "
                           "not which ones.")
    return "success", f"**Shuffling hurt: {label} chose specific weights that matter**, beyond the layer densities."


def results(config: RunConfig, run_ids: dict[str, int]) -> None:
    classes = DATASETS[config.dataset].num_classes

    def draw(records: dict[int, dict]) -> None:
        by_variant = {v: records[r] for v, r in run_ids.items()}
        metrics = {r: state.store().metrics(r) for r in records}   # once per run and poll
        panels.runs_status({SANITY_LABELS[v]: r for v, r in by_variant.items()}, "sc", metrics)
        table = sanity_table(config, {v: by_variant.get(v) for v in SANITY_VARIANTS})
        left, right = st.columns([1.5, 1], gap="medium")
        with left:
            st.plotly_chart(study_charts.sanity_chart(table, tolerance=TOLERANCE, chance=1 / classes),
                            width="stretch", key="sc-chart", config={"displaylogo": False})
        with right:
            headline = verdict(table)
            if headline is not None:
                getattr(st, headline[0])(headline[1], icon=":material/lightbulb:")
            if table["test_accuracy"].notna().all():
                named = table.copy()
                named.attrs = {**table.attrs, "method": units.method_label(config.method)}
                st.markdown(explain_sanity(named))
            else:
                done = int(table["test_accuracy"].notna().sum())
                st.caption(f"{done} of {len(table)} variants trained; the explanation appears when all are done.")
            for row in table.itertuples():
                st.caption(f"**{row.label}**: {row.description}.")
        curves = {SANITY_LABELS[v]: metrics[r["id"]] for v, r in by_variant.items()}
        curves = {k: m for k, m in curves.items() if not findings.split_metrics(m)[0].empty}
        if curves:
            with st.expander("Training curves of the four variants", icon=":material/show_chart:",
                             expanded=any(r["status"] == "running" for r in by_variant.values())):
                st.plotly_chart(charts.training_curves(curves, chance=1 / classes, uirevision="sc-curves"),
                                width="stretch", key="sc-curves", config={"displaylogo": False})

    panels.live_runs([run_ids[v] for v in SANITY_VARIANTS if v in run_ids], "sc", draw)


navigation.page_header("Sanity checks", "Does a pruning method choose the right weights, or only how many to keep per "
                                        "layer? Train its mask against the same mask shuffled, reinitialised and "
                                        "inverted (Frankle et al. 2021).")
with errors.error_boundary():
    config = controls()
    state.show_ignored_link_notes()
    state.sync_url({"dataset": config.dataset, "model": config.model, "method": config.method,
                    "sparsity": config.sparsity, "epochs": config.epochs, "seed": config.seed})
    panels.require_dataset(config.dataset)
    configs = variant_configs(config)
    stored = panels.stored_runs(configs)
    if stored.missing:
        st.button("Run the missing checks" if stored.run_ids else "Run the sanity checks", type="primary",
                  icon=":material/play_arrow:", key="sc-run", on_click=errors.callback(panels.submit_runs),
                  args=(configs, "sc-started"),
                  help="Queue the four runs (the method's mask and its three transformed versions) in the server's "
                       "background job queue. Variants that ran before with the same settings are reused; you can "
                       "leave the page and come back.")
        if not stored.run_ids:
            st.caption(f"Four trainings of {config.epochs} epoch{'s' if config.epochs != 1 else ''} each on the "
                       f"{state.device_label()}.")
    if stored.run_ids:
        panels.reused_note(stored.run_ids.values(), stored.all_done, "sc-started",
                           "all four variants ran before with exactly these settings")
        results(config, stored.run_ids)
    with st.expander("What the three checks mean", icon=":material/menu_book:"):
        st.markdown(
            "Frankle et al. (2021) checked pruning-at-initialisation methods (SNIP, GraSP, SynFlow, magnitude) by "
            "breaking their masks on purpose. **Shuffling** each layer's mask keeps how many weights every layer "
            "keeps but forgets which ones; **reinitialising** keeps the mask but redraws the kept weights; "
            "**inverting** keeps the weights the method scored lowest. A method whose accuracy survives the "
            "shuffle has only chosen the layer densities: any random mask with the same per-layer densities would "
            "do as well. That is what they found for every method at initialisation, unlike for masks found "
            "after training (magnitude pruning of a trained network, lottery tickets).")
        st.caption("Paper: Frankle, Dziugaite, Roy & Carbin 2021, 'Pruning Neural Networks at Initialization: Why are "
                   "We Missing the Mark?' (ICLR).")
