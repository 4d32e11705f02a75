"""Tests of pruning_core.studies.analysis: layer tables (FLOPs, effective density), SynFlow's conservation law
and the critical-compression search."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import pruning_core as pc
from pruning_core.engine.layers import LAYER_COLUMNS, output_positions


def ones_net() -> nn.Module:
    """x (3) -> 4 -> 2, bias-free, every weight 1."""
    model = pc.MODELS["mlp"]((1, 1, 3), 2, width=4, depth=1, bias=False)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    return model


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---- conservation law ------------------------------------------------------------------------------------
def test_synaptic_flow_hand_computed_on_an_all_ones_net():
    # R = 1ᵀ W2 W1 1 = 2 x 4 x 3 = 24; each weight of W1 scores 1 x 2 = 2 (12 of them), of W2 1 x 3 = 3 (8).
    table = pc.layer_synaptic_flow(ones_net(), (1, 1, 3))
    assert list(table.columns) == ["name", "total_score", "synaptic_flow", "ratio"]
    assert list(table["name"]) == ["fc1.weight", "out.weight"]
    assert list(table["synaptic_flow"]) == [24.0, 24.0]
    assert list(table["total_score"]) == [24.0, 24.0]
    # Pruning one hidden unit's incoming weights removes its whole path: R = 2 x 3 x 3 = 18.
    masks = {"fc1.weight": torch.ones(4, 3, dtype=torch.bool), "out.weight": torch.ones(2, 4, dtype=torch.bool)}
    masks["fc1.weight"][0] = False
    pruned = pc.layer_synaptic_flow(ones_net(), (1, 1, 3), masks)
    assert list(pruned["synaptic_flow"]) == [18.0, 18.0] and list(pruned["total_score"]) == [18.0, 18.0]


@pytest.mark.parametrize("widths", [(16, 32, 8, 24, 10), (16, 64, 64, 64, 10)])
def test_conservation_law_holds_on_a_bias_free_mlp_before_and_after_pruning(widths):
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b, bias=False), nn.ReLU()]
    model = pc.engine.models.kaiming_init(nn.Sequential(*layers[:-1]))
    before = snapshot(model)
    table = pc.layer_synaptic_flow(model, (1, 4, 4))
    assert len(table) == len(widths) - 1
    flow = float(table["synaptic_flow"].iloc[0])
    assert flow > 0
    for total in table["total_score"]:
        assert total == pytest.approx(flow, rel=1e-6)
    assert table["ratio"].tolist() == pytest.approx([1.0] * len(table), rel=1e-6)

    result = pc.prune(model, "random", 0.8, input_shape=(1, 4, 4))
    after = pc.layer_synaptic_flow(model, (1, 4, 4), result.masks)
    pruned_flow = float(after["synaptic_flow"].iloc[0])
    assert 0 < pruned_flow < flow
    for total in after["total_score"]:
        assert total == pytest.approx(pruned_flow, rel=1e-6)
    # The analysis itself never changes the model.
    state = snapshot(model)
    pc.layer_synaptic_flow(model, (1, 4, 4), result.masks)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert set(before) == set(state)


def test_layer_synaptic_flow_needs_prunable_layers():
    with pytest.raises(ValueError, match="no nn.Conv2d or nn.Linear weight to analyse"):
        pc.layer_synaptic_flow(nn.Sequential(nn.Flatten()), (1, 4, 4))


# ---- effective density --------------------------------------------------------------------------------------
def dead_unit_masks() -> dict[str, torch.Tensor]:
    """3 inputs -> 3 -> 3 -> 2. Hidden unit 0 of layer 1 receives nothing (fc1 row 0 pruned), so its
    outgoing weights (fc2 column 0) carry no signal; hidden unit 2 of layer 2 feeds nothing (out
    column 2 pruned), so its incoming weights (fc2 row 2) carry none either."""
    masks = {"fc1.weight": torch.ones(3, 3, dtype=torch.bool), "fc2.weight": torch.ones(3, 3, dtype=torch.bool),
             "out.weight": torch.ones(2, 3, dtype=torch.bool)}
    masks["fc1.weight"][0, :] = False
    masks["out.weight"][:, 2] = False
    return masks


def test_effective_masks_drop_weights_of_dead_units():
    torch.manual_seed(0)
    model = pc.MODELS["mlp"]((1, 1, 3), 2, width=3, depth=2)  # biases do not keep a unit alive
    masks = dead_unit_masks()
    effective = pc.effective_masks(model, masks, (1, 1, 3))
    assert torch.equal(effective["fc1.weight"], masks["fc1.weight"])   # rows 1, 2 reach live units
    expected_fc2 = torch.zeros(3, 3, dtype=torch.bool)
    expected_fc2[:2, 1:] = True                                       # from live inputs to live outputs
    assert torch.equal(effective["fc2.weight"], expected_fc2)
    assert torch.equal(effective["out.weight"], masks["out.weight"])


def test_layer_table_columns_effective_density_and_counts():
    torch.manual_seed(0)
    model = pc.MODELS["mlp"]((1, 1, 3), 2, width=3, depth=2)
    table = pc.layer_table(model, dead_unit_masks(), (1, 1, 3))
    assert list(table.columns) == LAYER_COLUMNS
    assert list(table["name"]) == ["fc1.weight", "fc2.weight", "out.weight"]
    assert list(table["kind"]) == ["linear"] * 3
    assert list(table["shape"]) == ["3x3", "3x3", "2x3"]
    assert list(table["total"]) == [9, 9, 6]
    assert list(table["kept"]) == [6, 9, 4]
    assert list(table["effective_kept"]) == [6, 4, 4]
    assert table["density"].tolist() == pytest.approx([6 / 9, 1.0, 4 / 6])
    assert table["effective_density"].tolist() == pytest.approx([6 / 9, 4 / 9, 4 / 6])
    nominal = table["kept"].sum() / table["total"].sum()
    effective = table["effective_kept"].sum() / table["total"].sum()
    assert effective == pytest.approx(14 / 24) and nominal == pytest.approx(19 / 24)
    assert effective < nominal


def test_prune_result_reports_effective_density_and_disconnected_layers():
    torch.manual_seed(0)
    model = pc.MODELS["mlp"]((1, 1, 3), 2, width=3, depth=2, bias=False)
    dense = pc.prune(model, "magnitude", 0.0, input_shape=(1, 1, 3))
    assert dense.effective_density == dense.density == 1.0
    # Empty the middle layer: the others keep weights that no longer connect input to output.
    masks = {**dead_unit_masks(), "fc2.weight": torch.zeros(3, 3, dtype=torch.bool)}
    layers = pc.layer_table(model, masks, (1, 1, 3))
    result = pc.PruneResult(masks=masks, scores={}, layers=layers, collapsed=["fc2.weight"], method="magnitude",
                            sparsity=14 / 24, iterations=1, schedule="exponential", scope="global", elapsed_s=0.0)
    assert result.density == pytest.approx(10 / 24) and result.compression == pytest.approx(2.4)
    assert result.effective_density == 0
    summary = result.summary()
    assert summary["effective_kept"] == 0 and summary["kept"] == 10 and summary["total"] == 24
    assert summary["disconnected_layers"] == ["fc1.weight", "out.weight"]
    assert summary["collapsed"] == ["fc2.weight"]


def test_effective_masks_follow_skip_connections():
    torch.manual_seed(0)
    model = pc.MODELS["resnet20"]((3, 8, 8), 10)
    masks = {name: torch.ones_like(w, dtype=torch.bool) for name, _, w in pc.prunable_weights(model)}
    # Block 0 keeps its identity shortcut: emptying its second conv disconnects only its first conv.
    masks["blocks.0.conv2.weight"] = torch.zeros_like(masks["blocks.0.conv2.weight"])
    effective = pc.effective_masks(model, masks, (3, 8, 8))
    assert not effective["blocks.0.conv1.weight"].any()
    for name, mask in masks.items():
        if name not in ("blocks.0.conv1.weight", "blocks.0.conv2.weight"):
            assert torch.equal(effective[name], mask), name


# ---- FLOPs --------------------------------------------------------------------------------------------------------
def test_flops_hand_computed_for_a_conv_and_a_linear_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(27, 4))
    # 7x7 input, 3x3 kernel, stride 2, no padding: 3x3 = 9 output pixels per sample.
    assert output_positions(model, (2, 7, 7)) == {"0.weight": 9, "3.weight": 1}
    conv_mask = (torch.arange(54) < 20).view(3, 2, 3, 3)
    linear_mask = (torch.arange(108) < 10).view(4, 27)
    table = pc.layer_table(model, {"0.weight": conv_mask, "3.weight": linear_mask}, (2, 7, 7))
    assert list(table["kind"]) == ["conv", "linear"]
    assert list(table["shape"]) == ["3x2x3x3", "4x27"]
    # 2 FLOPs (multiply + add) per kept weight per output position.
    assert list(table["flops_dense"]) == [2 * 54 * 9, 2 * 108]
    assert list(table["flops_kept"]) == [2 * 20 * 9, 2 * 10]


def test_prune_result_layers_use_the_same_columns():
    torch.manual_seed(0)
    model = pc.MODELS["conv"]((1, 8, 8), 10, width=2)
    result = pc.prune(model, "magnitude", 0.5, input_shape=(1, 8, 8))
    layers = result.layers
    assert list(layers.columns) == LAYER_COLUMNS
    # conv1 sees 8x8 pixels (padding 1), conv2 4x4 after a pool, conv3 2x2; the classifier 1.
    assert list(layers["flops_dense"]) == [2 * 18 * 64, 2 * 72 * 16, 2 * 288 * 4, 2 * 80]
    assert (layers["flops_kept"] == 2 * layers["kept"] * layers["flops_dense"] / (2 * layers["total"])).all()
    summary = result.summary()
    assert summary["flops_dense"] == sum(layers["flops_dense"]) and summary["kept"] == round(0.5 * 458)


# ---- critical compression -----------------------------------------------------------------------------------------
def deep_mlp():
    return pc.MODELS["mlp"]((1, 4, 4), 10, width=32, depth=4, bias=False)


def check_bracket(result: pc.CriticalCompression, tolerance: float) -> None:
    """The answer was probed without collapse, and a probe at most `tolerance` above it collapsed."""
    evaluations = result.evaluations
    assert evaluations[0]["collapsed"]  # the first probe, one weight left in total, collapses
    if result.log_compression > 0:
        at = [e for e in evaluations if e["log_compression"] == result.log_compression]
        assert at and not at[0]["collapsed"]
    above = [e["log_compression"] for e in evaluations
             if e["collapsed"] and e["log_compression"] > result.log_compression]
    assert above and min(above) - result.log_compression <= tolerance + 1e-12
    # Collapse is monotone along the search.
    for e in evaluations:
        assert e["collapsed"] == (e["log_compression"] > result.log_compression)


def test_critical_compression_brackets_collapse_and_synflow_beats_magnitude():
    tolerance = 0.1
    magnitude = pc.critical_compression(deep_mlp, "magnitude", input_shape=(1, 4, 4), tolerance=tolerance)
    calls = []
    synflow = pc.critical_compression(deep_mlp, "synflow", input_shape=(1, 4, 4), tolerance=tolerance,
                                      iterations=100, progress=lambda d, t: calls.append((d, t)))
    for result in (magnitude, synflow):
        check_bracket(result, tolerance)
    assert magnitude.log_compression < synflow.log_compression
    assert calls and calls[-1][0] == calls[-1][1]

    # Re-pruning a fresh model (same seed) at the answer leaves every layer; slightly above collapses.
    torch.manual_seed(0)
    at = pc.prune(deep_mlp(), "magnitude", magnitude.sparsity, input_shape=(1, 4, 4))
    assert at.collapsed == []
    above = min(e["log_compression"] for e in magnitude.evaluations
                if e["collapsed"] and e["log_compression"] > magnitude.log_compression)
    torch.manual_seed(0)
    assert pc.prune(deep_mlp(), "magnitude", 1 - 10 ** -above, input_shape=(1, 4, 4)).collapsed


def test_critical_compression_properties():
    result = pc.CriticalCompression("x", 2.0)
    assert result.compression == pytest.approx(100.0)
    assert result.sparsity == pytest.approx(0.99)


def test_critical_compression_returns_the_maximum_when_nothing_collapses():
    # A single layer keeps its one weight: no layer ever collapses, so the search stops at the top.
    def single():
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

    result = pc.critical_compression(single, "magnitude", input_shape=(1, 4, 4), max_log_compression=1.5)
    assert result.log_compression == 1.5
    assert len(result.evaluations) == 1 and not result.evaluations[0]["collapsed"]
    assert math.isclose(result.evaluations[0]["sparsity"], 1 - 10 ** -1.5)
