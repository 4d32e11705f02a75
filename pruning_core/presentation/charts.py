"""The dashboard's charts: plain functions, pandas DataFrame in, Plotly figure out.

Nothing here imports Streamlit, so tests (and notebooks) call these directly. Every figure uses one colour
per method (`units.method_color`), SVG traces only (error bands need `fill="tonexty"`, which WebGL traces
lack), and a fixed `uirevision` so that a live chart keeps the user's zoom when it is redrawn. The texts
beside the charts are in `findings`, the units and names in `units`; the charts of the studies (lottery
tickets, gradient flow, sanity checks) in `study_charts`, with this module's layout helpers.
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
from pruning_core.presentation.findings import split_metrics, tradeoff_summary
from pruning_core.presentation.units import (COLLAPSE_COLOR, DENSE_COLOR, PALETTE, count_text, method_color,
                                             method_label, percent, rgba)

FONT = dict(family="Inter, Source Sans Pro, Helvetica, Arial, sans-serif", size=13)
# Room the layouts leave (pixels): above the plot for the (hover) toolbar and subplot titles, below it for the
# x-axis ticks and title before a legend starts, and per row of a legend.
TOOLBAR_SPACE = 34
TITLE_LINE = 20
AXIS_SPACE = 64
LEGEND_ROW = 24
CHART_WIDTH = 440   # half the page beside the sidebar at 1400 px: the narrowest place charts stand side by side


def legend_below(fig: go.Figure, height: int, width: int = CHART_WIDTH, top: int = 20) -> go.Figure:
    """Put the legend under the plot, in a bottom margin sized for its rows, and grow the figure by as much.

    The legend is placed in container coordinates (from the figure's bottom edge), so it can neither cover
    the x-axis title nor be cut off, however many entries it has; entries get a fixed width so the number of
    rows is known here (estimated for a chart `width` pixels wide)."""
    names = [t.name or "" for t in fig.data if t.showlegend is not False]
    if not names or fig.layout.showlegend is False:
        fig.update_layout(height=height, margin=dict(l=10, r=10, t=top, b=AXIS_SPACE - 14))
        return fig
    entry = 46 + 7 * max(len(n) for n in names)
    per_row = max(1, (width - 20) // entry)
    rows = math.ceil(len(names) / per_row)
    bottom = AXIS_SPACE + LEGEND_ROW * rows
    fig.update_layout(height=height + LEGEND_ROW * rows, margin=dict(l=10, r=10, t=top, b=bottom),
                      legend=dict(orientation="h", yref="container", yanchor="bottom", y=0.0, x=0, xanchor="left",
                                  entrywidth=entry, entrywidthmode="pixels", traceorder="normal"))
    return fig


def subplot_top(titles: Sequence[str]) -> int:
    """Top margin for subplot titles (lines split by <br>) with the toolbar above them, not over them."""
    lines = max([t.count("<br>") + 1 for t in titles] or [0])
    return TOOLBAR_SPACE + TITLE_LINE * lines


def log_ticks(low: float) -> list[float]:
    """Tick values from `low` up to 1 (100%) on a log axis: every decade, with 2 and 5 between decades when
    the axis spans at most three of them; never above 1, since a density or fraction cannot exceed it."""
    decades = max(1, math.ceil(-math.log10(low)))
    steps = (1.0, 0.5, 0.2) if decades <= 3 else (1.0,)
    return sorted(m * 10.0 ** -e for e in range(0, decades + 1) for m in steps if low <= m * 10.0 ** -e <= 1.0)


BAR_GAP = 0.25


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
            text=[f"{k:,}" if k else "" for k in table["kept"]], textposition="outside", cliponaxis=False,
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
                x=collapsed, y=[floor if log_scale else 0.0] * len(collapsed), mode="markers",
                name=f"{shown}: collapsed layer" if grouped else "collapsed layer (0 weights kept)",
                marker=dict(symbol="x", size=14, color=COLLAPSE_COLOR, line=dict(width=1, color=COLLAPSE_COLOR)),
                offsetgroup=str(i), legendgroup=str(i), cliponaxis=False,
                hovertext=[f"<b>{n}</b> ({shown}): no weights kept" for n in collapsed], hoverinfo="text"))
            # The label goes above its mark (an annotation, shifted by pixels, so it never sits on the ✕),
            # at the mark's place in the group; upright when several groups share a layer's width.
            position = {n: k for k, n in enumerate(layer_names)}
            offset = (i - (len(tables) - 1) / 2) * (1 - BAR_GAP) / len(tables)
            for n in collapsed:
                fig.add_annotation(x=position[n] + offset, y=math.log10(floor) if log_scale else 0.0,
                                   text="collapsed", showarrow=False, yanchor="bottom", yshift=10,
                                   textangle=-90 if grouped else 0, font=dict(color=COLLAPSE_COLOR, size=11))
    yaxis: dict[str, Any] = dict(title="density (fraction of weights kept)", tickformat=".1%" if log_scale else ".0%",
                                 gridcolor="#E6E9EF", zeroline=False)
    if log_scale:
        # The axis ends at 100%: a density never exceeds it (the kept counts above the bars sit in the margin).
        low = 10 ** (math.log10(floor) - 0.2)
        ticks = log_ticks(low)
        yaxis.update(type="log", range=[math.log10(low), 0.0], tickvals=ticks, ticktext=[percent(t) for t in ticks])
    else:
        top = max(positive) if positive else 1.0
        yaxis.update(range=[0, min(1.0, top * 1.18 + 0.02)])
    fig.update_layout(barmode="group", scattermode="group", yaxis=yaxis, xaxis=dict(title="layer"),
                      showlegend=len(fig.data) > 1, bargap=BAR_GAP, font=FONT, uirevision=uirevision,
                      plot_bgcolor="white")
    return legend_below(fig, height=380, top=30)


# ---- training curves --------------------------------------------------------------------------------
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
    # Wide spacing: in half a page the accuracy axis title would otherwise sit on the loss plot.
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Test accuracy"), horizontal_spacing=0.18)
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
    losses = [float(v) for rows in runs.values() if rows is not None and not rows.empty
              for column in ("train_loss", "test_loss") for v in rows[column].dropna()]
    fig.update_yaxes(title_text="cross-entropy", gridcolor="#E6E9EF", zeroline=False, range=loss_range(losses),
                     row=1, col=1)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", range=[0, 1.02], gridcolor="#E6E9EF", row=1, col=2)
    fig.update_layout(font=FONT, uirevision=uirevision, plot_bgcolor="white")
    return legend_below(fig, height=380, top=subplot_top(["Loss"]))


MIN_LOSS_SPAN = 0.5


def loss_range(losses: Sequence[float]) -> list[float]:
    """The loss axis: from 0 to a little above the highest loss, and at least `MIN_LOSS_SPAN` high, so that a
    collapsed network's flat loss at chance (ln 10 = 2.303, varying in the third decimal) reads as flat
    instead of being zoomed into dramatic-looking noise."""
    finite = [v for v in losses if math.isfinite(v)]
    top = max(finite, default=0.0)
    return [0.0, max(top * 1.08, MIN_LOSS_SPAN)]


# ---- accuracy vs compression --------------------------------------------------------------------------
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
                                     fill="tonexty", fillcolor=rgba(color, 0.18), legendgroup=method,
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
                   ticktext=[f"{count_text(x)}×<br>{percent(1 - 1 / x)}" for x in ticks] if ticks else None,
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
        text=[f"10^{x:.1f}<br>({count_text(10 ** x)}×)" for x in rows["log_compression"]], textposition="auto",
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


# ---- dynamic sparse training (SET, RigL) ---------------------------------------------------------------------
def mask_changes_chart(updates: pd.DataFrame, uirevision: str = "mask-changes") -> go.Figure:
    """How much of the mask moved at each update of a SET / RigL run: the weights moved to new positions per
    layer, stacked, at every update step, and (right axis) the share of all kept weights that moved.

    `updates` is `findings.mask_updates`' table: step, layer, kept, total, dropped, moved, drop_fraction."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    layers = list(dict.fromkeys(updates["layer"]))
    for i, layer in enumerate(layers):
        rows = updates[updates["layer"] == layer].sort_values("step")
        name = str(layer).removesuffix(".weight")
        fig.add_trace(go.Bar(x=list(rows["step"]), y=list(rows["moved"]), name=name,
                             marker_color=PALETTE[i % len(PALETTE)], customdata=list(rows["kept"]),
                             hovertemplate=f"<b>{name}</b><br>step %{{x}}<br>%{{y:,}} of %{{customdata:,}} kept "
                                           "weights moved<extra></extra>"), secondary_y=False)
    per_step = updates.groupby("step", sort=True).agg(moved=("moved", "sum"), kept=("kept", "sum"))
    share = (per_step["moved"] / per_step["kept"].where(per_step["kept"] > 0)).fillna(0.0)
    fig.add_trace(go.Scatter(x=list(per_step.index), y=list(share), mode="lines+markers", name="share of kept moved",
                             line=dict(color=DENSE_COLOR, width=2), marker=dict(size=6),
                             hovertemplate="step %{x}<br>%{y:.1%} of the kept weights moved<extra></extra>"),
                  secondary_y=True)
    fig.update_xaxes(title_text="training step", gridcolor="#E6E9EF", zeroline=False)
    fig.update_yaxes(title_text="weights moved", gridcolor="#E6E9EF", rangemode="tozero", secondary_y=False)
    fig.update_yaxes(title_text="share of kept weights", tickformat=".0%", rangemode="tozero", showgrid=False,
                     secondary_y=True)
    fig.update_layout(barmode="stack", height=300, margin=dict(l=10, r=10, t=20, b=10), font=FONT,
                      uirevision=uirevision, legend=dict(orientation="h", yanchor="top", y=-0.25, x=0),
                      plot_bgcolor="white")
    return fig
