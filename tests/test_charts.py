"""The chart builders (pruning_core.presentation.charts): DataFrame in, Plotly figure out, no Streamlit."""

import math

import pandas as pd
import pytest
from presentation_tables import cost_table, flow_table, layer_table, metrics, sweep_rows, with_search_rows

from pruning_core.presentation import charts, study_charts, units


def test_density_bars_draw_kept_fraction_and_counts():
    fig = charts.density_bars(layer_table([144, 1843, 737, 128]), label="synflow")
    bar = fig.data[0]
    assert bar.type == "bar"
    assert list(bar.x) == ["conv1", "conv2", "conv3", "fc"]
    assert list(bar.y) == pytest.approx([0.5, 0.1, 0.009996, 0.1], rel=1e-3)
    assert list(bar.text) == ["144", "1,843", "737", "128"]
    assert bar.name == "SynFlow"
    assert fig.layout.yaxis.type != "log"


def test_density_bars_mark_collapsed_layers_even_on_a_log_axis():
    fig = charts.density_bars(layer_table([93, 0, 0, 1]), log_scale=True, label="magnitude")
    assert fig.layout.yaxis.type == "log"
    marks = [t for t in fig.data if t.type == "scatter" and t.marker.symbol == "x"]
    assert len(marks) == 1
    assert list(marks[0].x) == ["conv2", "conv3"]
    # On a log axis a zero-height bar is invisible: the marks sit at a positive floor inside the range.
    low, high = fig.layout.yaxis.range
    assert all(10 ** low < y < 10 ** high for y in marks[0].y)


def test_density_bars_group_compared_methods():
    fig = charts.density_bars(layer_table([93, 0, 0, 1]), label="magnitude",
                               compare={"synflow": layer_table([21, 22, 25, 26])})
    bars = [t for t in fig.data if t.type == "bar"]
    assert [b.name for b in bars] == ["Magnitude", "SynFlow"]
    assert bars[0].marker.color != bars[1].marker.color
    assert fig.layout.barmode == "group"
    collapsed = [t for t in fig.data if t.type == "scatter" and t.marker.symbol == "x"]
    assert [t.name for t in collapsed] == ["Magnitude: collapsed layer"]


def test_density_bars_show_effective_density_where_lower():
    fig = charts.density_bars(layer_table([100, 100, 100, 100], effective=[100, 10, 95, 100]), label="snip")
    diamonds = [t for t in fig.data if t.type == "scatter" and t.marker.symbol == "diamond"]
    assert len(diamonds) == 1 and list(diamonds[0].x) == ["conv2"]


def test_training_curves_plot_loss_and_accuracy():
    fig = charts.training_curves(metrics([0.5, 0.8, 0.9]), chance=0.1)
    names = [t.name for t in fig.data]
    assert names == ["train loss", "test loss", "test accuracy", "chance (10%)"]
    accuracy = fig.data[2]
    assert list(accuracy.x) == [0, 1, 2, 3]
    assert list(accuracy.y) == [0.1, 0.5, 0.8, 0.9]
    assert len(fig.data[0].x) == 6  # train loss: every logged step, not only epoch ends
    assert fig.layout.uirevision == "training"


def test_training_curves_overlay_several_runs():
    fig = charts.training_curves({"#1": metrics([0.5]), "#2": metrics([0.7, 0.8])})
    accuracy = [t for t in fig.data if t.name.endswith("test accuracy")]
    assert [t.name for t in accuracy] == ["#1: test accuracy", "#2: test accuracy"]
    assert accuracy[0].line.color != accuracy[1].line.color


def test_training_curves_leave_out_the_rows_of_a_mask_search():
    fig = charts.training_curves(with_search_rows(metrics([0.5, 0.8])), chance=0.1)
    accuracy = next(t for t in fig.data if t.name == "test accuracy")
    assert list(accuracy.x) == [0, 1, 2] and list(accuracy.y) == [0.1, 0.5, 0.8]
    chance = next(t for t in fig.data if t.name.startswith("chance"))
    assert list(chance.x) == [0, 2]  # the search rows (no epoch) do not break the axis


