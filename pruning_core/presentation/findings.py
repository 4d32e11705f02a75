"""Findings in words: the headline numbers of a layer table, what a pruning result says about layer collapse,
and the summaries and sentences the pages print beside the charts (trade-off, lottery tickets, gradient flow).

Plain DataFrames in, dicts, tables and markdown sentences out; nothing here imports Streamlit or Plotly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from pruning_core.presentation.units import percent, seconds_text

# A layer whose density drops below half of the network's nominal density is where collapse starts;
# a pruned network whose connected share is below this fraction of what it keeps gets a warning.
DISCONNECTED_WARNING = 0.5


# ---- summaries -----------------------------------------------------------------------------------------
def layer_summary(layers: pd.DataFrame) -> dict[str, Any]:
    """The headline numbers of a layer table (as in `PruneResult.summary()`), for a table read back from the
    store of a run that has not finished yet."""
    total = int(layers["total"].sum())
    kept = int(layers["kept"].sum())
    effective_kept = int(layers["effective_kept"].sum()) if "effective_kept" in layers else kept
    density = kept / total if total else 0.0
    return {
        "density": density, "effective_density": effective_kept / total if total else 0.0,
        "compression": 1.0 / density if density > 0 else math.inf, "kept": kept, "total": total,
        "effective_kept": effective_kept,
        "flops_dense": int(layers["flops_dense"].sum()) if "flops_dense" in layers else 0,
        "flops_kept": int(layers["flops_kept"].sum()) if "flops_kept" in layers else 0,
        "collapsed": layers.loc[layers["kept"] == 0, "name"].tolist(),
        "disconnected_layers": layers.loc[(layers.get("effective_kept", layers["kept"]) == 0) & (layers["kept"] > 0),
                                          "name"].tolist(),
    }


# ---- findings written next to the charts ------------------------------------------------------------
def collapse_findings(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What a pruning summary says about layer collapse, as (level, text) pairs for the page to print:
    level 'error' for collapsed layers, 'warning' for a network whose kept weights are largely
    disconnected (effective density below half the nominal one), 'success' otherwise."""
    density = float(summary.get("density") or 0.0)
    effective = float(summary.get("effective_density", density) or 0.0)
    collapsed = list(summary.get("collapsed") or [])
    disconnected_layers = [n for n in summary.get("disconnected_layers") or [] if n not in collapsed]
    findings: list[tuple[str, str]] = []
    if collapsed:
        findings.append(("error", f"**Layer collapse:** {_names(collapsed)} kept no weights, so no signal from the "
                                  "input reaches the output and training cannot help: accuracy stays at chance. "
                                  f"Effective density {percent(effective)} vs nominal {percent(density)}. "
                                  "Try a lower compression, or SynFlow, which avoids collapse by design."))
    elif density > 0 and effective < DISCONNECTED_WARNING * density:
        share = 1.0 - effective / density
        text = (f"**{percent(share)} of the kept weights are disconnected**: they lie on no path from input to "
                f"output, so they cannot carry signal. Effective density {percent(effective)} vs nominal "
                f"{percent(density)}.")
        if disconnected_layers:
            text += f" Layers with no connected weight left: {_names(disconnected_layers)}."
        findings.append(("warning", text))
    if not findings:
        connected = effective / density if density > 0 else 1.0
        findings.append(("success", f"No layer collapsed: every layer kept weights and {percent(connected)} of the "
                                    "kept weights lie on a path from input to output."))
    return findings


def collapse_brief(summary: Mapping[str, Any]) -> tuple[str, str]:
    """One short line (level, text) of the same findings, for a method drawn beside the main one."""
    density = float(summary.get("density") or 0.0)
    effective = float(summary.get("effective_density", density) or 0.0)
    collapsed = list(summary.get("collapsed") or [])
    if collapsed:
        return "error", f"layer collapse in {_names(collapsed)}"
    if density > 0 and effective < DISCONNECTED_WARNING * density:
        return "warning", (f"{percent(1 - effective / density)} of its kept weights are disconnected (effective "
                           f"density {percent(effective)} vs {percent(density)})")
    return "success", "no layer collapsed, kept weights connected"


def _names(names: Sequence[str]) -> str:
    return ", ".join(f"`{n.removesuffix('.weight')}`" for n in names)


# ---- a run's metric rows ----------------------------------------------------------------------------
SEARCH_PHASE = "search"   # runner.SEARCH_PHASE: metric rows of a mask search's rounds (IMP, GemMiner)
MASK_PHASE = "mask_update"   # runner.MASK_PHASE: metric rows of dynamic sparse training's mask updates (SET, RigL)
MASK_UPDATE_COLUMNS = ["step", "layer", "kept", "total", "dropped", "moved", "drop_fraction"]


