"""The dashboard's figures: plain functions, pandas DataFrame in, Plotly figure out.

Nothing here imports Streamlit, so tests (and notebooks) call these directly. Every figure uses one colour
per method (`method_color`), SVG traces only (error bands need `fill="tonexty"`, which WebGL traces lack),
and a fixed `uirevision` so that a live chart keeps the user's zoom when it is redrawn.

Also here: the short texts the pages print next to the figures (sparsity written as "% removed" and as a
compression ratio, the layer-collapse findings), so that their wording is tested in one place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pruning_core.config import DENSE
from pruning_core.engine.methods import METHODS

# A colour-blind-friendly qualitative palette (Okabe & Ito), then a few more for long method lists.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8C564B", "#9467BD", "#17BECF",
           "#F0E442", "#7F7F7F", "#BCBD22", "#E7298A", "#66A61E", "#1F3A93", "#A6761D"]
DENSE_COLOR = "#333333"
COLLAPSE_COLOR = "#C62828"
# A layer whose density drops below half of the network's nominal density is where collapse starts;
# a pruned network whose connected share is below this fraction of what it keeps gets a warning.
DISCONNECTED_WARNING = 0.5
FONT = dict(family="Inter, Source Sans Pro, Helvetica, Arial, sans-serif", size=13)


# ---- names, colours and numbers ------------------------------------------------------------------
def method_label(name: str) -> str:
    """The display name of a method ('Dense baseline' for unpruned runs)."""
    if name == DENSE:
        return "Dense baseline"
    return METHODS[name].label if name in METHODS else str(name)


# Fixed colours for the methods the pages show most, so that SynFlow is blue on every chart.
METHOD_COLORS = {"synflow": "#0072B2", "snip": "#D55E00", "grasp": "#009E73", "magnitude": "#CC79A7",
                 "random": "#7F7F7F", "random_erk": "#BCBD22", "iter_snip": "#E69F00", "force": "#56B4E9",
                 "imp": "#9467BD", "gemminer": "#17BECF"}


def method_color(name: str) -> str:
    """The same colour for a method on every page (fixed for known methods, else by registry order)."""
    if name == DENSE:
        return DENSE_COLOR
    if name in METHOD_COLORS:
        return METHOD_COLORS[name]
    names = [n for n in METHODS if n not in METHOD_COLORS]
    index = names.index(name) if name in names else len(names) + sum(map(ord, str(name)))
    free = [c for c in PALETTE if c not in METHOD_COLORS.values()] or PALETTE  # not a fixed method's colour
    return free[index % len(free)]


def _rgba(color: str, alpha: float) -> str:
    color = color.lstrip("#")
    r, g, b = (int(color[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def log_compression(sparsity: float) -> float:
    """x in compression 10^x for a sparsity (0.99 -> 2.0); 0 for a dense network."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    return -math.log10(1.0 - sparsity)


def sparsity_from_log(x: float) -> float:
    """The sparsity of compression 10^x, rounded so that 10^2 gives exactly 0.99 (stable config keys)."""
    if x < 0:
        raise ValueError(f"log compression must be >= 0, got {x}")
    return round(1.0 - 10.0 ** (-x), 6)


def _count(value: float) -> str:
    """1234 -> '1,234', 25118.9 -> '25,119', 3.16 -> '3.2'."""
    return f"{value:,.0f}" if value >= 10 else f"{value:.2g}"


def percent(fraction: float) -> str:
    """A fraction as a percentage with as many digits as it needs: 0.99 -> '99%', 0.999 -> '99.9%',
    0.00098 -> '0.098%'."""
    value = 100.0 * fraction
    if value == 0 or value == 100:
        return f"{value:.0f}%"
    if value < 1:
        return f"{value:.2g}%"
    for decimals in range(1, 7):  # 99.999 must not read as 100
        text = f"{value:.{decimals}f}"
        if float(text) != 100:
            break
    return text.rstrip("0").rstrip(".") + "%"


def compression_text(sparsity: float) -> str:
    """'10^2.0 (100×)' for sparsity 0.99; 'none (dense)' for 0."""
    if sparsity == 0:
        return "none (dense)"
    x = log_compression(sparsity)
    return f"10^{x:.1f} ({_count(10 ** x)}×)"


def sparsity_text(sparsity: float) -> str:
    """Sparsity in both vocabularies: '99.9% removed · compression 10^3.0 (1,000×)'."""
    if sparsity == 0:
        return "0% removed · dense network (no compression)"
    return f"{percent(sparsity)} removed · compression {compression_text(sparsity)}"


def seconds_text(seconds: float | None) -> str:
    """A short duration with the precision it needs: '0.42 s', '3.1 s', '45 s', '3 min 20 s'."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "–"
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    return duration_text(seconds)


def duration_text(seconds: float | None) -> str:
    """'45 s', '3 min 20 s', '1 h 05 min'; '–' when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


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