def test_tradeoff_chart_log_axis_bands_baseline_and_collapse_marks():
    fig = charts.tradeoff_chart(sweep_rows())
    assert fig.layout.xaxis.type == "log"
    lines = {t.name: t for t in fig.data if t.mode == "lines+markers"}
    assert set(lines) == {"SynFlow", "Magnitude"}
    assert list(lines["SynFlow"].x) == pytest.approx([10, 100, 1000])
    assert list(lines["SynFlow"].y) == pytest.approx([0.96, 0.91, 0.61])
    bands = [t for t in fig.data if t.fill == "tonexty"]
    assert len(bands) == 2 and all(t.type == "scatter" for t in fig.data)  # SVG, not WebGL
    baseline = next(t for t in fig.data if t.name.startswith("dense baseline"))
    assert list(baseline.y) == pytest.approx([0.97, 0.97])
    marks = next(t for t in fig.data if t.name.startswith("collapsed"))
    assert marks.marker.symbol == "x"
    assert list(marks.x) == pytest.approx([1000, 1000])
    assert list(marks.y) == pytest.approx([0.1, 0.12])


def test_tradeoff_chart_fills_in_live():
    table = sweep_rows()
    table.loc[table["method"] == "magnitude", "final_test_accuracy"] = None  # not finished yet
    fig = charts.tradeoff_chart(table)
    assert {t.name for t in fig.data if t.mode == "lines+markers"} == {"SynFlow"}
    assert not any(t.name.startswith("collapsed") for t in fig.data)
    # The axis is fixed by the planned grid, so it does not jump as cells finish.
    assert list(fig.layout.xaxis.tickvals) == pytest.approx([10, 100, 1000])
    empty = charts.tradeoff_chart(table.assign(final_test_accuracy=None))
    assert len(empty.data) == 0 and empty.layout.xaxis.type == "log"


def test_tradeoff_chart_single_seed_has_no_band():
    table = sweep_rows()
    fig = charts.tradeoff_chart(table[table["seed"] == 0])
    assert not any(t.fill == "tonexty" for t in fig.data)


def test_critical_compression_bars_sorted_with_limit():
    df = pd.DataFrame({"method": ["snip", "synflow", "magnitude"], "log_compression": [3.07, 4.39, 2.56],
                       "max_log_compression": [4.97] * 3})
    fig = charts.critical_compression_bars(df)
    assert list(fig.data[0].x) == ["SynFlow", "SNIP", "Magnitude"]
    assert list(fig.data[0].y) == [4.39, 3.07, 2.56]
    assert fig.data[0].text[0].startswith("10^4.4")
    assert fig.layout.shapes[0].y0 == pytest.approx(4.97)


def test_density_heatmap_methods_by_layers_with_collapse_marks():
    rows = []
    for level in (1.0, 3.0):
        for method, kept in (("synflow", [20, 10, 5, 40]), ("magnitude", [30, 0, 0, 1])):
            for layer, k in zip(["conv1.weight", "conv2.weight", "conv3.weight", "fc.weight"], kept):
                rows.append({"method": method, "log_compression": level, "layer": layer,
                             "density": k / 100 / level})
    fig = charts.density_heatmap(pd.DataFrame(rows), 2.9)
    heat = fig.data[0]
    assert list(heat.y) == ["SynFlow", "Magnitude"]
    assert list(heat.x) == ["conv1", "conv2", "conv3", "fc"]
    assert heat.z[1][1] is None and heat.text[1][1] == "✕"
    assert heat.z[0][0] == pytest.approx(math.log10(0.2 / 3))
    assert "10^3.0" in fig.layout.title.text


def test_conservation_chart_ratio_per_layer():
    flow = pd.DataFrame({"name": ["fc1.weight", "fc2.weight"], "total_score": [5.0, 5.0], "synaptic_flow": [5.0, 5.0],
                         "ratio": [1.0, 1.0]})
    fig = charts.conservation_chart(flow)
    assert list(fig.data[0].x) == ["fc1", "fc2"]
    assert list(fig.data[0].y) == [1.0, 1.0]
    assert fig.layout.shapes[0].y0 == 1.0
    grouped = charts.conservation_chart({"init": flow, "pruned": flow.assign(ratio=[1.0, 0.9])})
    assert [t.name for t in grouped.data] == ["init", "pruned"]


def imp_rounds(accuracies=(0.9, 0.93, None)):
    densities = (1.0, 0.464, 0.215)
    return pd.DataFrame([{"round": r, "density": d, "trained_test_accuracy": a}
                         for r, (d, a) in enumerate(zip(densities, accuracies))])


