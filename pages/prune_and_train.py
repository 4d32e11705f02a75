"""Prune & train, the landing page: choose a configuration (or a preset), see at once which weights and
layers survive pruning, then train the sparse network in the background with live curves.

Pruning small models is done in the page (about a second, cached by configuration); big models on a
CPU and training go to the server's job manager. The configuration and the run id live in the URL.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import streamlit as st

from dashboard import classroom, errors, lessons, navigation, panels, state, views, widgets
from dashboard.text import escape_markdown
from pruning_core.config import DENSE, RunConfig
from pruning_core.engine.data import DATASETS, DatasetUnavailableError
from pruning_core.engine.methods import METHODS
from pruning_core.infra.store import UnknownRunError
from pruning_core.presentation import charts, findings, units
from pruning_core.studies.presets import PRESETS

PRESET_NAMES = ("quick_demo", "magnitude_collapse", "synflow_vs_snip")
PRESET_ICONS = {"quick_demo": ":material/bolt:", "magnitude_collapse": ":material/layers_clear:",
                "synflow_vs_snip": ":material/compare_arrows:"}
FIELDS = ("dataset", "model", "method", "schedule", "iterations", "scope", "seed", "epochs", "sparse_training",
          "update_every")
COMPARE_MAX = 3
STARTED = "started_runs"   # session key: the training runs this session started (not reused)
TRAINED = "trained_keys"   # session key: the configurations this session pressed Train for (reused or not)


def apply_preset(name: str) -> None:
    """on_click of a preset button: set every widget (fields the preset leaves out go back to their
    defaults) and ask the page to train it."""
    preset = PRESETS[name]
    config = preset.run_config()
    values = {field: getattr(config, field) for field in FIELDS}
    values["compression"] = round(units.log_compression(config.sparsity), 1)
    values["compare"] = [m for m in preset.compare if m != config.method]
    state.set_widget_values(values)
    st.session_state["autotrain"] = name
    st.session_state.pop("run_id", None)


def initial_values() -> dict:
    """Defaults for this device, or, when the link names a run (?run=12), that run's configuration."""
    values = state.device_defaults()
    if state.has_saved_widget_value("dataset") or "run" not in st.query_params:
        return values
    try:
        values.update(state.store().get_run(widgets.parse_id(st.query_params["run"]))["config"])
    except UnknownRunError:
        state.note_ignored_link(f"run={st.query_params['run']}", "no such run in the store")
    except ValueError as error:
        state.note_ignored_link(f"run={st.query_params['run']}", str(error))
    return values