# ---- per-layer density ------------------------------------------------------------------------------
def density_bars(layers: pd.DataFrame, log_scale: bool = False, compare: Mapping[str, pd.DataFrame] | None = None,
                 label: str = "kept", uirevision: str = "density") -> go.Figure:
    """Bars of each layer's density (kept fraction), with the kept count on the bar.

    `layers` is a layer table (columns name, kept, total, density, effective_density). `compare` maps more
    labels (methods) to their tables: the bars are then grouped by layer, one colour per method. A layer
    that kept nothing is marked with a red ✕ (its bar has no height, and none at all on a log axis); a
    diamond marks the effective (connected) density where it is lower than the nominal one.
    """
    tables = {label: layers, **dict(compare or {})}
    fig = go.Figure()
    positive = [d for t in tables.values() for d in t["density"] if d > 0]
    floor = max(min(positive) / 3, 1e-6) if positive else 1e-4
    grouped = len(tables) > 1
    for i, (name, table) in enumerate(tables.items()):
        color = method_color(name) if name in METHODS or name == DENSE else PALETTE[i % len(PALETTE)]
        shown = method_label(name) if name in METHODS or name == DENSE else name
        layer_names = [n.removesuffix(".weight") for n in table["name"]]
        effective = table["effective_density"] if "effective_density" in table else table["density"]
        effective_kept = table["effective_kept"] if "effective_kept" in table else table["kept"]
        hover = [f"<b>{n}</b> ({shown})<br>kept {k:,} of {t:,} = {percent(d)}<br>connected {ek:,} = {percent(e)}"
                 for n, k, t, d, ek, e in zip(layer_names, table["kept"], table["total"], table["density"],
                                              effective_kept, effective)]
        fig.add_trace(go.Bar(
            x=layer_names, y=list(table["density"]), name=shown, marker_color=color, offsetgroup=str(i),
            text=[f"{k:,}" for k in table["kept"]], textposition="outside", cliponaxis=False,
            hovertext=hover, hoverinfo="text", legendgroup=str(i),
            customdata=list(zip(table["kept"], table["total"]))))
        # Only where a visible share is disconnected (a few dead-end weights are normal at high sparsity).
        lower = [(n, e) for n, d, e in zip(layer_names, table["density"], effective) if d > 0 and e < 0.9 * d]
        if lower:
            fig.add_trace(go.Scatter(
                x=[n for n, _ in lower], y=[max(e, floor) if log_scale else e for _, e in lower], mode="markers",
                name=f"{shown}: connected" if grouped else "connected (effective) density",
                marker=dict(symbol="diamond", size=10, color="white", line=dict(color=color, width=2)),
                offsetgroup=str(i), legendgroup=str(i), hoverinfo="skip"))
        collapsed = [n for n, k in zip(layer_names, table["kept"]) if k == 0]
        if collapsed:
            fig.add_trace(go.Scatter(
                x=collapsed, y=[floor if log_scale else 0.0] * len(collapsed), mode="markers+text",
                name=f"{shown}: collapsed layer" if grouped else "collapsed layer (0 weights kept)",
                marker=dict(symbol="x", size=14, color=COLLAPSE_COLOR, line=dict(width=1, color=COLLAPSE_COLOR)),
                text=["collapsed"] * len(collapsed), textposition="top center",
                textfont=dict(color=COLLAPSE_COLOR, size=11), offsetgroup=str(i), legendgroup=str(i), cliponaxis=False,
                hovertext=[f"<b>{n}</b> ({shown}): no weights kept" for n in collapsed], hoverinfo="text"))
    yaxis: dict[str, Any] = dict(title="density (fraction of weights kept)", tickformat=".1%" if log_scale else ".0%",
                                 gridcolor="#E6E9EF", zeroline=False)
    if log_scale:
        yaxis.update(type="log", range=[math.log10(floor) - 0.2, 0.35], tickformat=".2~%")
    else:
        top = max(positive) if positive else 1.0
        yaxis.update(range=[0, min(1.0, top) * 1.18 + 0.02])
    legend = len(fig.data) > 1
    fig.update_layout(barmode="group", scattermode="group", yaxis=yaxis, xaxis=dict(title="layer"),
                      showlegend=legend, legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0), bargap=0.25,
                      margin=dict(l=10, r=10, t=40 if legend else 20, b=10), height=380, font=FONT,
                      uirevision=uirevision, plot_bgcolor="white")
    return fig


# ---- training curves --------------------------------------------------------------------------------
SEARCH_PHASE = "search"   # runner.SEARCH_PHASE: metric rows of a mask search's rounds (IMP, GemMiner)


def split_metrics(metrics: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, mask-search rows) of a run's metrics: methods that train to find their masks record
    each round of the search as a row with phase 'search' (and no epoch) before the run's own training."""
    if metrics is None or metrics.empty:
        empty = pd.DataFrame(columns=list(metrics.columns) if metrics is not None else [])
        return (metrics if metrics is not None else empty), empty
    search = metrics["phase"].eq(SEARCH_PHASE) if "phase" in metrics else pd.Series(False, index=metrics.index)
    training = metrics[~search & metrics["epoch"].notna()] if "epoch" in metrics else metrics[~search]
    return training, metrics[search]