def test_imp_rounds_chart_draws_each_round_then_the_ticket():
    planned = [1.0, 0.464, 0.215, 0.1]
    fig = study_charts.imp_rounds_chart(imp_rounds((0.9, 0.93, 0.95)).iloc[::-1], planned,
                                         ticket={"density": 0.100002, "accuracy": 0.96},
                                         others={"gemminer": {"density": 0.1, "accuracy": 0.85}}, chance=0.1)
    line = fig.data[0]
    assert list(line.x) == pytest.approx([1.0, 1 / 0.464, 1 / 0.215, 1 / 0.100002])   # in round order
    assert list(line.y) == [0.9, 0.93, 0.95, 0.96]
    star = next(t for t in fig.data if t.marker.symbol == "star")
    assert list(star.y) == [0.96]
    diamond = next(t for t in fig.data if t.marker.symbol == "diamond")
    assert diamond.name == "GemMiner (same sparsity)" and diamond.marker.color == units.method_color("gemminer")
    # One tick per planned round (the ticket's 9.9998x and the planned 10x share one), fixed from the start.
    assert list(fig.layout.xaxis.tickvals) == [1.0, 2.16, 4.65, 10.0]
    assert fig.layout.xaxis.ticktext[0] == "dense" and "90% removed" in fig.layout.xaxis.ticktext[-1]


def test_imp_rounds_chart_fills_in_live():
    planned = [1.0, 0.464, 0.215, 0.1]
    empty = study_charts.imp_rounds_chart(imp_rounds().iloc[0:0], planned)
    assert [t for t in empty.data if t.mode and "lines" in t.mode and t.name.startswith("IMP")] == []
    assert len(empty.layout.xaxis.tickvals) == 4
    partial = study_charts.imp_rounds_chart(imp_rounds((0.9, 0.93, None)), planned)
    assert list(partial.data[0].y) == [0.9, 0.93]     # a round without its accuracy yet is not drawn
    assert empty.layout.xaxis.range == partial.layout.xaxis.range


def gemminer_rows():
    return pd.DataFrame([
        {"search_step": 0, "density": 0.8, "active_fraction": 0.5, "mining_loss": None, "mining_accuracy": None},
        {"search_step": 4, "density": 0.4, "active_fraction": 0.9, "mining_loss": 2.1, "mining_accuracy": 0.3},
        {"search_step": 8, "density": 0.1, "active_fraction": 1.0, "mining_loss": 1.8, "mining_accuracy": 0.5},
    ])


def test_gemminer_progress_chart_draws_accuracy_and_weights_left():
    fig = study_charts.gemminer_progress_chart(gemminer_rows().iloc[::-1], target_density=0.1, total_steps=10,
                                               chance=0.1)
    accuracy = next(t for t in fig.data if t.name == "batch accuracy while mining")
    assert list(accuracy.x) == [4, 8] and list(accuracy.y) == [0.3, 0.5]   # the event before any step has none
    assert list(accuracy.customdata) == [2.1, 1.8]
    left = next(t for t in fig.data if t.name == "weights still in the running")
    assert list(left.x) == [0, 4, 8] and list(left.y) == [0.8, 0.4, 0.1]
    target = next(t for t in fig.data if t.name.startswith("target"))
    assert list(target.y) == [0.1, 0.1] and list(target.x) == [0, 10]
    assert fig.layout.yaxis2.type == "log" and 0.1 in fig.layout.yaxis2.tickvals
    assert 10 ** fig.layout.yaxis2.range[0] < 0.1


def test_ticket_cost_chart_stacks_search_and_training():
    fig = study_charts.ticket_cost_chart(cost_table())
    accuracy = fig.data[0]
    assert list(accuracy.x) == ["IMP (lottery ticket)", "GemMiner", "SynFlow"]
    assert list(accuracy.y) == [0.958, 0.85, None] and list(accuracy.text) == ["95.8%", "85%", ""]
    time_search, time_train, step_search, step_train = fig.data[1:]
    assert list(time_search.y) == [5.0, 1.25, None] and list(time_train.y) == [1.2, 1.0, None]
    assert list(time_train.text) == ["6.2 s", "2.2 s", ""]    # the total on top of each stack
    assert list(step_train.text) == ["88", "44", ""]
    assert fig.layout.barmode == "stack"
    assert [t.showlegend for t in fig.data[1:]] == [True, True, False, False]


def test_gradient_flow_chart_one_colour_per_variant_on_a_log_axis():
    fig = study_charts.gradient_flow_chart(flow_table())
    lines = [t for t in fig.data if t.showlegend is not False]
    assert [t.name for t in lines] == ["Dense", "Sparse, standard init (10% kept)",
                                       "Sparse, sparsity-aware init (10% kept)", "Lottery ticket (IMP) (10% kept)"]
    assert len({t.line.color for t in lines}) == 4
    assert list(lines[1].y) == [0.01, 0.02, 0.03] and list(lines[1].x) == [0, 0.5, 1.0]
    init = next(t for t in fig.data if t.name == "Sparse, standard init: at initialisation")
    assert list(init.y) == [0.01]
    accuracy = next(t for t in fig.data if t.name == "Dense: test accuracy")
    assert list(accuracy.x) == [0, 1.0] and list(accuracy.y) == [0.1, 0.8]
    assert fig.layout.yaxis.type == "log"


