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

from .config import DENSE
from .methods import METHODS

# A colour-blind-friendly qualitative palette (Okabe & Ito), then a few more for long method lists.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8C564B", "#9467BD", "#17BECF",
           "#F0E442", "#7F7F7F", "#BCBD22"]
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
                 "random": "#7F7F7F", "random_erk": "#BCBD22", "iter_snip": "#E69F00", "force": "#56B4E9"}


def method_color(name: str) -> str:
    """The same colour for a method on every page (fixed for known methods, else by registry order)."""
    if name == DENSE:
        return DENSE_COLOR
    if name in METHOD_COLORS:
        return METHOD_COLORS[name]
    names = [n for n in METHODS if n not in METHOD_COLORS]
    index = names.index(name) if name in names else len(names) + sum(map(ord, str(name)))
    return PALETTE[index % len(PALETTE)]


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
def training_curves(metrics: pd.DataFrame | Mapping[str, pd.DataFrame], chance: float | None = None,
                    uirevision: str = "training") -> go.Figure:
    """Loss (train solid, test dashed) and test accuracy against epochs, side by side.

    `metrics` is a run's metric rows (`Store.metrics`: epoch, train_loss, test_loss, test_accuracy), or a
    mapping of labels to several runs' rows, drawn in different colours. `chance` draws the accuracy of
    guessing (1 / classes) as a dotted line.
    """
    runs = {"": metrics} if isinstance(metrics, pd.DataFrame) else dict(metrics)
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
