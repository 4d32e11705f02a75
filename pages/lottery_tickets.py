"""Lottery tickets: two ways to find a sparse network that trains well from its initial weights.

IMP (Frankle & Carbin 2019) trains, removes the smallest weights, rewinds the rest and repeats: its rounds
are drawn live, accuracy against sparsity. GemMiner (Sreenivasan et al. 2022) keeps the weights frozen and
learns which ones to keep: its score learning is drawn live. Then both tickets are compared on accuracy and
cost (wall time, training steps).

Both are ordinary runs (RunConfig method "imp" / "gemminer") in the server's job queue; the rounds of their
searches reach the page as the runs' metric rows tagged phase="search" (pruning_core.infra.runner). Runs of the same
configuration that finished before are reused, here or on any other page.
"""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from dashboard import errors, navigation, panels, state, views, widgets
from pruning_core.config import RunConfig
from pruning_core.engine.data import DATASETS
from pruning_core.engine.methods import METHODS
from pruning_core.presentation import findings, study_charts, units
from pruning_core.studies.lottery import imp_round_densities

SEARCHES = ("imp", "gemminer")   # the page's subject; other methods can be added to the comparison
DEFAULTS = {"sparsity": 0.9, "rounds": 3, "epochs": 2, "gem_epochs": 2}
PAPER_SPEEDUP = 19   # Sreenivasan et al. 2022: GemMiner reaches IMP-level accuracy up to 19x faster
PAPER_PRUNE_FRACTION = 0.2   # the lottery-ticket papers' IMP removes 20% of the remaining weights per round


def controls() -> dict:
    defaults = state.device_defaults()
    with st.container(border=True):
        top = st.columns([1.1, 1.1, 0.6, 2.4], gap="medium", vertical_alignment="top")
        dataset = widgets.field_input("dataset", default=defaults["dataset"], options=widgets.dataset_choices(),
                                      container=top[0])
        model = widgets.field_input("model", default=defaults["model"], container=top[1])
        seed = widgets.field_input("seed", default=0, container=top[2])
        sparsity = widgets.sparsity_slider("lt-compression", DEFAULTS["sparsity"], container=top[3], max_log=3.0,
                                           help="Both searches stop at this sparsity.")
        bottom = st.columns([0.9, 0.9, 0.9, 2.4], gap="medium", vertical_alignment="bottom")
        rounds = widgets.field_input("iterations", key="lt-rounds", default=DEFAULTS["rounds"], container=bottom[0],
                                     label="IMP rounds", url_key="rounds",
                                     placeholder=f"default: {DEFAULTS['rounds']}",
                                     own_help="How many times IMP prunes on its way to the chosen sparsity (the "
                                              "same fraction of the remaining weights each round). Round 0 trains "
                                              "the dense network; every round trains again, so IMP costs one full "
                                              f"training per round. Empty: {DEFAULTS['rounds']}.")
        epochs = widgets.field_input("epochs", key="lt-epochs", default=DEFAULTS["epochs"], container=bottom[1],
                                     label="Epochs per IMP round",
                                     own_help="For IMP: the epochs of every round's training and of the final "
                                              "ticket's. The methods compared with train this long too.")
        gem_epochs = widgets.field_input("epochs", key="lt-gem-epochs", default=DEFAULTS["gem_epochs"],
                                         container=bottom[2], label="GemMiner epochs", url_key="gem_epochs",
                                         own_help="For GemMiner: the epochs of score learning (the weights stay "
                                                  "frozen at their initial values), and then of training the "
                                                  "ticket it found.")
        others = [m for m in widgets.method_choices() if m not in SEARCHES]
        state.restore_widget_value("lt-compare", [], widgets.known_names("method", METHODS), url_key="compare",
                                   many=True)
        st.session_state["lt-compare"] = [m for m in st.session_state["lt-compare"] if m in others]
        compare = bottom[3].multiselect(
            "Also compare with", others, key="lt-compare", format_func=lambda m: widgets.choice_label("method", m),
            placeholder="one-shot methods (optional)",
            help="Prune at initialisation with these methods to the same sparsity and train for the IMP epochs: "
                 "their search costs almost nothing, but does their accuracy keep up with the tickets'?")
        state.save_widget_values("lt-compare")
    return {"dataset": dataset, "model": model, "seed": int(seed), "sparsity": sparsity,
            "rounds": int(rounds or DEFAULTS["rounds"]), "epochs": int(epochs), "gem_epochs": int(gem_epochs),
            "compare": list(compare)}


def run_configs(values: dict) -> dict[str, RunConfig]:
    """The runs the page compares: IMP, GemMiner and the optional one-shot methods, same model, seed, sparsity."""
    base = RunConfig(dataset=values["dataset"], model=values["model"], seed=values["seed"],
                     sparsity=values["sparsity"], epochs=values["epochs"])
    configs = {"imp": base.replace(method="imp", iterations=values["rounds"]),
               "gemminer": base.replace(method="gemminer", epochs=values["gem_epochs"])}
    configs.update({m: base.replace(method=m) for m in values["compare"]})
    return {m: c.validate() for m, c in configs.items()}