def sanity_table(accuracies):
    table = pd.DataFrame({"variant": ["invert", "none", "shuffle", "reinit"],
                          "label": ["Scores inverted", "Method's mask", "Mask shuffled within each layer",
                                    "Weights reinitialised"],
                          "test_accuracy": accuracies})
    table.attrs["method"] = "synflow"
    return table


def test_sanity_chart_colours_checks_by_whether_they_hurt():
    fig = study_charts.sanity_chart(sanity_table([0.1, 0.969, 0.962, 0.99]), tolerance=0.01, chance=0.1)
    bars = fig.data[0]
    assert list(bars.x) == ["Method's mask", "Mask shuffled<br>within each<br>layer", "Weights<br>reinitialised",
                            "Scores inverted"]   # the paper's order, whatever the table's
    assert list(bars.y) == [0.969, 0.962, 0.99, 0.1]
    assert list(bars.marker.color) == [units.method_color("synflow"), "#2E7D32", "#2E7D32", units.COLLAPSE_COLOR]
    assert bars.text[3] == "10%<br>(-86.9 pts)" and bars.text[1] == "96.2%<br>(-0.7 pts)"
    assert [t.name for t in fig.data[1:]] == ["method's own mask (96.9%)", "chance (10%)"]
    assert [shape.y0 for shape in fig.layout.shapes] == [0.969, 0.1]


def test_sanity_chart_keeps_a_place_for_pending_checks():
    fig = study_charts.sanity_chart(sanity_table([None, 0.969, None, None]))
    bars = fig.data[0]
    assert list(bars.y) == [0.969, None, None, None]
    assert list(bars.marker.color)[1:] == ["#BBBBBB"] * 3
    assert list(fig.layout.xaxis.categoryarray) == list(bars.x)


# ---- issue 17: axes, legends and labels that a newcomer tripped over ----------------------------------
def _tick_fractions(axis):
    """The fractions a percent tick text stands for ('0.5%' -> 0.005)."""
    return [float(t.rstrip("%")) / 100 for t in axis.ticktext]


@pytest.mark.parametrize("kept", [[288, 18432, 737, 1280], [93, 0, 0, 1], [1, 2, 3, 4]])
def test_density_bars_log_axis_ends_at_100_percent(kept):
    # A full layer (288 of 288) used to put the axis end at 10^0.35 with a "200%" tick.
    fig = charts.density_bars(layer_table(kept), log_scale=True, label="synflow")
    low, high = fig.layout.yaxis.range
    assert high <= math.log10(1.0)
    assert max(_tick_fractions(fig.layout.yaxis)) <= 1.0
    assert len(fig.layout.yaxis.tickvals) == len(fig.layout.yaxis.ticktext) >= 2
    assert all(10 ** low <= t <= 1.0 for t in fig.layout.yaxis.tickvals)
    assert min(d for d in layer_table(kept)["density"] if d > 0) > 10 ** low   # the smallest bar still shows


def test_density_bars_linear_axis_never_goes_past_100_percent():
    fig = charts.density_bars(layer_table([288, 18432, 737, 1280]), label="synflow")
    assert fig.layout.yaxis.range[1] == pytest.approx(1.0)


def test_collapsed_labels_sit_above_their_marks_not_on_them():
    fig = charts.density_bars(layer_table([93, 0, 0, 1]), log_scale=True, label="magnitude")
    marks = next(t for t in fig.data if t.type == "scatter" and t.marker.symbol == "x")
    labels = [a for a in fig.layout.annotations if a.text == "collapsed"]
    assert [a.x for a in labels] == [1, 2]                      # conv2 and conv3, by category position
    for label, y in zip(labels, marks.y):
        assert label.y == pytest.approx(math.log10(y))           # annotations on a log axis are in log10 units
        assert label.yanchor == "bottom" and label.yshift >= 8    # its bottom edge above the ✕ (size 14)
    assert "text" not in marks.mode
    bar = fig.data[0]
    assert list(bar.text) == ["93", "", "", "1"]                # no "0" drawn on the ✕ either


def test_collapsed_labels_follow_their_bar_in_a_group():
    fig = charts.density_bars(layer_table([93, 0, 0, 1]), label="magnitude",
                              compare={"synflow": layer_table([21, 0, 25, 26]), "snip": layer_table([5, 6, 0, 8])})
    labels = sorted((a.x, a.textangle) for a in fig.layout.annotations if a.text == "collapsed")
    width = (1 - charts.BAR_GAP) / 3                            # three bars share a layer's width
    assert [x for x, _ in labels] == pytest.approx([1 - width, 1, 2 - width, 2 + width])
    assert {angle for _, angle in labels} == {-90}              # upright: narrow bars side by side