def training_curves(metrics: pd.DataFrame | Mapping[str, pd.DataFrame], chance: float | None = None,
                    uirevision: str = "training") -> go.Figure:
    """Loss (train solid, test dashed) and test accuracy against epochs, side by side.

    `metrics` is a run's metric rows (`Store.metrics`: epoch, train_loss, test_loss, test_accuracy), or a
    mapping of labels to several runs' rows, drawn in different colours. `chance` draws the accuracy of
    guessing (1 / classes) as a dotted line. The rounds of a mask search (IMP, GemMiner) stored among the
    metrics are left out: they are not training epochs of the run (see `split_metrics`).
    """
    runs = {"": metrics} if isinstance(metrics, pd.DataFrame) else dict(metrics)
    runs = {name: None if rows is None else split_metrics(rows)[0] for name, rows in runs.items()}
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Test accuracy"), horizontal_spacing=0.1)
    several = len(runs) > 1
    for i, (name, rows) in enumerate(runs.items()):
        color = PALETTE[i % len(PALETTE)] if several else PALETTE[0]
        prefix = f"{name}: " if several else ""
        if rows is None or rows.empty:
            continue
        rows = rows.sort_values("epoch", kind="stable")
        train = rows[rows["train_loss"].notna()]
        test = rows[rows["test_accuracy"].notna()]
        fig.add_trace(go.Scatter(x=list(train["epoch"]), y=list(train["train_loss"]), mode="lines",
                                 name=f"{prefix}train loss", line=dict(color=color, width=2), legendgroup=str(i),
                                 hovertemplate="epoch %{x:.2f}<br>train loss %{y:.3f}<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=list(test["epoch"]), y=list(test["test_loss"]), mode="lines+markers",
                                 name=f"{prefix}test loss", line=dict(color=color, width=2, dash="dash"),
                                 marker=dict(size=6), legendgroup=str(i),
                                 hovertemplate="epoch %{x}<br>test loss %{y:.3f}<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=list(test["epoch"]), y=list(test["test_accuracy"]), mode="lines+markers",
                                 name=f"{prefix}test accuracy", line=dict(color=color, width=2.5),
                                 marker=dict(size=7), legendgroup=str(i),
                                 hovertemplate="epoch %{x}<br>test accuracy %{y:.1%}<extra></extra>"), row=1, col=2)
    if chance is not None:
        epochs = [e for rows in runs.values() if rows is not None and not rows.empty for e in rows["epoch"]]
        right = max(max(epochs, default=1), 1)
        fig.add_trace(go.Scatter(x=[0, right], y=[chance, chance], mode="lines", name=f"chance ({percent(chance)})",
                                 line=dict(color="#999999", dash="dot", width=1.5), hoverinfo="skip"), row=1, col=2)
    fig.update_xaxes(title_text="epoch", gridcolor="#E6E9EF", zeroline=False)
    fig.update_yaxes(title_text="cross-entropy", gridcolor="#E6E9EF", zeroline=False, row=1, col=1)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", range=[0, 1.02], gridcolor="#E6E9EF", row=1, col=2)
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=10), font=FONT, uirevision=uirevision,
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0), plot_bgcolor="white")
    return fig


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


def tradeoff_chart(table: pd.DataFrame, metric: str = "final_test_accuracy", chance: float | None = None,
                   uirevision: str = "tradeoff") -> go.Figure:
    """Accuracy against compression (log x-axis), one line per method with a mean ± std band over seeds,
    the dense baseline as a horizontal line, and a red-edged ✕ on every cell whose network collapsed.

    `table` has one row per finished (or pending) cell: method, sparsity, seed, `metric`, collapsed. Rows
    whose metric is still empty are skipped, so the chart fills in as a sweep runs.
    """
    summary = tradeoff_summary(table, metric)
    fig = go.Figure()
    sparse = summary[summary["method"] != DENSE]
    # Every cell of the grid, finished or not, fixes the axis, so the chart does not jump as it fills in.
    planned = table.loc[table["method"] != DENSE, "sparsity"] if "sparsity" in table and len(table) else []
    xs = sorted({round(1.0 / (1.0 - float(s)), 6) for s in planned if 0 < float(s) < 1})
    order = list(dict.fromkeys(table["method"])) if "method" in table else []
    for method in sorted(sparse["method"].unique(), key=lambda m: order.index(m) if m in order else len(order)):
        rows = sparse[sparse["method"] == method]
        rows = rows.sort_values("compression")
        color = method_color(method)
        label = method_label(method)
        x = list(rows["compression"])
        if (rows["seeds"] > 1).any():
            fig.add_trace(go.Scatter(x=x, y=list(rows["mean"] - rows["std"]), mode="lines", line=dict(width=0),
                                     legendgroup=method, showlegend=False, hoverinfo="skip", name=f"{label} − std"))
            fig.add_trace(go.Scatter(x=x, y=list(rows["mean"] + rows["std"]), mode="lines", line=dict(width=0),
                                     fill="tonexty", fillcolor=_rgba(color, 0.18), legendgroup=method,
                                     showlegend=False, hoverinfo="skip", name=f"{label} + std"))
        fig.add_trace(go.Scatter(
            x=x, y=list(rows["mean"]), mode="lines+markers", name=label, legendgroup=method,
            line=dict(color=color, width=2.5), marker=dict(size=8, color=color),
            customdata=list(zip(rows["sparsity"], rows["std"], rows["seeds"])),
            hovertemplate=(f"<b>{label}</b><br>compression %{{x:,.0f}}× (%{{customdata[0]:.2%}} removed)<br>"
                           "accuracy %{y:.1%} ± %{customdata[1]:.1%} over %{customdata[2]} seed(s)<extra></extra>")))
    if "collapsed" in table and not table.empty:
        cells = table[table["collapsed"].fillna(False).astype(bool) & table[metric].notna()
                      & (table["method"] != DENSE)]
        if not cells.empty:
            fig.add_trace(go.Scatter(
                x=list(1.0 / (1.0 - cells["sparsity"])), y=list(cells[metric]), mode="markers",
                name="collapsed network (a layer kept no weights)",
                marker=dict(symbol="x", size=13, color=[method_color(m) for m in cells["method"]],
                            line=dict(width=2, color=COLLAPSE_COLOR)),
                hovertext=[f"<b>{method_label(m)}</b> seed {s}: layer collapse" for m, s in
                           zip(cells["method"], cells["seed"] if "seed" in cells else [""] * len(cells))],
                hoverinfo="text+y"))
    dense = summary[summary["method"] == DENSE]
    left, right = (min(xs) / 1.5, max(xs) * 1.5) if xs else (1.0, 10.0)
    if not dense.empty:
        mean, std, seeds = float(dense["mean"].mean()), float(dense["std"].mean()), int(dense["seeds"].sum())
        fig.add_trace(go.Scatter(x=[left, right], y=[mean, mean], mode="lines",
                                 name=f"dense baseline ({percent(mean)})", line=dict(color=DENSE_COLOR, dash="dash"),
                                 hovertemplate=f"dense baseline: %{{y:.1%}} ± {std:.1%} over {seeds} seed(s)"
                                               "<extra></extra>"))
    if chance is not None:
        fig.add_trace(go.Scatter(x=[left, right], y=[chance, chance], mode="lines", name=f"chance ({percent(chance)})",
                                 line=dict(color="#999999", dash="dot", width=1.5), hoverinfo="skip"))
    ticks = xs
    fig.update_layout(
        xaxis=dict(type="log", title="compression ratio (log scale) · % of weights removed", gridcolor="#E6E9EF",
                   tickvals=ticks or None,
                   ticktext=[f"{_count(x)}×<br>{percent(1 - 1 / x)}" for x in ticks] if ticks else None,
                   range=[math.log10(left), math.log10(right)]),
        yaxis=dict(title="test accuracy" if metric.endswith("accuracy") else metric,
                   tickformat=".0%" if metric.endswith("accuracy") else None, gridcolor="#E6E9EF", zeroline=False,
                   range=[0, 1.02] if metric.endswith("accuracy") else None),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0), height=440, font=FONT,
        margin=dict(l=10, r=10, t=40, b=10), uirevision=uirevision, plot_bgcolor="white")
    return fig