def config_form(defaults: dict) -> tuple[RunConfig, list[str]]:
    """The configuration widgets; returns the configuration and the methods to compare with."""
    with st.container(border=True):
        top = st.columns([1.1, 1.1, 1.2, 0.6], gap="medium", vertical_alignment="bottom")
        widgets.field_input("dataset", default=defaults["dataset"], options=widgets.dataset_choices(),
                            container=top[0])
        widgets.field_input("model", default=defaults["model"], container=top[1])
        method = widgets.field_input("method", default=defaults["method"], options=widgets.method_choices(),
                                     container=top[2])
        widgets.field_input("seed", default=defaults["seed"], container=top[3])

        middle = st.columns([2.4, 1.2], gap="medium", vertical_alignment="center")
        sparsity = widgets.sparsity_slider("compression", defaults["sparsity"], container=middle[0], min_log=0.0)
        with middle[1]:
            views.method_popover(method)

        bottom = st.columns([1, 0.8, 1, 0.7, 1.8], gap="medium", vertical_alignment="bottom")
        widgets.field_input("schedule", default=defaults["schedule"], container=bottom[0])
        default_rounds = METHODS[method].default_iterations if method in METHODS else 1
        widgets.field_input("iterations", default=defaults["iterations"], container=bottom[1],
                            placeholder=f"default: {default_rounds}")
        widgets.field_input("scope", default=defaults["scope"], container=bottom[2])
        widgets.field_input("epochs", default=defaults["epochs"], container=bottom[3])
        others = [m for m in widgets.method_choices() if m != method]
        state.restore_widget_value("compare", [], widgets.known_names("method", METHODS), many=True)
        st.session_state["compare"] = [m for m in st.session_state["compare"] if m in others][:COMPARE_MAX]
        if lessons.hidden("compare"):   # a lesson link hides it: the link's methods, no widget
            compare = list(st.session_state["compare"])
        else:
            compare = bottom[4].multiselect(
                "Compare with", others, key="compare", max_selections=COMPARE_MAX, disabled=lessons.locked("compare"),
                format_func=lambda m: widgets.choice_label("method", m), placeholder="other methods (optional)",
                help="Prune the same initial weights with these methods too and draw their layer densities beside "
                     "the chosen method's; train them too with the button under the training curves.")
        state.save_widget_values("compare")
        dynamic = st.columns([1, 1, 2.6], gap="medium", vertical_alignment="bottom")
        widgets.field_input("sparse_training", default=defaults["sparse_training"], container=dynamic[0],
                       on_change=_erk_for_dynamic)
        widgets.field_input("update_every", default=defaults["update_every"], container=dynamic[1], placeholder="100",
                       disabled=st.session_state.get("sparse_training") == "static")
        if st.session_state.get("sparse_training") != "static":
            dynamic[2].caption("The mask changes while training: the smallest weights of each layer are dropped and "
                               "as many regrown (SET: at random; RigL: where the gradient is largest), 30% at first, "
                               "fewer and fewer until 75% of training. A digits epoch is about 11 steps.")
    values = {f: st.session_state[f] for f in FIELDS}
    config = RunConfig(sparsity=sparsity, **values)
    return config, list(compare)


def _erk_for_dynamic() -> None:
    """on_change of the sparse-training choice: SET and RigL start from RigL's Erdős–Rényi-Kernel random mask."""
    if st.session_state.get("sparse_training") != "static":
        st.session_state["method"] = "random_erk"


def prune_result(config: RunConfig) -> tuple | None:
    """(layers, summary, source) of this configuration: from the store when it ran before, else pruned
    here (fast configurations), else None (a background prune is offered instead)."""
    key = config.key()
    stored = views.stored_result(key)
    if stored is not None:
        layers, summary, run_id = stored
        return layers, {**findings.layer_summary(layers), **summary}, f"from run #{run_id} in the store"
    if state.runs_inline(config):
        with st.spinner(f"Pruning with {units.method_label(config.method)}…"):
            layers, summary, _ = views.prune_preview(json.dumps(config.to_dict(), sort_keys=True))
        seconds = summary.get("prune_s") or 0.0
        return layers, summary, f"pruned in {units.duration_text(seconds)}" if seconds >= 1 else "pruned just now"
    return None


def background_prune(config: RunConfig) -> None:
    """Big models on a CPU: prune through the job queue, on request."""
    db = state.store()
    active = db.latest_runs([config.key()], kind="prune")
    st.info(f"Pruning {widgets.choice_label('model', config.model)} on the {state.device_label()} takes a while, so "
            "it runs in the background job queue rather than in the page. Training prunes it too.",
            icon=":material/schedule:")
    if active.empty or active.iloc[0]["status"] in ("failed", "cancelled"):
        if st.button("Prune in the background", icon=":material/play_arrow:", key="prune-background",
                     help="Queue a prune-only job; the densities appear here when it finishes."):
            panels.live_panel(classroom.submit(config, kind="prune").run_id, key="prune-job")
        elif not active.empty:
            panels.live_panel(int(active.iloc[0]["run_id"]), key="prune-job")
    else:
        panels.live_panel(int(active.iloc[0]["run_id"]), key="prune-job")