def test_overlay_legend_sits_below_the_axis_title_with_room_for_every_row():
    runs = {f"#{i} SynFlow 90% (scores inverted)": metrics([0.5, 0.8]) for i in range(3)}
    fig = charts.training_curves(runs)
    legend, margin = fig.layout.legend, fig.layout.margin
    assert legend.orientation == "h" and legend.yref == "container" and legend.yanchor == "bottom"
    assert legend.y == 0
    entries = [t for t in fig.data if t.showlegend is not False]
    rows = math.ceil(len(entries) / max(1, (charts.CHART_WIDTH - 20) // legend.entrywidth))
    assert rows >= 3                                             # 9 long names do not fit on one row of half a page
    # The bottom margin holds the x-axis ticks and title, then every legend row; the plot keeps its height.
    assert margin.b >= charts.AXIS_SPACE + charts.LEGEND_ROW * rows
    assert fig.layout.height - margin.t - margin.b >= 380 - margin.t - charts.AXIS_SPACE
    single = charts.training_curves(metrics([0.5]))
    assert single.layout.margin.b < margin.b                     # one run: a smaller legend, a smaller margin


def test_subplot_titles_are_below_the_toolbar_and_do_not_run_into_each_other():
    fig = study_charts.gemminer_progress_chart(gemminer_rows(), target_density=0.1, total_steps=10)
    titles = [a for a in fig.layout.annotations if a.yref == "paper" and a.y == 1]
    assert len(titles) == 2
    lines = max(a.text.count("<br>") + 1 for a in titles)
    assert fig.layout.margin.t >= charts.TOOLBAR_SPACE + charts.TITLE_LINE * lines
    # Each title line fits in its own subplot's share of the chart (about 7 px per character), in the column
    # Lottery tickets gives it (2.3 of 3.3 of a main area about 870 px wide at 1400 px).
    column = 600
    domain = fig.layout.xaxis.domain
    for title in titles:
        assert max(len(line) for line in title.text.split("<br>")) * 7 <= (domain[1] - domain[0]) * column
    assert fig.layout.legend.yref == "container"


def test_loss_axis_of_a_collapsed_network_is_not_zoomed_into_noise():
    flat = pd.DataFrame([{"step": 10 * i, "epoch": i, "train_loss": 2.3026 + 0.002 * (i % 2),
                          "test_loss": 2.3030 - 0.001 * (i % 2), "test_accuracy": 0.1} for i in range(5)])
    fig = charts.training_curves(flat)
    low, high = fig.layout.yaxis.range
    assert low == 0 and high - low >= charts.MIN_LOSS_SPAN and high >= 2.305
    small = charts.training_curves(pd.DataFrame([{"step": 1, "epoch": 1, "train_loss": 0.02, "test_loss": 0.03,
                                                   "test_accuracy": 0.99}]))
    assert list(small.layout.yaxis.range) == [0, charts.MIN_LOSS_SPAN]   # at least 0.5 wide
    assert charts.loss_range([1.0, float("nan"), 2.0]) == pytest.approx([0, 2.16])

def test_mask_changes_chart_stacks_the_moved_weights_per_layer_and_draws_the_share_moved():
    updates = pd.DataFrame([
        {"step": 10, "layer": "conv1.weight", "kept": 40, "total": 288, "dropped": 12, "moved": 10,
         "drop_fraction": 0.3},
        {"step": 10, "layer": "fc.weight", "kept": 60, "total": 1280, "dropped": 18, "moved": 15, "drop_fraction": 0.3},
        {"step": 20, "layer": "conv1.weight", "kept": 40, "total": 288, "dropped": 6, "moved": 5,
         "drop_fraction": 0.15},
        {"step": 20, "layer": "fc.weight", "kept": 60, "total": 1280, "dropped": 9, "moved": 0, "drop_fraction": 0.15},
    ])
    fig = charts.mask_changes_chart(updates)
    bars = [t for t in fig.data if t.type == "bar"]
    assert [b.name for b in bars] == ["conv1", "fc"]
    assert list(bars[0].y) == [10, 5] and list(bars[1].y) == [15, 0] and list(bars[0].x) == [10, 20]
    share = next(t for t in fig.data if t.type == "scatter")
    assert list(share.y) == pytest.approx([25 / 100, 5 / 100])
    assert fig.layout.barmode == "stack" and bars[0].marker.color != bars[1].marker.color