# ---- layer collapse -------------------------------------------------------------------------------------
def critical_compression_bars(df: pd.DataFrame) -> go.Figure:
    """Each method's critical compression (the largest 10^x with no collapsed layer), highest first.
    `df` has columns method and log_compression (and optionally max_log_compression: the search limit,
    drawn as a dotted line: a method at the limit never collapsed within it)."""
    rows = df.sort_values("log_compression", ascending=False)
    fig = go.Figure(go.Bar(
        x=[method_label(m) for m in rows["method"]], y=list(rows["log_compression"]),
        marker_color=[method_color(m) for m in rows["method"]],
        text=[f"10^{x:.1f}<br>({_count(10 ** x)}×)" for x in rows["log_compression"]], textposition="auto",
        insidetextanchor="end", cliponaxis=False,
        hovertemplate="<b>%{x}</b><br>collapses beyond compression 10^%{y:.2f}<extra></extra>", name="critical"))
    top = float(rows["log_compression"].max()) if len(rows) else 1.0
    if "max_log_compression" in df and len(df):
        limit = float(df["max_log_compression"].max())
        fig.add_hline(y=limit, line=dict(color="#999999", dash="dot"),
                      annotation_text=f"search limit 10^{limit:.1f} (one weight left)", annotation_position="top right")
        top = max(top, limit)
    fig.update_layout(yaxis=dict(title="critical compression (log₁₀)", range=[0, top * 1.25 + 0.1],
                                 gridcolor="#E6E9EF"),
                      xaxis=dict(title="method"), height=380, font=FONT, margin=dict(l=10, r=10, t=30, b=10),
                      showlegend=False, plot_bgcolor="white")
    return fig


def density_heatmap(df: pd.DataFrame, log_compression_level: float | None = None) -> go.Figure:
    """Per-layer density of every method at one compression level: methods down, layers across, colour
    on a log scale, ✕ where a layer collapsed (kept nothing).

    `df` is long: method, log_compression, layer, density (one row per method x level x layer). The level
    nearest to `log_compression_level` is drawn (default: the highest).
    """
    levels = sorted(df["log_compression"].unique())
    if not levels:
        raise ValueError("no densities to draw")
    target = levels[-1] if log_compression_level is None else log_compression_level
    level = min(levels, key=lambda v: abs(v - target))
    rows = df[df["log_compression"] == level]
    methods = list(dict.fromkeys(rows["method"]))
    layers = list(dict.fromkeys(rows["layer"]))
    cell = {(m, l): d for m, l, d in zip(rows["method"], rows["layer"], rows["density"])}
    floor = -4.0
    z, text = [], []
    for m in methods:
        values = [cell.get((m, l), math.nan) for l in layers]
        z.append([max(math.log10(v), floor) if v and v > 0 else None for v in values])
        text.append(["✕" if v == 0 else ("" if v is None or (isinstance(v, float) and math.isnan(v)) else percent(v))
                     for v in values])
    ticks = list(range(int(floor), 1))
    fig = go.Figure(go.Heatmap(
        z=z, x=[l.removesuffix(".weight") for l in layers], y=[method_label(m) for m in methods], text=text,
        texttemplate="%{text}", textfont=dict(size=12), zmin=floor, zmax=0, colorscale="Viridis",
        colorbar=dict(title="density", tickvals=ticks, ticktext=[percent(10.0 ** t) for t in ticks]),
        hovertemplate="<b>%{y}</b> · %{x}<br>density %{text}<extra></extra>", xgap=2, ygap=2))
    fig.update_layout(title=dict(text=f"compression 10^{level:.1f} ({percent(1 - 10 ** -level)} removed): "
                                      "✕ = layer collapsed", font=dict(size=14)),
                      xaxis=dict(title="layer (input → output)"), yaxis=dict(autorange="reversed"),
                      height=120 + 45 * len(methods), font=FONT, margin=dict(l=10, r=10, t=50, b=10),
                      plot_bgcolor="#F0F0F0")
    return fig