def split_metrics(metrics: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, mask-search rows) of a run's metrics: methods that train to find their masks record
    each round of the search as a row with phase 'search' (and no epoch) before the run's own training."""
    if metrics is None or metrics.empty:
        empty = pd.DataFrame(columns=list(metrics.columns) if metrics is not None else [])
        return (metrics if metrics is not None else empty), empty
    search = metrics["phase"].eq(SEARCH_PHASE) if "phase" in metrics else pd.Series(False, index=metrics.index)
    training = metrics[~search & metrics["epoch"].notna()] if "epoch" in metrics else metrics[~search]
    return training, metrics[search]


def mask_updates(metrics: pd.DataFrame | None) -> pd.DataFrame:
    """The mask updates of a SET / RigL run from its metric rows: one row per update and layer (step, layer, kept,
    total, dropped, moved, drop_fraction), in step order; empty for a static run."""
    if metrics is None or metrics.empty or "phase" not in metrics:
        return pd.DataFrame(columns=MASK_UPDATE_COLUMNS)
    rows = metrics[metrics["phase"].eq(MASK_PHASE)]
    return rows.reindex(columns=MASK_UPDATE_COLUMNS).sort_values("step", kind="stable").reset_index(drop=True)


# ---- accuracy vs compression --------------------------------------------------------------------------
def tradeoff_summary(table: pd.DataFrame, metric: str = "final_test_accuracy") -> pd.DataFrame:
    """Mean and standard deviation of `metric` over seeds for every (method, sparsity) cell of a sweep
    table (columns method, sparsity, seed, `metric`, and optionally collapsed), with its compression.
    Cells without a value yet (running, failed) are left out."""
    columns = ["method", "sparsity", "compression", "mean", "std", "seeds", "collapsed"]
    if table.empty or metric not in table:
        return pd.DataFrame(columns=columns)
    finished = table[table[metric].notna()].copy()
    if finished.empty:
        return pd.DataFrame(columns=columns)
    finished["collapsed"] = finished["collapsed"].fillna(False).astype(bool) if "collapsed" in finished else False
    grouped = finished.groupby(["method", "sparsity"], sort=True)
    out = grouped.agg(mean=(metric, "mean"), std=(metric, "std"), seeds=(metric, "size"),
                      collapsed=("collapsed", "any")).reset_index()
    out["std"] = out["std"].fillna(0.0)
    out["compression"] = 1.0 / (1.0 - out["sparsity"])
    return out[columns]


# ---- lottery tickets: IMP and GemMiner -----------------------------------------------------------------
TICKET_COST_COLUMNS = ["method", "test_accuracy", "search_s", "train_s", "search_steps", "train_steps"]


def ticket_findings(table: pd.DataFrame, tolerance: float = 0.01) -> list[str]:
    """What the IMP / GemMiner comparison says, as markdown sentences: how much faster GemMiner found its
    mask (search wall time and steps), the whole cost with the training of the mask, and the accuracies.
    `table` as for `ticket_cost_chart`; a method whose run is not finished is left out."""
    rows = {m: r for m, r in zip(table["method"], table.to_dict("records")) if not pd.isna(r.get("test_accuracy"))}
    if "imp" not in rows or "gemminer" not in rows:
        return []
    imp, gem = rows["imp"], rows["gemminer"]
    sentences = []

    def ratio(a: Any, b: Any) -> float | None:
        return float(a) / float(b) if a is not None and b is not None and not pd.isna(a) and not pd.isna(b) \
            and float(b) > 0 else None

    search = ratio(imp.get("search_s"), gem.get("search_s"))
    steps = ratio(imp.get("search_steps"), gem.get("search_steps"))
    if search is not None:
        faster = f"{search:.1f}× faster" if search >= 1 else f"{1 / search:.1f}× slower"
        text = (f"**GemMiner found its mask {faster} than IMP**: {seconds_text(gem['search_s'])} against "
                f"{seconds_text(imp['search_s'])}")
        if steps is not None:
            text += (f", {float(gem['search_steps']):,.0f} training steps of score learning against "
                     f"{float(imp['search_steps']):,.0f} steps of IMP's rounds")
        sentences.append(text + ".")
    total = ratio((imp.get("search_s") or 0) + (imp.get("train_s") or 0), (gem.get("search_s") or 0)
                  + (gem.get("train_s") or 0))
    if total is not None:
        sentences.append(f"With the training of the found mask, GemMiner took {total:.1f}× less wall time in all "
                         if total >= 1 else f"With the training of the found mask, GemMiner took {1 / total:.1f}× "
                                            "more wall time in all ")
        sentences[-1] += (f"({seconds_text((gem.get('search_s') or 0) + (gem.get('train_s') or 0))} against "
                          f"{seconds_text((imp.get('search_s') or 0) + (imp.get('train_s') or 0))}).")
    gap = float(gem["test_accuracy"]) - float(imp["test_accuracy"])
    if gap >= -tolerance:
        sentences.append(f"Its ticket reached IMP-level accuracy: {percent(float(gem['test_accuracy']))} against "
                         f"{percent(float(imp['test_accuracy']))} ({100 * gap:+.1f} points).")
    else:
        sentences.append(f"Its ticket is {100 * -gap:.1f} points less accurate: {percent(float(gem['test_accuracy']))} "
                         f"against IMP's {percent(float(imp['test_accuracy']))}.")
    return sentences


