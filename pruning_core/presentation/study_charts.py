"""Charts of the studies (lottery tickets, gradient flow, sanity checks): pandas DataFrame in, Plotly figure out,
in the same style as `charts` (one colour per method, SVG traces, a fixed `uirevision`, legends below the plot).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from pruning_core.engine.methods import METHODS
from pruning_core.presentation.charts import CHART_WIDTH, FONT, legend_below, subplot_top
from pruning_core.presentation.units import (COLLAPSE_COLOR, DENSE_COLOR, PALETTE, VARIANT_COLORS, compression_ticks,
                                             method_color, method_label, percent, rgba, seconds_text, wrap_label)


# ---- lottery tickets: IMP and GemMiner -----------------------------------------------------------------
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
    ticks, texts = compression_ticks(list(planned) or [1.0 / x for x in xs] or [1.0])
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
    # Titles on two short lines: side by side in a narrow column, one long line ran into its neighbour.
    titles = ("Accuracy of the mined subnetwork<br>(weights frozen)", "Weights still<br>in the running")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14, subplot_titles=titles)
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
    fig.update_layout(font=FONT, uirevision=uirevision, plot_bgcolor="white")
    return legend_below(fig, height=380, top=subplot_top(titles))

def ticket_cost_chart(table: pd.DataFrame, uirevision: str = "ticket-cost") -> go.Figure:
    """Accuracy and cost of each method's ticket at one sparsity, side by side: the test accuracy; the wall
    time and the training steps, each split into finding the mask (solid) and training it (hatched).

    `table`: one row per method with columns method, test_accuracy, search_s, train_s, search_steps,
    train_steps (NaN where a run has not got that far yet).
    """
    titles = ("Test accuracy", "Wall time (s)", "Training steps")
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.09, subplot_titles=titles)
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
                             marker=dict(color=[rgba(c, 0.35) for c in colors], line=dict(color=colors, width=1.5),
                                         pattern=dict(shape="/", fgcolor=colors, size=6)),
                             hovertemplate="<b>%{x}</b><br>training the mask: %{y:,.3~f}" + unit + "<extra></extra>"),
                      row=1, col=col)
    fig.update_yaxes(tickformat=".0%", range=[0, 1.12], row=1, col=1)
    fig.update_yaxes(gridcolor="#E6E9EF", zeroline=False)
    fig.update_layout(barmode="stack", font=FONT, uirevision=uirevision, plot_bgcolor="white", bargap=0.35)
    return legend_below(fig, height=380, width=2 * CHART_WIDTH, top=subplot_top(titles))


# ---- gradient flow (Evci et al. 2022) --------------------------------------------------------------------
def gradient_flow_chart(df: pd.DataFrame, uirevision: str = "gradient-flow") -> go.Figure:
    """Gradient flow along training, one colour per variant (dense, sparse with the standard initialisation,
    sparse with the sparsity-aware one, lottery ticket). Left: the norm of the masked gradient on held-out
    training images against epochs (log axis), its value at initialisation marked with a large dot. Right:
    the test accuracy after every epoch.

    `df` is `pc.gradient_flow`'s long table: variant, label, step, epoch, grad_norm, test_accuracy, density.
    """
    titles = ("Gradient norm (held-out training images)", "Test accuracy")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=titles)
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
    fig.update_layout(font=FONT, uirevision=uirevision, plot_bgcolor="white")
    return legend_below(fig, height=400, width=2 * CHART_WIDTH, top=subplot_top(titles))


# ---- sanity checks (Frankle et al. 2021) -------------------------------------------------------------------
SANITY_ORDER = ("none", "shuffle", "reinit", "invert")


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
    labels = [wrap_label(label) for label in rows["label"]]
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