def conservation_chart(flows: pd.DataFrame | Mapping[str, pd.DataFrame]) -> go.Figure:
    """SynFlow's conservation law per layer: each layer's summed SynFlow score divided by the network's
    synaptic flow R (`analysis.layer_synaptic_flow`: name, total_score, synaptic_flow, ratio). A ratio of
    1 in every layer means the flow is conserved. Several tables (a mapping of labels) are grouped."""
    tables = {"": flows} if isinstance(flows, pd.DataFrame) else dict(flows)
    fig = go.Figure()
    for i, (label, table) in enumerate(tables.items()):
        fig.add_trace(go.Bar(
            x=[n.removesuffix(".weight") for n in table["name"]], y=list(table["ratio"]), name=label or "layer",
            marker_color=PALETTE[i % len(PALETTE)], customdata=list(zip(table["total_score"], table["synaptic_flow"])),
            hovertemplate="<b>%{x}</b><br>sum of scores %{customdata[0]:.4g}<br>R = %{customdata[1]:.4g}<br>"
                          "ratio %{y:.4f}<extra></extra>"))
    fig.add_hline(y=1.0, line=dict(color=DENSE_COLOR, dash="dash"), annotation_text="conserved: sum = R",
                  annotation_position="top right")
    ratios = [r for t in tables.values() for r in t["ratio"] if r == r]
    low = min(ratios + [1.0])
    high = max(ratios + [1.0])
    fig.update_layout(barmode="group", yaxis=dict(title="layer's summed score / R", range=[min(0, low), high * 1.15],
                                                   gridcolor="#E6E9EF"),
                      xaxis=dict(title="layer (input → output)"), showlegend=len(tables) > 1, height=340, font=FONT,
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
                      margin=dict(l=10, r=10, t=40, b=10), plot_bgcolor="white")
    return fig


# ---- lottery tickets: IMP and GemMiner -----------------------------------------------------------------
def _compression_ticks(densities: Sequence[float]) -> tuple[list[float], list[str]]:
    """Tick positions (compression ratios) and texts ('dense'; '4.6×<br>78% removed') for these densities."""
    xs = sorted({float(f"{1.0 / d:.3g}") for d in densities if d and d > 0})   # 9.9998x and 10x: one tick
    return xs, ["dense" if x == 1 else f"{_count(x)}×<br>{percent(1 - 1 / x)} removed" for x in xs]


