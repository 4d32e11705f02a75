"""Layer collapse: the SynFlow paper's story for one model. Every method's critical compression (the
largest compression at which no layer is emptied), a heat map of per-layer density across compression
levels, and SynFlow's conservation law per layer.

The study prunes the model dozens of times, so it is a job in the server's queue (pruning_core.studies.tasks),
run by a worker process; every viewer sees its place and progress, and the same study requested by several
viewers is computed once (and reused from the store afterwards).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import errors, navigation, panels, state, views, widgets
from pruning_core.config import RunConfig
from pruning_core.engine.data import load_dataset
from pruning_core.engine.methods import METHODS
from pruning_core.infra import runner
from pruning_core.presentation import charts, units
from pruning_core.studies import tasks
from pruning_core.studies.analysis import layer_synaptic_flow

DEFAULT_METHODS = ["synflow", "snip", "grasp", "magnitude", "random"]


def controls() -> tuple[str, str, int, list[str]]:
    defaults = state.device_defaults()
    with st.container(border=True):
        cols = st.columns([1, 1, 0.5, 3.2], gap="medium", vertical_alignment="bottom")
        dataset = widgets.field_input("dataset", default=defaults["dataset"], options=widgets.dataset_choices(),
                                      container=cols[0])
        model = widgets.field_input("model", default=defaults["model"], container=cols[1])
        seed = widgets.field_input("seed", default=0, container=cols[2])
        state.restore_widget_value("methods", DEFAULT_METHODS, widgets.known_names("method", METHODS), many=True)
        methods = cols[3].multiselect("Methods", widgets.method_choices(), key="methods",
                                      format_func=lambda m: widgets.choice_label("method", m),
                                      help="Methods to study. Each prunes the same initial weights (same seed) at "
                                           "every compression level.")
        state.save_widget_values("methods")
    return dataset, model, int(seed), list(methods)


def method_names(methods: list[str]) -> str:
    return ", ".join(units.method_label(m) for m in methods)


@st.cache_data(max_entries=32, show_spinner="Computing SynFlow's scores at initialization…")
def conservation_at_init(dataset: str, model: str, seed: int) -> pd.DataFrame:
    """Per-layer SynFlow totals of the initial network (cached: the expander's body runs on every rerun, and a
    float64 pass over VGG-16 takes seconds on a CPU)."""
    data = load_dataset(dataset, download=False)
    return layer_synaptic_flow(runner.build_model(RunConfig(dataset=dataset, model=model, seed=seed), data),
                               data.input_shape)


def show_results(results: dict[str, pd.DataFrame], model: str) -> None:
    critical, densities, flow = results["critical"], results["densities"], results["flow"]
    st.subheader("Critical compression", anchor=False)
    left, right = st.columns([1.6, 1], gap="medium")
    with left:
        st.plotly_chart(charts.critical_compression_bars(critical), width="stretch", key="critical",
                        config={"displaylogo": False})
    with right:
        best = critical.sort_values("log_compression", ascending=False).iloc[0]
        worst = critical.sort_values("log_compression").iloc[0]
        st.markdown(
            "The **critical compression** of a method is the largest compression at which it still leaves every "
            "layer at least one weight. Beyond it a layer is empty (**layer collapse**): no signal reaches the "
            "output, and the network cannot learn at all, however long it trains.")
        st.markdown(f"Here **{units.method_label(best['method'])}** reaches 10^{best['log_compression']:.1f} "
                    f"({units.percent(units.sparsity_from_log(best['log_compression']))} removed) and "
                    f"**{units.method_label(worst['method'])}** collapses first, beyond "
                    f"10^{worst['log_compression']:.1f}.")
        st.caption("Found by bisection over log-compression to within 0.05; the dotted line is the search "
                   "limit (one weight left in the whole network).")

    st.subheader("Which layers empty first", anchor=False)
    levels = sorted(densities["log_compression"].unique())
    collapsing = sorted(densities.loc[densities["density"] == 0, "log_compression"].unique())
    start = collapsing[0] if collapsing else levels[len(levels) // 2]  # open where the first layer empties
    level = st.select_slider("Compression level", levels, value=start,
                             key="heat-level", format_func=lambda x: f"10^{x:.1f} ({units.percent(1 - 10 ** -x)})",
                             help="Move through the compression levels to watch layers empty out (✕) method by "
                                  "method. The same level is used for the conservation chart below.")
    st.plotly_chart(charts.density_heatmap(densities, level), width="stretch", key="heatmap",
                    config={"displaylogo": False})
    at_level = densities[densities["log_compression"] == level]
    emptied = [m for m in dict.fromkeys(at_level["method"])
               if (at_level.loc[at_level["method"] == m, "density"] == 0).any()]
    kept = [m for m in dict.fromkeys(at_level["method"]) if m not in emptied]
    if emptied:
        verb = "has" if len(emptied) == 1 else "have"
        story = f"At 10^{level:.1f}, {method_names(emptied)} {verb} emptied at least one layer (✕)"
        story += f"; {method_names(kept)} still keep{'s' if len(kept) == 1 else ''} every layer." if kept else "."
    else:
        story = f"At 10^{level:.1f} every method still keeps every layer: move the slider right."
    st.caption("Each cell is one layer's density (kept fraction) for one method; colours are on a log scale. "
               "A global ranking by a score that is smaller in wide layers (magnitude at initialisation, often "
               "SNIP) empties those layers first; uniform random pruning empties the smallest layer. " + story)

    st.subheader("SynFlow's conservation law", anchor=False)
    stages = flow[flow["log_compression"].isin([0.0, level])]
    tables = {stage: rows for stage, rows in stages.groupby("stage", sort=False)}
    left, right = st.columns([1.6, 1], gap="medium")
    with left:
        st.plotly_chart(charts.conservation_chart(tables), width="stretch", key="conservation",
                        config={"displaylogo": False})
    with right:
        ratios = flow["ratio"].dropna()
        conserved = bool(len(ratios)) and bool(((ratios - 1).abs() < 1e-6).all())
        st.markdown(
            "SynFlow scores a weight by how much of the network's **synaptic flow** R passes through it "
            "(R is the output of the network with every weight replaced by its absolute value, on an all-ones "
            "input). For a network whose layers form a chain, **every layer's scores sum to the same R** "
            "(Tanaka et al. 2020, Theorem 2): a layer cannot lose all its score, so pruning by these scores, "
            "re-scored over many rounds, never empties a layer.")
        if conserved:
            st.success(f"Conserved in {widgets.choice_label('model', model)}: every layer's ratio is 1, before and "
                       "after SynFlow pruning.", icon=":material/balance:")
        else:
            st.info(f"In {widgets.choice_label('model', model)} some layers sum to less than R: flow that takes a skip "
                    "connection bypasses the layers of its block, and non-zero biases add flow that no weight "
                    "carries. The law holds exactly for bias-free chains such as the MLP or the small CNN at "
                    "initialisation (biases start at zero).", icon=":material/call_split:")


navigation.page_header("Layer collapse", "Why some pruning methods empty whole layers at high compression, and how "
                                         "SynFlow avoids it: the story of the SynFlow paper, for one model.")
with errors.error_boundary():
    dataset, model, seed, methods = controls()
    state.show_ignored_link_notes()
    state.sync_url({"dataset": dataset, "model": model, "seed": seed, "methods": methods})
    if not methods:
        st.info("Choose at least one method.", icon=":material/info:")
        st.stop()
    load_dataset(dataset, download=False)  # a missing dataset is explained here, before any work is queued
    spec = tasks.collapse_spec(dataset, model, seed, methods)
    record = panels.study_record(spec)
    quick = all(state.runs_inline(RunConfig(dataset=dataset, model=model, method=m)) for m in methods)
    if record is None or record["status"] == "cancelled":
        if (quick and record is None) or st.button(
                "Run the study", type="primary", icon=":material/play_arrow:", key="run-study",
                help="Prunes the model dozens of times in the background job queue; big models on a CPU take "
                     "minutes."):
            record = state.store().get_run(panels.submit_study(spec))
        elif record is None:
            slow = [units.method_label(m) for m in methods if METHODS[m].run is not None]
            why = (f"{', '.join(slow)} train{'s' if len(slow) == 1 else ''} a network for every probe" if slow
                   else f"pruning {widgets.choice_label('model', model)} on the {state.device_label()} takes a while")
            st.info(f"The study prunes the model dozens of times and {why}, so it can take minutes: press "
                    "**Run the study** to start it in the background.", icon=":material/schedule:")
    elif record["status"] == "failed" and st.button("Run the study again", icon=":material/replay:",
                                                     key="rerun-study"):
        record = state.store().get_run(panels.submit_study(spec))
    if record is not None:
        panels.live_study(record["id"], "study", "The study")
        if record["status"] == "done":
            show_results(tasks.study_tables(record), model)
    with st.expander("SynFlow's conservation at initialization (computed now, no pruning)",
                     icon=":material/functions:"):
        init = conservation_at_init(dataset, model, seed)
        st.dataframe(init.assign(name=init["name"].str.removesuffix(".weight")), hide_index=True, width="stretch",
                     column_config={"name": "layer", "total_score": st.column_config.NumberColumn(
                         "sum of the layer's scores", format="%.4g"),
                         "synaptic_flow": st.column_config.NumberColumn("R", format="%.4g"),
                         "ratio": st.column_config.NumberColumn("sum / R", format="%.4f")})
    views.methods_glossary(methods)