def _training_steps(metrics: pd.DataFrame) -> float:
    training = findings.split_metrics(metrics)[0]
    return float(training["step"].max()) if len(training) else math.nan


def cost_table(records: dict[str, dict], metrics: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """One row per method: accuracy of its trained mask and what finding and training it cost (finished runs
    only; the others have NaN). `metrics`: each run's metric rows, by run id."""
    rows = []
    for method, record in records.items():
        summary = record.get("summary") or {}
        done = record["status"] == "done"
        rows.append({
            "method": method,
            "test_accuracy": summary.get("final_test_accuracy") if done else None,
            # One-shot methods: finding the mask is scoring it (prune_s), with no training step.
            "search_s": summary.get("search_s", summary.get("prune_s")) if done else None,
            "train_s": summary.get("train_s") if done else None,
            "search_steps": summary.get("search_steps", 0) if done else None,
            "train_steps": _training_steps(metrics[record["id"]]) if done else None,
            "density": summary.get("density") if done else None,
        })
    table = pd.DataFrame(rows, columns=[*findings.TICKET_COST_COLUMNS, "density"])
    for column in table.columns[1:]:
        table[column] = pd.to_numeric(table[column], errors="coerce").astype(float)
    return table


def imp_section(record: dict, metrics: pd.DataFrame, values: dict, table: pd.DataFrame, chance: float) -> None:
    st.subheader("IMP: train, prune the smallest weights, rewind, repeat", anchor=False)
    panels.job_status(record, "lt-imp")
    rounds = findings.split_metrics(metrics)[1]
    planned = [1.0] + imp_round_densities(1 - values["sparsity"], values["rounds"], "exponential", None)
    done = table.set_index("method")
    ticket = None
    if not pd.isna(done.loc["imp", "test_accuracy"]):
        ticket = {"density": done.loc["imp", "density"], "accuracy": done.loc["imp", "test_accuracy"]}
    others = {m: {"density": done.loc[m, "density"], "accuracy": done.loc[m, "test_accuracy"]}
              for m in done.index if m != "imp" and not pd.isna(done.loc[m, "test_accuracy"])}
    left, right = st.columns([2.3, 1], gap="medium")
    with left:
        st.plotly_chart(study_charts.imp_rounds_chart(rounds, planned, ticket, others, chance=chance,
                                                      uirevision="lt-imp-rounds"),
                        width="stretch", key="lt-imp-rounds", config={"displaylogo": False})
    with right:
        st.markdown(
            f"Round 0 trains the dense network for {values['epochs']} epoch{'s' if values['epochs'] != 1 else ''}. "
            "Each round then removes the smallest trained weights, **rewinds** the survivors to their initial "
            "values and trains them again; the last mask, rewound, is the **ticket** (★), trained once more.")
        if record["status"] in ("queued", "running"):
            st.caption(f"{len(rounds)} of {len(planned)} networks trained (the last one is the ticket); the ticks on "
                       "the axis mark the sparsities of the rounds still to come.")
        elif len(rounds) == 0 and record["status"] == "done":
            st.caption("This run was recorded without its rounds (it ran before they were stored): only the ticket "
                       "is drawn.")
        if ticket is not None and len(rounds):
            dense = float(rounds.sort_values("round")["trained_test_accuracy"].iloc[0])
            st.metric("Ticket accuracy", units.percent(ticket["accuracy"]),
                      delta=f"{100 * (ticket['accuracy'] - dense):+.1f} points vs dense",
                      help=f"The ticket keeps {units.percent(ticket['density'])} of the weights; the dense network "
                           f"of round 0 reached {units.percent(dense)} with the same training.")


def gemminer_section(record: dict, metrics: pd.DataFrame, values: dict, chance: float) -> None:
    st.subheader("GemMiner: learn which weights to keep, weights frozen", anchor=False)
    panels.job_status(record, "lt-gem")
    rows = findings.split_metrics(metrics)[1]
    left, right = st.columns([2.3, 1], gap="medium")
    with left:
        st.plotly_chart(study_charts.gemminer_progress_chart(rows, 1 - values["sparsity"], chance=chance,
                                                             uirevision="lt-gemminer"),
                        width="stretch", key="lt-gemminer", config={"displaylogo": False})
    with right:
        st.markdown(
            "Every weight gets a **score** between 0 and 1; the forward pass uses the weights whose score is above "
            "0.5, and training moves the **scores only**: the weights keep their initial values. Pruning events "
            "along the way drop the lowest-scored weights until the target sparsity is left; the mask found is "
            "then trained from the same initial weights.")
        if record["status"] == "done" and rows.empty:
            st.caption("This run was recorded without its score-learning progress (it ran before that was "
                       "stored).")
        elif len(rows):
            last = rows.sort_values("search_step").iloc[-1]
            if not pd.isna(last.get("mining_accuracy")):
                st.caption(f"Last event: the mined subnetwork classifies {units.percent(last['mining_accuracy'])} "
                           "of its training batches correctly without a single weight trained.")


def comparison_section(table: pd.DataFrame, values: dict) -> None:
    st.subheader("The tickets compared: accuracy and cost", anchor=False)
    if table["test_accuracy"].isna().all():
        st.caption("The comparison fills in as the runs finish.")
        return
    st.plotly_chart(study_charts.ticket_cost_chart(table, uirevision="lt-cost"), width="stretch", key="lt-cost",
                    config={"displaylogo": False})
    for sentence in findings.ticket_findings(table):
        st.markdown(sentence)
    paper_rounds = math.ceil(math.log(1 - values["sparsity"]) / math.log(1 - PAPER_PRUNE_FRACTION) - 1e-9)
    st.caption(
        f"Sreenivasan et al. (2022) report GemMiner reaching IMP-level accuracy up to {PAPER_SPEEDUP}× faster. IMP's "
        f"cost grows with its rounds: here it ran {values['rounds']} round{'s' if values['rounds'] != 1 else ''} of "
        f"{values['epochs']} epoch{'s' if values['epochs'] != 1 else ''}; the lottery-ticket papers remove 20% of "
        f"the remaining weights per round, which takes {paper_rounds} rounds (each a full training) to reach "
        f"{units.percent(values['sparsity'])} sparsity. Wall times are this machine's, with other jobs possibly "
        "running beside them.")
    with st.expander("The numbers", icon=":material/table:"):
        shown = table.assign(method=table["method"].map(units.method_label))
        st.dataframe(shown, hide_index=True, width="stretch", column_config={
            "method": "method", "test_accuracy": st.column_config.NumberColumn("test accuracy", format="percent"),
            "search_s": st.column_config.NumberColumn("finding the mask (s)", format="%.2f"),
            "train_s": st.column_config.NumberColumn("training it (s)", format="%.2f"),
            "search_steps": st.column_config.NumberColumn("search steps", format="%d"),
            "train_steps": st.column_config.NumberColumn("training steps", format="%d"),
            "density": st.column_config.NumberColumn("density (kept)", format="percent")})


def results(run_ids: dict[str, int], values: dict) -> None:
    """Every section, redrawn live from the store while the runs are queued or running."""
    classes = DATASETS[values["dataset"]].num_classes
    chance = 1 / classes if classes else None
    order = list(run_ids)

    def draw(records: dict[int, dict]) -> None:
        by_method = {m: records[run_ids[m]] for m in order}
        metrics = {r: state.store().metrics(r) for r in records}   # once per run and poll
        panels.runs_status({f"{units.method_label(m)} at the same sparsity": r for m, r in by_method.items()
                            if m not in SEARCHES}, "lt-others", metrics)
        table = cost_table(by_method, metrics)
        if "imp" in by_method:
            imp_section(by_method["imp"], metrics[run_ids["imp"]], values, table, chance)
        if "gemminer" in by_method:
            gemminer_section(by_method["gemminer"], metrics[run_ids["gemminer"]], values, chance)
        comparison_section(table, values)

    panels.live_runs([run_ids[m] for m in order], "lt", draw)


navigation.page_header("Lottery tickets", "Two ways to find a sparse network that trains as well as the dense one from "
                                          "its initial weights: IMP trains and prunes round after round, GemMiner "
                                          "learns the mask with the weights frozen. Watch both searches, then compare "
                                          "their tickets and what they cost.")
with errors.error_boundary():
    values = controls()
    state.show_ignored_link_notes()
    state.sync_url({"dataset": values["dataset"], "model": values["model"], "seed": values["seed"],
                    "sparsity": values["sparsity"], "rounds": values["rounds"], "epochs": values["epochs"],
                    "gem_epochs": values["gem_epochs"], "compare": values["compare"]})
    panels.require_dataset(values["dataset"])
    configs = run_configs(values)
    stored = panels.stored_runs(configs)
    if stored.missing:
        trainings = (values["rounds"] + 1) * values["epochs"] + 2 * values["gem_epochs"] + \
            len(values["compare"]) * values["epochs"]
        st.button("Run what is missing" if stored.run_ids else "Find both tickets", type="primary",
                  icon=":material/play_arrow:", key="lt-run", on_click=errors.callback(panels.submit_runs),
                  args=(configs, "lt-started"),
                  help="Queue IMP and GemMiner (and the methods to compare with) in the server's background job "
                       "queue. Runs that finished before with the same settings are reused; you can leave the page "
                       "and come back.")
        if not stored.run_ids:
            st.caption(f"About {trainings} epochs of training in all on the {state.device_label()}: IMP trains "
                       f"{values['rounds'] + 1} times, GemMiner learns scores and trains once.")
    if stored.run_ids:
        panels.reused_note(stored.run_ids.values(), stored.all_done, "lt-started",
                           "these runs finished before with exactly these settings")
        results(stored.run_ids, values)
    with st.expander("How IMP and GemMiner work: scores and papers", icon=":material/menu_book:"):
        for tab, name in zip(st.tabs([METHODS[m].label for m in SEARCHES]), SEARCHES):
            with tab:
                views.explain_method(name)