def imp_rounds_chart(rounds: pd.DataFrame, planned: Sequence[float] = (), ticket: Mapping[str, float] | None = None,
                     others: Mapping[str, Mapping[str, float]] | None = None, chance: float | None = None,
                     uirevision: str = "imp-rounds") -> go.Figure:
    """IMP's rounds: the test accuracy of each round's trained network against its sparsity (compression ratio,
    log axis). Round 0 is the dense network; every later round retrains the survivors of the one before,
    rewound to their initial values.

    `rounds`: columns round, density, trained_test_accuracy (the search rows of an IMP run; may be empty).
    `planned`: every density the search passes through (1.0 down to the target), so that the axis is fixed
    while the rounds come in, one tick per round. `ticket`: {"density", "accuracy"} of the final ticket,
    trained by the run (a star at the end of the line). `others`: label -> {"density", "accuracy"} of other
    methods' masks (e.g. GemMiner's ticket), drawn as diamonds in the method's colour when the label is a
    method name.
    """
    fig = go.Figure()
    rows = rounds.sort_values("round") if len(rounds) else rounds
    rows = rows[rows["trained_test_accuracy"].notna()] if len(rows) else rows
    color = method_color("imp")
    xs = [1.0 / float(d) for d in rows["density"]] if len(rows) else []
    ys = [float(a) for a in rows["trained_test_accuracy"]] if len(rows) else []
    hover = [f"<b>round {int(r)}</b>{' (dense)' if float(d) >= 1 else ''}<br>{percent(float(d))} of the weights "
             f"kept<br>trained: test accuracy {percent(float(a))}"
             for r, d, a in zip(rows["round"], rows["density"], rows["trained_test_accuracy"])] if len(rows) else []
    if ticket is not None and ticket.get("accuracy") is not None and not math.isnan(float(ticket["accuracy"])):
        xs.append(1.0 / float(ticket["density"]))
        ys.append(float(ticket["accuracy"]))
        hover.append(f"<b>the ticket</b>: {percent(float(ticket['density']))} kept, rewound and trained<br>"
                     f"test accuracy {percent(float(ticket['accuracy']))}")
    if xs:
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name="IMP: train, prune, rewind, repeat",
                                 line=dict(color=color, width=2.5), marker=dict(size=9, color=color),
                                 hovertext=hover, hoverinfo="text"))
    if ticket is not None and ticket.get("accuracy") is not None and not math.isnan(float(ticket["accuracy"])):
        fig.add_trace(go.Scatter(x=[1.0 / float(ticket["density"])], y=[float(ticket["accuracy"])], mode="markers",
                                 name="IMP's ticket (final mask, trained)",
                                 marker=dict(symbol="star", size=18, color=color, line=dict(color="white", width=1)),
                                 hoverinfo="skip"))
    for label, point in (others or {}).items():
        if point.get("accuracy") is None or math.isnan(float(point["accuracy"])):
            continue
        other_color = method_color(label) if label in METHODS else PALETTE[len(fig.data) % len(PALETTE)]
        name = method_label(label) if label in METHODS else label
        fig.add_trace(go.Scatter(
            x=[1.0 / float(point["density"])], y=[float(point["accuracy"])], mode="markers",
            name=f"{name} (same sparsity)",
            marker=dict(symbol="diamond", size=14, color=other_color, line=dict(color="white", width=1)),
            hovertemplate=f"<b>{name}</b><br>{percent(float(point['density']))} kept<br>test accuracy "
                          f"{percent(float(point['accuracy']))}<extra></extra>"))
    ticks, texts = _compression_ticks(list(planned) or [1.0 / x for x in xs] or [1.0])
    left, right = min(ticks + xs) / 1.25, max(ticks + xs) * 1.25
    if chance is not None:
        fig.add_trace(go.Scatter(x=[left, right], y=[chance, chance], mode="lines", name=f"chance ({percent(chance)})",
                                 line=dict(color="#999999", dash="dot", width=1.5), hoverinfo="skip"))
    fig.update_layout(
        xaxis=dict(type="log", title="sparsity of the round's network (compression, log scale)", tickvals=ticks,
                   ticktext=texts, range=[math.log10(left), math.log10(right)], gridcolor="#E6E9EF"),
        yaxis=dict(title="test accuracy after training", tickformat=".0%", range=[0, 1.02], gridcolor="#E6E9EF",
                   zeroline=False),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0), height=400, font=FONT,
        margin=dict(l=10, r=10, t=40, b=10), uirevision=uirevision, plot_bgcolor="white")
    return fig


def gemminer_progress_chart(rows: pd.DataFrame, target_density: float | None = None, total_steps: int | None = None,
                            chance: float | None = None, uirevision: str = "gemminer") -> go.Figure:
    """GemMiner's score learning, event by event. Left: the batch accuracy of the mined subnetwork while its
    weights stay frozen at their initial values (only the scores learn), averaged since the previous pruning
    event (its loss in the hover). Right: the fraction of weights still in the running after each pruning
    event (log axis) down to the target density, and the fraction of those whose score is above the
    threshold (the weights the forward pass uses).

    `rows`: the search rows of a GemMiner run: search_step, density, active_fraction, mining_loss,
    mining_accuracy. `total_steps` fixes the step axis while the search runs.
    """
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("Accuracy of the mined subnetwork (weights frozen)",
                                        "Weights still in the running"))
    color = method_color("gemminer")
    rows = rows.sort_values("search_step") if len(rows) else rows
    learned = rows[rows["mining_accuracy"].notna()] if len(rows) and "mining_accuracy" in rows else rows.iloc[0:0]
    if len(learned):
        fig.add_trace(go.Scatter(
            x=list(learned["search_step"]), y=list(learned["mining_accuracy"]), mode="lines+markers",
            name="batch accuracy while mining", line=dict(color=color, width=2.5), marker=dict(size=7),
            customdata=list(learned["mining_loss"]),
            hovertemplate="step %{x}<br>batch accuracy %{y:.1%}<br>loss %{customdata:.3f}<extra></extra>"),
            row=1, col=1)
    steps_right = max([float(total_steps or 0)] + [float(s) for s in rows["search_step"]] if len(rows) else
                      [float(total_steps or 0)]) or 1.0
    if chance is not None:
        fig.add_trace(go.Scatter(x=[0, steps_right], y=[chance, chance], mode="lines",
                                 name=f"chance ({percent(chance)})", line=dict(color="#999999", dash="dot", width=1.5),
                                 hoverinfo="skip"), row=1, col=1)
    if len(rows):
        fig.add_trace(go.Scatter(
            x=list(rows["search_step"]), y=list(rows["density"]), mode="lines+markers", line_shape="hv",
            name="weights still in the running", line=dict(color=color, width=2.5), marker=dict(size=7),
            hovertemplate="step %{x}<br>%{y:.2%} of the weights left<extra></extra>"), row=1, col=2)
        fig.add_trace(go.Scatter(
            x=list(rows["search_step"]), y=list(rows["active_fraction"]), mode="lines+markers",
            name="of those, score above 0.5 (used)", line=dict(color=color, width=1.5, dash="dot"),
            marker=dict(size=6, symbol="circle-open"),
            hovertemplate="step %{x}<br>%{y:.1%} of the remaining scores above the threshold<extra></extra>"),
            row=1, col=2)
    low = min([float(target_density or 1.0)] + ([float(d) for d in rows["density"]] if len(rows) else []))
    if target_density is not None:
        fig.add_trace(go.Scatter(x=[0, steps_right], y=[target_density, target_density], mode="lines",
                                 name=f"target: {percent(target_density)} kept", hoverinfo="skip",
                                 line=dict(color=DENSE_COLOR, dash="dash", width=1.5)), row=1, col=2)
    fig.update_xaxes(title_text="training step of the score learning", range=[0, steps_right * 1.03],
                     gridcolor="#E6E9EF", zeroline=False)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", range=[0, 1.02], gridcolor="#E6E9EF", row=1, col=1)
    bottom = max(low, 1e-6) / 1.4
    ticks = [m * 10.0 ** -e for e in range(0, 7) for m in (1, 0.5, 0.2) if m * 10.0 ** -e >= bottom]
    fig.update_yaxes(title_text="fraction of weights (log scale)", type="log", tickvals=ticks,
                     ticktext=[percent(t) for t in ticks], range=[math.log10(bottom), 0.05], gridcolor="#E6E9EF",
                     row=1, col=2)
    fig.update_layout(height=380, margin=dict(l=10, r=10, t=40, b=10), font=FONT, uirevision=uirevision,
                      legend=dict(orientation="h", yanchor="top", y=-0.22, x=0), plot_bgcolor="white")
    return fig