def pruning_section(config: RunConfig, compare: list[str]) -> None:
    st.subheader("Pruning result", anchor=False)
    try:
        result = prune_result(config)
    except DatasetUnavailableError as error:
        spec = DATASETS[config.dataset]
        if spec.needs_download:
            st.info(f"**{spec.label} is not on this machine yet.** {spec.description} Press **Train** to "
                    "download it in the background, then prune and train; offline, choose the built-in digits "
                    f"dataset instead.  \n{escape_markdown(error)}", icon=":material/cloud_download:")
        else:
            errors.show_error(error)
        return
    if result is None:
        background_prune(config)
        return
    layers, summary, source = result
    st.caption(f"{views.config_caption(config.to_dict())} — {source}")
    tables = {}
    for other, other_config in compared_configs(config, compare).items():
        with errors.error_boundary():
            found = prune_result(other_config)
            if found is None:
                st.caption(f"{units.method_label(other)} is not drawn: pruning {config.model} with it runs in "
                           "the background only.")
            else:
                tables[other] = found[0]
    views.pruning_result(layers, summary, key="prune", label=config.method if not config.is_dense else DENSE,
                         compare=tables or None)


def current_run(config: RunConfig) -> dict | None:
    """The training run to show for this configuration: the one this session or the link follows, else the
    store's best run of the same configuration and seed (reused, not recomputed)."""
    db = state.store()
    key = config.key()
    if lessons.answer_hidden() and key not in st.session_state.get(TRAINED, set()):
        return None   # a lesson link that leaves the answer out: nothing until this student presses Train
    for candidate in (st.session_state.get("run_id"), st.query_params.get("run")):
        try:
            record = db.get_run(widgets.parse_id(candidate))
        except ValueError:   # no id, a bad one (the note says so), or a run deleted since
            continue
        if record["key"] == key and record["kind"] == "train":
            return record
    latest = db.latest_runs([key], kind="train")
    return db.get_run(int(latest.iloc[0]["run_id"])) if not latest.empty else None


def start_training(config: RunConfig) -> None:
    """Submit the run to the job manager (a button's on_click, or a preset's autotrain), with the masks the
    pruning section found for it, so that the run does not prune again."""
    st.session_state["run_id"] = panels.submit_run(config, STARTED, masks=views.masks_to_hand_over(config))
    st.session_state.setdefault(TRAINED, set()).add(config.key())


def training_section(config: RunConfig, compare: list[str]) -> int | None:
    st.subheader("Training", anchor=False)
    if st.session_state.pop("autotrain", None) and current_run(config) is None:
        start_training(config)
    record = current_run(config)
    if record is None or record["status"] in ("failed", "cancelled"):
        again = record is not None
        label = (f"Train {config.epochs} epoch{'s' if config.epochs != 1 else ''}" if config.epochs
                 else "Prune and evaluate (0 epochs)")
        st.button(("Again: " + label[0].lower() + label[1:]) if again else label,
                  type="primary", icon=":material/play_arrow:", key="train", on_click=errors.callback(start_training),
                  args=(config,),
                  help="Prune this configuration and train it. It runs in the server's background queue: you can "
                       "change widgets, switch pages or close the tab, and come back to it.")
    if record is None:
        st.caption(f"{_estimate(config)} The curves of loss and accuracy appear here live while it trains.")
        compared_training(config, compare, None)
        return None
    run_id = record["id"]
    st.session_state["run_id"] = run_id
    if record["status"] == "done":
        when = units.duration_text(max(0.0, time.time() - (record["finished_at"] or 0)))
        panels.reused_note([run_id], True, STARTED,
                           f"run #{run_id} trained this exact configuration and seed {when} ago")

    def draw(rec: dict, metrics: pd.DataFrame | None) -> None:
        views.run_summary(rec)
        views.training_curves(rec, metrics, "train")
        updates = findings.mask_updates(metrics) if metrics is not None else None
        if updates is not None and not updates.empty:
            st.markdown("**Mask changes over training**")
            st.plotly_chart(charts.mask_changes_chart(updates, uirevision="train-mask"), width="stretch",
                            key="train-mask", config={"displaylogo": False})
            st.caption("Weights moved to new positions at each mask update, per layer; every layer keeps its number "
                       "of weights. The stored mask (Runs page: download masks) is the one training ended with.")

    panels.live_panel(run_id, key="train", draw=draw)
    compared_training(config, compare, record)
    return run_id


