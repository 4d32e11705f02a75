"""The views a run is shown with on every page (its pruning result, its training curves and headline numbers),
the explanations of the methods, and the downloads built from the store."""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import torch

from dashboard import state
from dashboard.widgets import choice_label
from pruning_core.config import DENSE, RunConfig
from pruning_core.engine.data import DATASETS, load_dataset
from pruning_core.engine.methods import METHODS
from pruning_core.infra import runner
from pruning_core.presentation import charts, findings, units


# ---- method explanations ------------------------------------------------------------------------------
def explain_method(name: str) -> None:
    """A method's plain-language explanation with its score formula and paper (all from METHODS)."""
    spec = METHODS[name]
    st.markdown(f"**{spec.label}**: {spec.summary}")
    st.markdown("Score of each weight (the highest scores are kept):")
    st.code(spec.formula, language=None)
    st.markdown(spec.explanation)
    facts = ["needs a few batches of training data" if spec.needs_data else "data-free (needs no data)",
             f"{spec.default_iterations} pruning round{'s' if spec.default_iterations != 1 else ''} by default"]
    st.caption(" · ".join(facts) + f"  \nPaper: {spec.paper}")


def method_popover(name: str, container: Any = None) -> None:
    if name == DENSE or name not in METHODS:
        return
    with (container or st).popover(f"How {METHODS[name].label} works", icon=":material/info:", width="stretch"):
        explain_method(name)


def methods_glossary(names: Sequence[str]) -> None:
    """Every listed method's explanation, one tab each, inside an expander."""
    names = [n for n in names if n in METHODS]
    if not names:
        return
    with st.expander("What do these methods do? Scores and papers", icon=":material/menu_book:"):
        for tab, name in zip(st.tabs([METHODS[n].label for n in names]), names):
            with tab:
                explain_method(name)


# ---- pruning results -------------------------------------------------------------------------------------
@st.cache_data(max_entries=256, show_spinner=False)
def prune_preview(config_json: str) -> tuple[pd.DataFrame, dict[str, Any], dict[str, torch.Tensor]]:
    """Prune one configuration in the page (fast configurations only, see `state.runs_inline`) and return its
    layer table, summary and masks. Cached by the configuration, so a widget change back is instant, and the
    training run of the same configuration gets these masks instead of pruning again (`masks_to_hand_over`)."""
    config = RunConfig.from_dict(json.loads(config_json))
    dataset = load_dataset(config.dataset, download=False)
    model = runner.build_model(config, dataset).to(state.device())
    result = runner.prune_with_config(model, config, dataset)
    return result.layers, {**result.summary(), "method": config.method}, {n: m.cpu() for n, m in result.masks.items()}


def masks_to_hand_over(config: RunConfig) -> dict[str, torch.Tensor] | None:
    """The masks this configuration already has, for its training run to use instead of pruning again: those of
    a finished prune-only run in the store, else the page's own pruning (`prune_preview`, cached when the page
    drew it); None when neither is at hand or pruning it does more than choose masks (`runner.masks_reusable`)."""
    if not runner.masks_reusable(config):
        return None
    db = state.store()
    done = db.find_done(config.key(), kind="prune")
    if done is not None and done.get("has_masks"):
        return db.load_masks(done["id"])
    if state.runs_inline(config):
        return prune_preview(json.dumps(config.to_dict(), sort_keys=True))[2]
    return None


def stored_result(key: str) -> tuple[pd.DataFrame, dict[str, Any], int] | None:
    """The layer table and summary of a finished run of this key (trained, else prune-only), if any."""
    db = state.store()
    for kind in ("train", "prune"):
        done = db.find_done(key, kind=kind)
        if done is not None:
            layers = db.layers(done["id"])
            if layers is not None:
                return layers, done.get("summary") or {}, done["id"]
    return None


def pruning_result(layers: pd.DataFrame, summary: Mapping[str, Any], *, key: str, label: str = "kept",
                   compare: Mapping[str, pd.DataFrame] | None = None) -> None:
    """The pruning result as every page shows it: per-layer density bars (log-scale toggle) on the left;
    weights and FLOPs kept and the layer-collapse findings on the right."""
    chart, facts = st.columns([2.3, 1], gap="medium")
    with chart:
        log_scale = st.toggle("Log scale", key=f"{key}-log", help="Show densities on a logarithmic axis: small "
                              "densities (0.1%, 0.01%) become visible next to large ones.")
        fig = charts.density_bars(layers, log_scale=log_scale, compare=compare, label=label,
                                  uirevision=f"{key}-density")
        st.plotly_chart(fig, width="stretch", key=f"{key}-density", config={"displaylogo": False})
        st.caption("Each bar is one layer's **density** (kept fraction); the number on it is how many weights "
                   "it kept. ✕ marks a layer that kept none; ◇ the density of weights still connected "
                   "input-to-output.")
    with facts:
        kept, total = int(summary.get("kept", layers["kept"].sum())), int(summary.get("total", layers["total"].sum()))
        flops_kept = int(summary.get("flops_kept", layers["flops_kept"].sum()))
        flops_dense = int(summary.get("flops_dense", layers["flops_dense"].sum()))
        a, b = st.columns(2)
        a.metric("Weights kept", f"{kept:,}", help=f"{kept:,} of {total:,} prunable weights "
                                                 f"({units.percent(kept / total if total else 0)}).")
        a.caption(f"of {total:,} ({units.percent(kept / total if total else 0)})")
        b.metric("FLOPs kept", _short(flops_kept), help="Multiply-adds (x2) per input image in the pruned layers, "
                                                        "counting only kept weights.")
        b.caption(f"of {_short(flops_dense)} ({units.percent(flops_kept / flops_dense if flops_dense else 0)})")
        density = float(summary.get("density", kept / total if total else 0))
        effective = float(summary.get("effective_density", density))
        st.metric("Connected density", units.percent(effective), help="Effective density: the fraction of all "
                  "weights that are kept AND lie on a path from input to output. Below the nominal density "
                  "when pruning left dead ends.", delta=None)
        st.caption(f"nominal density {units.percent(density)}")
        for level, text in findings.collapse_findings(summary):
            getattr(st, level)(text, icon={"error": ":material/link_off:", "warning": ":material/warning:",
                                           "success": ":material/check_circle:"}[level])
        for name, table in (compare or {}).items():
            level, text = findings.collapse_brief(findings.layer_summary(table))
            mark = {"error": ":red[:material/link_off:]", "warning": ":orange[:material/warning:]",
                    "success": ":green[:material/check_circle:]"}[level]
            st.markdown(f"{mark} **{units.method_label(name)}**: {text}.")