TICKET_COST_COLUMNS = ["method", "test_accuracy", "search_s", "train_s", "search_steps", "train_steps"]


def ticket_cost_chart(table: pd.DataFrame, uirevision: str = "ticket-cost") -> go.Figure:
    """Accuracy and cost of each method's ticket at one sparsity, side by side: the test accuracy; the wall
    time and the training steps, each split into finding the mask (solid) and training it (hatched).

    `table`: one row per method with columns method, test_accuracy, search_s, train_s, search_steps,
    train_steps (NaN where a run has not got that far yet).
    """
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.09,
                        subplot_titles=("Test accuracy", "Wall time (s)", "Training steps"))
    labels = [method_label(m) for m in table["method"]]
    colors = [method_color(m) for m in table["method"]]

    def values(column: str) -> list[float | None]:
        return [None if pd.isna(v) else float(v) for v in table[column]]

    accuracy = values("test_accuracy")
    fig.add_trace(go.Bar(x=labels, y=accuracy, marker_color=colors, name="test accuracy", showlegend=False,
                         text=[percent(a) if a is not None else "" for a in accuracy], textposition="outside",
                         cliponaxis=False, hovertemplate="<b>%{x}</b><br>test accuracy %{y:.1%}<extra></extra>"),
                  row=1, col=1)
    for col, (search, train, unit) in enumerate((("search_s", "train_s", "s"), ("search_steps", "train_steps", "")),
                                                start=2):
        found, trained = values(search), values(train)
        totals = [None if f is None and t is None else (f or 0.0) + (t or 0.0) for f, t in zip(found, trained)]
        texts = [("" if v is None else seconds_text(v) if unit == "s" else f"{v:,.0f}") for v in totals]
        fig.add_trace(go.Bar(x=labels, y=found, marker=dict(color=colors), name="finding the mask",
                             legendgroup="search", showlegend=col == 2,
                             hovertemplate="<b>%{x}</b><br>finding the mask: %{y:,.3~f}" + unit + "<extra></extra>"),
                      row=1, col=col)
        fig.add_trace(go.Bar(x=labels, y=trained, name="training the found mask", legendgroup="train",
                             showlegend=col == 2, text=texts, textposition="outside", cliponaxis=False,
                             marker=dict(color=[_rgba(c, 0.35) for c in colors], line=dict(color=colors, width=1.5),
                                         pattern=dict(shape="/", fgcolor=colors, size=6)),
                             hovertemplate="<b>%{x}</b><br>training the mask: %{y:,.3~f}" + unit + "<extra></extra>"),
                      row=1, col=col)
    fig.update_yaxes(tickformat=".0%", range=[0, 1.12], row=1, col=1)
    fig.update_yaxes(gridcolor="#E6E9EF", zeroline=False)
    fig.update_layout(barmode="stack", height=380, margin=dict(l=10, r=10, t=40, b=10), font=FONT,
                      uirevision=uirevision, legend=dict(orientation="h", yanchor="top", y=-0.12, x=0),
                      plot_bgcolor="white", bargap=0.35)
    return fig


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
VARIANT_COLORS = {"dense": DENSE_COLOR, "sparse": "#D55E00", "sparse_init": "#009E73", "lottery": METHOD_COLORS["imp"]}