def compared_configs(config: RunConfig, compare: list[str]) -> dict[str, RunConfig]:
    """The methods compared with, on the chosen configuration's initial weights, settings and seed."""
    return {m: config.replace(method=m, iterations=None).canonical() for m in compare if not config.is_dense}


def compared_training(config: RunConfig, compare: list[str], record: dict | None) -> None:
    """'Compare with' trains too: a button queues the compared methods' runs, and their curves are drawn with
    the chosen method's, live while they train."""
    configs = compared_configs(config, compare)
    if not configs:
        return
    stored = panels.stored_runs(configs)
    others = ", ".join(units.method_label(m) for m in configs)
    if stored.missing:
        missing = {m: configs[m] for m in stored.missing}
        names = ", ".join(units.method_label(m) for m in missing)
        st.button(f"Train {names} too", icon=":material/compare_arrows:", key="train-compare",
                  on_click=errors.callback(panels.submit_runs), args=(missing, STARTED),
                  help="Train the methods compared with the same way (same initial weights, seed and settings) in the "
                       "background queue, and draw their curves beside this one's. Runs that exist are reused.")
        if not stored.run_ids:
            one = len(configs) == 1
            st.caption(f"**Train** trains {units.method_label(config.method)} only; {others} {'is' if one else 'are'} "
                       f"pruned for the densities above. **Train {others} too** trains {'it' if one else 'them'} "
                       "the same way and draws the curves together.")
            return
    main_id = int(record["id"]) if record is not None else None
    labels = {main_id: units.method_label(config.method)} if main_id is not None else {}
    labels.update({run_id: units.method_label(m) for m, run_id in stored.run_ids.items()})

    def draw(records: dict[int, dict]) -> None:
        panels.runs_status({labels[i]: r for i, r in records.items() if i != main_id}, "train-compare")
        curves = {labels[i]: panels.run_metrics(r) for i, r in records.items() if r["status"] != "queued"}
        if len(curves) > 1 or (curves and main_id is None):
            st.markdown(f"**{units.method_label(config.method)} against {others}**" if main_id is not None
                        else f"**{others}**")
            st.plotly_chart(charts.training_curves(curves, uirevision="train-compare"), width="stretch",
                            key="train-compare-curves", config={"displaylogo": False})

    panels.live_runs(list(labels), "train-compare", draw)


def _estimate(config: RunConfig) -> str:
    """How long an epoch of this configuration takes here, as a sentence."""
    device = state.device_label()
    if config.dataset == "digits" and config.model in ("mlp", "conv"):
        return f"An epoch takes {'about a second' if state.on_gpu() else 'one to two seconds'} on the {device}."
    if state.on_gpu():
        return f"An epoch takes seconds on the {device}."
    return (f"An epoch takes minutes on the {device}; the built-in digits with the small CNN or the MLP train in "
            "seconds.")


navigation.page_header("Prune & train", "Remove most of a network's weights before it has seen any data, see which "
                                        "layers survive, then train what is left.")
preset_columns = st.columns(len(PRESET_NAMES), gap="small")
for column, name in zip(preset_columns, PRESET_NAMES if not lessons.active() else ()):   # a lesson: its setup
    column.button(PRESETS[name].label, key=f"preset-{name}", on_click=errors.callback(apply_preset), args=(name,),
                  help=PRESETS[name].description, icon=PRESET_ICONS.get(name), width="stretch")
with errors.error_boundary():
    config, compare = config_form(initial_values())
    config = config.validate()
    state.show_ignored_link_notes()
    classroom.check_run(config)   # above a server limit (from a widget or a link): say which, compute nothing
    url = {f: getattr(config, f) for f in FIELDS}
    url.update(sparsity=config.sparsity, compare=compare, run=None)
    pruning_section(config, compare)
    run_id = training_section(config, compare)
    url["run"] = run_id
    state.sync_url(url)