def _short(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:,.0f}"


# ---- a run's training -------------------------------------------------------------------------------------
def training_curves(record: Mapping[str, Any], metrics: pd.DataFrame, key: str) -> None:
    """A run's loss and accuracy curves from its metric rows (live while it trains)."""
    dataset = record.get("dataset")
    classes = DATASETS[dataset].num_classes if dataset in DATASETS else 0
    if findings.split_metrics(metrics)[0].empty:
        st.caption("The curves appear after the first evaluation (before training starts).")
        return
    fig = _curves_figure(record.get("id"), len(metrics), 1 / classes if classes else None, f"{key}-curves", metrics)
    st.plotly_chart(fig, width="stretch", key=f"{key}-curves", config={"displaylogo": False})


@st.cache_resource(max_entries=64, show_spinner=False)
def _curves_figure(run_id: int | None, rows: int, chance: float | None, uirevision: str,
                   _metrics: pd.DataFrame) -> Any:
    """The curves' figure, built once per run and number of metric rows (rows are only ever appended) and shared
    by every viewer: a live panel polls every second in every tab that watches the run, and building the figure
    was most of a poll's cost."""
    return charts.training_curves(_metrics, chance=chance, uirevision=uirevision)


def run_summary(record: Mapping[str, Any]) -> None:
    """Headline numbers of a finished training run."""
    summary = record.get("summary") or {}
    if record.get("status") != "done" or "final_test_accuracy" not in summary:
        return
    timings = record.get("timings") or {}
    cols = st.columns(4)
    cols[0].metric("Final test accuracy", units.percent(summary["final_test_accuracy"]))
    cols[1].metric("Best test accuracy", units.percent(summary.get("best_test_accuracy", math.nan)))
    cols[2].metric("Training time", units.duration_text(timings.get("train_s")),
                   help=f"Pruning took {units.duration_text(timings.get('prune_s'))}.")
    speed = summary.get("images_per_s")
    cols[3].metric("Speed", f"{speed:,.0f} img/s" if speed else "–", help=f"On {record.get('device') or '?'}.")


def config_caption(config: Mapping[str, Any]) -> str:
    """'SynFlow · 99% removed · compression 10^2.0 (100×) · Small CNN on Digits · seed 0 · 10 epochs'."""
    c = RunConfig.from_dict(dict(config)).canonical()
    parts = [units.method_label(c.method), units.sparsity_text(c.sparsity),
             f"{choice_label('model', c.model)} on {choice_label('dataset', c.dataset)}", f"seed {c.seed}",
             f"{c.epochs} epoch{'s' if c.epochs != 1 else ''}"]
    if not c.is_dense:
        parts.insert(2, f"{c.schedule}, {c.iterations or METHODS[c.method].default_iterations} round(s), {c.scope}")
    variant = units.run_variant(c.to_dict())   # a sanity check or sparsity-aware init, right after the method
    if variant:
        parts.insert(1, variant)
    return " · ".join(parts)


STUDY_TITLES = {"collapse": ("Layer collapse study", "collapse"), "gradient_flow": ("Gradient flow study", "gradient_flow"),
                "relearning": ("Relearning study", "gradient_flow")}   # a study's title and the page that shows it


def study_caption(spec: Mapping[str, Any]) -> str:
    """'Layer collapse study · Small CNN on Digits · seed 0 · SynFlow, SNIP' for a queued study's config
    (`pruning_core.studies.tasks`), which is not a RunConfig."""
    title = STUDY_TITLES.get(spec.get("study"), (f"{spec.get('study', 'unknown')} study", None))[0]
    parts = [title, f"{choice_label('model', spec['model'])} on {choice_label('dataset', spec['dataset'])}",
             f"seed {spec['seed']}"]
    if spec.get("method"):
        parts.append(units.method_label(spec["method"]))
    if spec.get("methods"):
        parts.append(", ".join(units.method_label(m) for m in spec["methods"]))
    if spec.get("sparsity") is not None:
        parts.append(units.sparsity_text(spec["sparsity"]))
    if spec.get("epochs") is not None:
        parts.append(f"{spec['epochs']} epoch{'s' if spec['epochs'] != 1 else ''}")
    return " · ".join(parts)


# ---- downloads ------------------------------------------------------------------------------------------
def masks_archive(run_ids: Sequence[int]) -> bytes:
    """A zip with one compressed .npz of boolean masks per run (layer name -> array, True = kept)."""
    db = state.store()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for run_id in run_ids:
            masks = db.load_masks(run_id)
            if masks is None:
                continue
            npz = io.BytesIO()
            np.savez_compressed(npz, **{name: mask.numpy().astype(bool) for name, mask in masks.items()})
            archive.writestr(f"run-{run_id}-masks.npz", npz.getvalue())
    return buffer.getvalue()