def gradient_flow_chart(df: pd.DataFrame, uirevision: str = "gradient-flow") -> go.Figure:
    """Gradient flow along training, one colour per variant (dense, sparse with the standard initialisation,
    sparse with the sparsity-aware one, lottery ticket). Left: the norm of the masked gradient on held-out
    training images against epochs (log axis), its value at initialisation marked with a large dot. Right:
    the test accuracy after every epoch.

    `df` is `pc.gradient_flow`'s long table: variant, label, step, epoch, grad_norm, test_accuracy, density.
    """
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("Gradient norm (held-out training images)", "Test accuracy"))
    for i, (variant, rows) in enumerate(df.groupby("variant", sort=False)):
        rows = rows.sort_values("step")
        color = VARIANT_COLORS.get(variant, PALETTE[i % len(PALETTE)])
        label = str(rows["label"].iloc[0])
        density = float(rows["density"].iloc[0])
        name = f"{label} ({percent(density)} kept)" if density < 1 else label
        norms = rows["grad_norm"].clip(lower=1e-12)
        fig.add_trace(go.Scatter(x=list(rows["epoch"]), y=list(norms), mode="lines", name=name, legendgroup=variant,
                                 line=dict(color=color, width=2.5),
                                 hovertemplate=f"<b>{label}</b><br>epoch %{{x:.2f}}<br>gradient norm %{{y:.3g}}"
                                               "<extra></extra>"), row=1, col=1)
        first = rows.iloc[0]
        fig.add_trace(go.Scatter(x=[float(first["epoch"])], y=[max(float(first["grad_norm"]), 1e-12)], mode="markers",
                                 name=f"{label}: at initialisation", legendgroup=variant, showlegend=False,
                                 marker=dict(color=color, size=12, line=dict(color="white", width=1.5)),
                                 hovertemplate=f"<b>{label}</b> at initialisation<br>gradient norm %{{y:.3g}}"
                                               "<extra></extra>"), row=1, col=1)
        tested = rows[rows["test_accuracy"].notna()]
        fig.add_trace(go.Scatter(x=list(tested["epoch"]), y=list(tested["test_accuracy"]), mode="lines+markers",
                                 name=f"{label}: test accuracy", legendgroup=variant, showlegend=False,
                                 line=dict(color=color, width=2.5), marker=dict(size=7),
                                 hovertemplate=f"<b>{label}</b><br>epoch %{{x}}<br>test accuracy %{{y:.1%}}"
                                               "<extra></extra>"), row=1, col=2)
    fig.update_xaxes(title_text="epoch", gridcolor="#E6E9EF", zeroline=False)
    fig.update_yaxes(title_text="‖masked gradient‖ (log scale)", type="log", dtick=1, gridcolor="#E6E9EF",
                     row=1, col=1)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", range=[0, 1.02], gridcolor="#E6E9EF", row=1, col=2)
    fig.update_layout(height=400, margin=dict(l=10, r=10, t=40, b=10), font=FONT, uirevision=uirevision,
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0), plot_bgcolor="white")
    return fig


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
    return sentences


# ---- sanity checks (Frankle et al. 2021) -------------------------------------------------------------------
SANITY_ORDER = ("none", "shuffle", "reinit", "invert")


def _wrap(text: str, width: int = 16) -> str:
    """Break a label into lines of about `width` characters (<br>) for a category axis."""
    lines, line = [], ""
    for word in str(text).split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "<br>".join(lines + [line])


def sanity_chart(table: pd.DataFrame, tolerance: float = 0.01, chance: float | None = None,
                 uirevision: str = "sanity") -> go.Figure:
    """The sanity checks side by side: the test accuracy of the method's own mask and of its shuffled,
    reinitialised and inverted versions. The method's bar is in its colour; a check that did not hurt
    (accuracy within `tolerance` of the method's) is green, one that hurt is red. A dashed line marks the
    method's accuracy; a variant without a result yet keeps its place, without a bar.

    `table`: variant, label, test_accuracy (`pc.sanity_checks`' table, or the same built from the store);
    `table.attrs["method"]` gives the colour of the method's bar.
    """
    order = [v for v in SANITY_ORDER if v in set(table["variant"])] + \
        [v for v in table["variant"] if v not in SANITY_ORDER]
    rows = table.set_index("variant").loc[order]
    accuracy = [None if pd.isna(a) else float(a) for a in rows["test_accuracy"]]
    own = accuracy[order.index("none")] if "none" in order else None
    method = table.attrs.get("method")
    colors, texts = [], []
    for variant, value in zip(order, accuracy):
        if variant == "none":
            colors.append(method_color(method) if method else DENSE_COLOR)
            texts.append(percent(value) if value is not None else "")
        elif value is None or own is None:
            colors.append("#BBBBBB")
            texts.append(percent(value) if value is not None else "")
        else:
            colors.append("#2E7D32" if value >= own - tolerance else COLLAPSE_COLOR)
            texts.append(f"{percent(value)}<br>({100 * (value - own):+.1f} pts)")
    labels = [_wrap(label) for label in rows["label"]]
    fig = go.Figure(go.Bar(x=labels, y=accuracy, marker_color=colors, text=texts, textposition="outside",
                           cliponaxis=False, name="test accuracy", showlegend=False,
                           hovertemplate="<b>%{x}</b><br>test accuracy %{y:.1%}<extra></extra>"))
    # Reference lines across the whole width, named in the legend by an empty trace of the same style
    # (annotations on the lines would collide with the bars' texts).
    for value, name, line in ((own, "method's own mask", dict(color=DENSE_COLOR, dash="dash", width=1.5)),
                              (chance, "chance", dict(color="#999999", dash="dot", width=1.5))):
        if value is None:
            continue
        fig.add_hline(y=value, line=line)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=line, name=f"{name} ({percent(value)})",
                                 hoverinfo="skip"))
    fig.update_layout(yaxis=dict(title="test accuracy after training", tickformat=".0%", range=[0, 1.15],
                                 gridcolor="#E6E9EF", zeroline=False),
                      xaxis=dict(title=None, categoryorder="array", categoryarray=labels),
                      showlegend=len(fig.data) > 1, legend=dict(orientation="h", yanchor="top", y=-0.28, x=0),
                      height=440, margin=dict(l=10, r=10, t=30, b=10), font=FONT, uirevision=uirevision,
                      plot_bgcolor="white", bargap=0.35)
    return fig