# ---- gradient flow (Evci et al. 2022) --------------------------------------------------------------------
def gradient_flow_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per variant of a `pc.gradient_flow` table: variant, label, density, init_grad_norm (at step 0),
    mean_grad_norm (over training, initialisation excluded), init_test_accuracy (before training) and
    final_test_accuracy (after the last epoch)."""
    rows = []
    for variant, group in df.groupby("variant", sort=False):
        group = group.sort_values("step")
        later = group[group["step"] > group["step"].min()]
        tested = group[group["test_accuracy"].notna()]
        rows.append({"variant": variant, "label": group["label"].iloc[0], "density": float(group["density"].iloc[0]),
                     "init_grad_norm": float(group["grad_norm"].iloc[0]),
                     "mean_grad_norm": float(later["grad_norm"].mean()) if len(later) else math.nan,
                     "init_test_accuracy": float(tested["test_accuracy"].iloc[0]) if len(tested) else math.nan,
                     "final_test_accuracy": float(tested["test_accuracy"].iloc[-1]) if len(tested) else math.nan})
    return pd.DataFrame(rows, columns=["variant", "label", "density", "init_grad_norm", "mean_grad_norm",
                                       "init_test_accuracy", "final_test_accuracy"])


def _norm(value: float) -> str:
    """A gradient norm with three significant digits: '5.00', '0.0105', '4.66'."""
    return f"{value:#.3g}".rstrip(".") if math.isfinite(value) else "–"


def _times(a: float, b: float) -> str:
    """How a compares with b: '12× weaker', '3.1× stronger', 'about as strong'."""
    if not (a > 0 and b > 0):
        return "not comparable"
    r = a / b
    if 1 / 1.25 <= r <= 1.25:
        return "about as strong as"
    return f"{1 / r:.3g}× weaker than" if r < 1 else f"{r:.3g}× stronger than"


BELOW_CHANCE = 0.03   # an accuracy at init this far below chance gets its explanation


def gradient_flow_findings(summary: pd.DataFrame, chance: float | None = None) -> list[str]:
    """The story of a gradient-flow comparison in markdown sentences (Evci et al. 2022): how the sparse
    network's gradient at initialisation compares with the dense one's, what the sparsity-aware
    initialisation changes, and how the lottery ticket does (and, when its mask alone already classifies well
    above `chance` before any training, that too). `summary` from `gradient_flow_summary`."""
    by = {r["variant"]: r for r in summary.to_dict("records")}
    sentences = []
    dense, sparse, fixed, ticket = by.get("dense"), by.get("sparse"), by.get("sparse_init"), by.get("lottery")
    if dense is not None and sparse is not None:
        sentences.append(
            "At initialisation the sparse network's gradient is "
            f"**{_times(sparse['init_grad_norm'], dense['init_grad_norm'])}** the dense network's "
            f"({_norm(sparse['init_grad_norm'])} vs {_norm(dense['init_grad_norm'])}): with the dense initialisation, "
            "each unit of a sparse layer sums fewer inputs, so signals and gradients shrink from layer to layer.")
    if sparse is not None and fixed is not None:
        text = (f"The sparsity-aware initialisation (variance scaled by each unit's kept fan-in) starts the same "
                f"sparse network with a gradient norm of {_norm(fixed['init_grad_norm'])}, "
                f"{_times(fixed['init_grad_norm'], sparse['init_grad_norm'])} with the standard initialisation,")
        if not (math.isnan(fixed["final_test_accuracy"]) or math.isnan(sparse["final_test_accuracy"])):
            text += (f" and trains to {percent(fixed['final_test_accuracy'])} test accuracy against "
                     f"{percent(sparse['final_test_accuracy'])}")
        sentences.append(text.rstrip(",") + ".")
    if ticket is not None:
        text = f"The lottery ticket starts with a gradient norm of {_norm(ticket['init_grad_norm'])}"
        if sparse is not None:
            text += f" ({_times(ticket['init_grad_norm'], sparse['init_grad_norm'])} the sparse network's)"
        if not math.isnan(ticket["final_test_accuracy"]):
            text += f" and reaches {percent(ticket['final_test_accuracy'])}"
        sentences.append(text + ". Evci et al. found that tickets do not win by better gradient flow: they "
                                "relearn the solution of the dense network they were pruned from.")
        start = ticket.get("init_test_accuracy", math.nan)
        if chance is not None and not math.isnan(start) and start > chance + 0.1:
            sentences.append(f"Before any training the ticket already classifies {percent(start)} of the test images "
                             f"(chance: {percent(chance)}): its mask was chosen from the trained network's weights, so "
                             "the mask alone already carries part of what training learnt (Zhou et al. 2019 call "
                             "such masks supermasks).")
    below = [r for r in by.values() if chance is not None and not math.isnan(r.get("init_test_accuracy", math.nan))
             and r["init_test_accuracy"] < chance - BELOW_CHANCE]
    if below:
        worst = min(below, key=lambda r: r["init_test_accuracy"])
        sentences.append(
            f"Before training, {worst['label'].lower()} classifies only {percent(worst['init_test_accuracy'])} of the "
            f"test images, below chance ({percent(chance)}). That is not a bug: an untrained network sends almost "
            "every image to one or two classes, so its accuracy is the share of the images that happen to land in "
            "their own class — about chance on average over seeds, but far from it for one seed. It says nothing "
            "about what the network can learn.")

    dynamic = [(name, by[v]) for v, name in (("rigl", "RigL"), ("set", "SET")) if v in by]
    if sparse is not None and dynamic and not math.isnan(sparse["mean_grad_norm"]):
        static = sparse["mean_grad_norm"]
        compared = [f"{name}'s {_norm(row['mean_grad_norm'])} ({_times(row['mean_grad_norm'], static)} the static "
                    "network's)" for name, row in dynamic]
        stronger = [row["mean_grad_norm"] > sparse["mean_grad_norm"] for _, row in dynamic]
        text = (f"Along training the static sparse network's gradient norm averages {_norm(sparse['mean_grad_norm'])}, "
                f"against {' and '.join(compared)}, from the same mask and initial weights: ")
        if all(stronger):
            text += ("dynamic sparse training keeps more gradient flowing, as Evci et al. found: regrowing weights "
                     "where they are missing reopens paths that a fixed mask keeps closed.")
        elif any(stronger):
            text += ("on this run only part of Evci et al.'s finding (dynamic sparse training improves gradient "
                     "flow) shows.")
        else:
            text += "on this run dynamic sparse training does not improve the gradient flow, unlike in Evci et al."
        sentences.append(text)
    return sentences


# ---- lottery tickets relearn the pruning solution (Evci et al. 2022) ------------------------------------------
def relearning_findings(table: pd.DataFrame) -> str:
    """What a `pc.lottery_relearning` table says, in one markdown sentence: whether the lottery ticket ends closer
    to the dense solution it was pruned from (L2 distance of the kept weights, disagreement of test predictions)
    than the same mask trained from a fresh random initialisation. Empty when either row is missing."""
    by = {r["variant"]: r for r in table.to_dict("records")}
    ticket, scratch = by.get("lottery"), by.get("scratch")
    if ticket is None or scratch is None or any(pd.isna(r[c]) for r in (ticket, scratch)
                                                for c in ("distance", "disagreement")):
        return ""
    closer = ticket["distance"] < scratch["distance"]
    agrees = ticket["disagreement"] <= scratch["disagreement"]
    numbers = (f"its kept weights end at L2 distance {_norm(ticket['distance'])} from the dense network's against "
               f"{_norm(scratch['distance'])} for the same mask from a fresh random initialisation (they started at "
               f"{_norm(ticket['init_distance'])} and {_norm(scratch['init_distance'])}), and its predictions "
               f"differ from the dense network's on {percent(ticket['disagreement'])} of the test images against "
               f"{percent(scratch['disagreement'])}")
    if closer and agrees:
        ratio = scratch["distance"] / ticket["distance"] if ticket["distance"] > 0 else math.inf
        return (f"**The lottery ticket relearns the solution it was pruned from**: {numbers}; it ends "
                f"{ratio:.3g}× closer, as Evci et al. 2022 found: a ticket wins by returning to the pruning "
                "solution's basin, not by better gradient flow.")
    if closer:
        return (f"**The lottery ticket's weights end closer to the dense solution, its predictions do not**: "
                f"{numbers}; on this run only half of Evci et al.'s finding shows.")
    return (f"**On this run the lottery ticket does not end closer to the dense solution it was pruned from**: "
            f"{numbers}; Evci et al.'s finding does not reproduce here.")
