"""Gradient flow (Evci et al. 2022, "Gradient Flow in Sparse Neural Networks and How Lottery Tickets Win"):
the norm of the gradient at initialisation and along training for a dense network, a sparse one with the
standard initialisation, the same sparse one with the sparsity-aware initialisation, a lottery ticket from IMP,
and the sparse one trained with a moving mask (SET, RigL), side by side with the accuracy they reach; then how
close the lottery ticket ends to the dense solution it was pruned from (pc.lottery_relearning).

`pc.gradient_flow` trains every variant, so it is a job in the server's queue (pruning_core.studies.tasks), run
by a worker process and named by its parameters: a rerun, another viewer or a return to the page re-attaches to
the same computation, and a finished one is reused from the store.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import errors, navigation, panels, state, widgets
from pruning_core.engine.data import DATASETS
from pruning_core.engine.methods import METHODS
from pruning_core.presentation import findings, study_charts
from pruning_core.studies import tasks
from pruning_core.studies.gradient_flow import VARIANT_LABELS, VARIANTS

DEFAULTS = {"method": "random", "sparsity": 0.9, "epochs": 3}
IMP_ROUNDS = METHODS["imp"].default_iterations   # pc.gradient_flow's lottery ticket: IMP with its default rounds


def controls() -> dict:
    defaults = state.device_defaults()
    with st.container(border=True):
        top = st.columns([1.1, 1.1, 1.3, 0.6, 0.6], gap="medium", vertical_alignment="bottom")
        dataset = widgets.field_input("dataset", default=defaults["dataset"], options=widgets.dataset_choices(),
                                      container=top[0])
        model = widgets.field_input("model", key="gf-model",
                                    default="mlp" if dataset == "digits" else defaults["model"], container=top[1],
                                    help="The MLP shows the effect most clearly: without skip connections or "
                                         "BatchNorm, a weak signal shrinks layer after layer.")
        method = widgets.field_input("method", key="gf-method", default=DEFAULTS["method"],
                                     options=widgets.method_choices(), container=top[2],
                                     label="Mask of the sparse networks",
                                     help="The two sparse networks share this method's mask; only their initial "
                                          "weights differ. The lottery ticket always comes from IMP.")
        epochs = widgets.field_input("epochs", key="gf-epochs", default=DEFAULTS["epochs"], container=top[3],
                                     help=f"Every network trains this long; the lottery ticket's IMP search trains "
                                          f"{IMP_ROUNDS} rounds of this length first.")
        seed = widgets.field_input("seed", default=0, container=top[4])
        bottom = st.columns([1.2, 2.6], gap="medium", vertical_alignment="top")
        sparsity = widgets.sparsity_slider("gf-compression", DEFAULTS["sparsity"], container=bottom[0], max_log=3.0,
                                           help="The sparse networks and the lottery ticket all keep this fraction.")
        state.restore_widget_value("gf-variants", list(VARIANTS), widgets.known_names("variant", VARIANTS),
                                   url_key="variants", many=True)
        variants = bottom[1].multiselect(
            "Networks", list(VARIANTS), key="gf-variants", format_func=lambda v: VARIANT_LABELS[v],
            help="Which networks to measure. All start from the same initial network (same seed) and train with the "
                 "same settings; the lottery ticket costs the most (its IMP search trains several times).")
        state.save_widget_values("gf-variants")
    return {"dataset": dataset, "model": model, "method": method, "sparsity": sparsity, "epochs": int(epochs),
            "seed": int(seed), "variants": [v for v in VARIANTS if v in variants]}


def show_results(df: pd.DataFrame, dataset: str) -> None:
    summary = findings.gradient_flow_summary(df)
    st.plotly_chart(study_charts.gradient_flow_chart(df), width="stretch", key="gf-chart",
                    config={"displaylogo": False})
    st.caption("Left: the norm of the gradient of the training loss with respect to the kept weights, measured on "
               "256 training images held out of training, ten times per epoch (log scale; the large dot is the "
               "value at initialisation). Right: the test accuracy after every epoch.")
    classes = DATASETS[dataset].num_classes
    for sentence in findings.gradient_flow_findings(summary, chance=1 / classes if classes else None):
        st.markdown(sentence)
    st.dataframe(summary.drop(columns=["variant"]), hide_index=True, width="stretch", column_config={
        "label": "network", "density": st.column_config.NumberColumn("kept", format="percent"),
        "init_grad_norm": st.column_config.NumberColumn("gradient norm at init", format="%.3g"),
        "mean_grad_norm": st.column_config.NumberColumn("mean gradient norm in training", format="%.3g"),
        "init_test_accuracy": st.column_config.NumberColumn("test accuracy at init", format="percent"),
        "final_test_accuracy": st.column_config.NumberColumn("final test accuracy", format="percent")})
    st.download_button("Download the measurements (CSV)", df.to_csv(index=False), file_name="gradient-flow.csv",
                       mime="text/csv", icon=":material/table:", on_click="ignore", key="gf-download",
                       help="Every measurement in long format: network, step, epoch, gradient norm, training "
                            "loss, test accuracy, density.")


def spec_of(values: dict) -> dict:
    return tasks.gradient_flow_spec(**{k: values[k] for k in ("dataset", "model", "method", "sparsity", "epochs",
                                                            "seed", "variants")})


def measure(values: dict) -> None:
    """on_click of the run button: queue the measurement (or join the one on its way)."""
    panels.submit_study(spec_of(values))


def show_relearning(table: pd.DataFrame) -> None:
    st.markdown(findings.relearning_findings(table))
    st.dataframe(table.drop(columns=["variant"]), hide_index=True, width="stretch", column_config={
        "label": "network", "density": st.column_config.NumberColumn("kept", format="percent"),
        "init_distance": st.column_config.NumberColumn("L2 distance at init", format="%.3g"),
        "distance": st.column_config.NumberColumn("L2 distance trained", format="%.3g"),
        "relative_distance": st.column_config.NumberColumn("relative to the solution's norm", format="%.2f"),
        "disagreement": st.column_config.NumberColumn("test predictions that differ", format="percent"),
        "test_accuracy": st.column_config.NumberColumn("test accuracy", format="percent")})
    st.caption("Distances are over the kept weights, from the trained dense network whose largest weights make the "
               "ticket's mask (one-shot IMP, rewound to the initial weights). The other two networks train the same "
               "mask from a fresh initialisation.")


def relearning_section(values: dict) -> None:
    """Does the lottery ticket relearn its pruning solution? A study in the one job queue, like the measurement."""
    st.subheader("Does the lottery ticket relearn its pruning solution?", anchor=False)
    spec = tasks.relearning_spec(**{k: values[k] for k in ("dataset", "model", "sparsity", "epochs", "seed")})
    record = panels.study_record(spec)
    if record is None or record["status"] in ("failed", "cancelled"):
        st.button("Measure the distance to the pruning solution", icon=":material/straighten:", key="rl-run",
                  on_click=panels.submit_study, args=(spec,),
                  help="Train the dense network, prune it to a lottery ticket (one-shot IMP), and train the ticket "
                       "and the same mask from two fresh initialisations: five trainings of this length.")
    if record is not None:
        panels.live_study(record["id"], "rl-task", "The relearning measurement")
        if record["status"] == "done":
            show_relearning(tasks.study_tables(record)["relearning"])


navigation.page_header("Gradient flow", "Why sparse networks train badly from a standard initialisation, and how a "
                                        "lottery ticket wins anyway: the gradient's strength at initialisation and "
                                        "along training (Evci et al. 2022).")
with errors.error_boundary():
    values = controls()
    state.show_ignored_link_notes()
    state.sync_url({"dataset": values["dataset"], "model": values["model"], "method": values["method"],
                 "sparsity": values["sparsity"], "epochs": values["epochs"], "seed": values["seed"],
                 "variants": values["variants"] if values["variants"] != list(VARIANTS) else None})
    if not values["variants"]:
        st.info("Choose at least one network to measure.", icon=":material/info:")
        st.stop()
    panels.require_dataset(values["dataset"], downloads=False)
    record = panels.study_record(spec_of(values))
    failed = record is not None and record["status"] in ("failed", "cancelled")
    if record is None or failed:
        st.button("Measure again" if failed else "Measure the gradient flow", type="primary",
                  icon=":material/play_arrow:", key="gf-run", on_click=measure, args=(values,),
                  help="Prune and train every chosen network in the background while measuring its gradient. You "
                       "can change the settings or leave the page: the same settings re-attach to the same "
                       "measurement.")
        if record is None:
            lottery = "lottery" in values["variants"]
            st.caption(f"Trains {len(values['variants'])} network{'s' if len(values['variants']) != 1 else ''} for "
                       f"{values['epochs']} epoch{'s' if values['epochs'] != 1 else ''} each"
                       + (f"; finding the lottery ticket first takes {IMP_ROUNDS} more trainings of that length "
                          "(IMP's rounds)" if lottery else "")
                       + f", on the {state.device_label()}.")
    if record is not None:
        panels.live_study(record["id"], "gf-task", "The measurement")
        if record["status"] == "done":
            show_results(tasks.study_tables(record)["measurements"], values["dataset"])
    relearning_section(values)
    with st.expander("What is measured, and why it matters", icon=":material/menu_book:"):
        st.markdown(
            "**Gradient flow** is how strongly the loss's gradient reaches the weights: its norm, restricted to the "
            "weights that are kept. A dense network is initialised so that signals keep their scale from layer to "
            "layer (Kaiming: variance 2 / fan-in). Pruned, each unit sums only the inputs it kept, so the signal "
            "shrinks by the density at every layer, and so does the gradient: the network learns slowly or not at "
            "all. The **sparsity-aware initialisation** (Evci et al. 2022) draws each kept weight with variance 2 "
            "divided by the unit's *kept* fan-in, which restores the scale. **Lottery tickets** (IMP with "
            "rewinding) train well from the same standard initialisation, yet Evci et al. found their gradient "
            "flow no better than a random mask's: tickets win because they relearn the solution of the dense "
            "network they were pruned from. **Dynamic sparse training** (SET, RigL) moves the mask while training: "
            "Evci et al. found it improves the gradient flow over a fixed mask.")
        st.caption("Paper: Evci, Ioannou, Keskin & Dauphin 2022, 'Gradient Flow in Sparse Neural Networks and How "
                   "Lottery Tickets Win' (AAAI).")
