"""Tests of pruning_core.engine.masks: prunable tensors, schedules, counts, exact top-k, attaching masks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import pruning_core as pc
from pruning_core.engine.masks import (all_kept, allocate_counts, density_of, erk_densities, kept_count, layer_kind,
                                       round_densities, select_per_layer, select_top_k, shuffle_within_layers)


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return pc.MODELS["mlp"]((1, 4, 4), 3, width=8, depth=2)


# ---- prunable tensors ------------------------------------------------------------------------------
def test_prunable_weights_are_conv_and_linear_weights_named_as_in_named_parameters():
    torch.manual_seed(0)
    model = pc.MODELS["conv"]((1, 8, 8), 10, width=2)
    found = pc.prunable_weights(model)
    params = dict(model.named_parameters())
    assert [n for n, _, _ in found] == ["conv1.weight", "conv2.weight", "conv3.weight", "fc.weight"]
    for name, module, weight in found:
        assert params[name] is weight and module.weight is weight
    assert [layer_kind(m) for _, m, _ in found] == ["conv", "conv", "conv", "linear"]
    # BatchNorm weights and biases are not prunable.
    assert not any("bn" in n or n.endswith("bias") for n, _, _ in found)


def test_bare_layer_is_named_weight_and_a_shared_weight_is_listed_once():
    assert [n for n, _, _ in pc.prunable_weights(nn.Linear(3, 2))] == ["weight"]
    first, second = nn.Linear(4, 4), nn.Linear(4, 4)
    second.weight = first.weight
    found = pc.prunable_weights(nn.Sequential(first, second, nn.Linear(4, 2)))
    assert [n for n, _, _ in found] == ["0.weight", "2.weight"]


# ---- schedules and counts ----------------------------------------------------------------------------
def test_round_densities_follow_the_schedules_and_end_exactly_at_the_target():
    exponential = round_densities(0.001, 3, "exponential")
    assert exponential == pytest.approx([0.1, 0.01, 0.001])
    assert exponential[-1] == 0.001
    assert round_densities(0.1, 3, "linear") == pytest.approx([0.7, 0.4, 0.1])
    assert round_densities(0.3, 1, "linear") == [0.3]
    # Exponential removes the same fraction of the remaining weights every round.
    steps = round_densities(0.05, 10, "exponential")
    ratios = [b / a for a, b in zip([1.0, *steps[:-1]], steps)]
    assert ratios == pytest.approx([0.05 ** 0.1] * 10)
    with pytest.raises(ValueError, match="unknown schedule 'cosine'; choose one of: exponential, linear"):
        round_densities(0.1, 3, "cosine")


def test_kept_count_rounds_density_times_total():
    assert kept_count(0.1, 1234) == 123
    assert kept_count(0.001, 1500) == 2    # 1.5 rounds to even
    assert kept_count(0.0035, 1000) == 4   # 3.5 rounds to even
    assert kept_count(1.0, 17) == 17


def test_allocate_counts_largest_remainder_with_ties_to_the_earlier_layer():
    # Ideal 1.5, 2.5, 3.5 -> floors 1, 2, 3 and two leftover weights for the first two layers.
    assert allocate_counts([0.5, 0.5, 0.5], [3, 5, 7], 8) == [2, 3, 3]
    # Ideal 0.4, 1.2, 1.2 -> floors 0, 1, 1; the leftover goes to the largest remainder (0.4).
    assert allocate_counts([0.1, 0.1, 0.1], [4, 12, 12], 3) == [1, 1, 1]
    # Never above a layer's size.
    assert allocate_counts([1.0, 0.1], [2, 10], 5) == [2, 3]


def test_allocate_counts_moves_weights_a_capped_layer_cannot_take():
    # In iterative pruning a layer that kept 0 weights last round cannot get one back.
    assert allocate_counts([0.1, 0.1, 0.1], [4, 12, 12], 3, caps=[0, 12, 12]) == [0, 2, 1]
    assert sum(allocate_counts([0.3] * 4, [10, 10, 10, 10], 12, caps=[2, 3, 10, 10])) == 12


def test_erk_densities_hand_computed():
    shapes = [(8, 16), (8, 8), (3, 8)]   # sizes 128, 64, 24 = 216
    # raw density sum/prod: 24/128, 16/64, 11/24; epsilon * sum(raw * size) = density * 216 with
    # sum(raw * size) = 24 + 16 + 11 = 51.
    eps = 0.2 * 216 / 51
    assert erk_densities(shapes, 0.2) == pytest.approx([24 / 128 * eps, 16 / 64 * eps, 11 / 24 * eps])
    # At 0.6 the last layer would need 11/24 * 129.6/51 = 1.16 > 1: it is made dense and epsilon is
    # solved again for the other two: (129.6 - 24) / (24 + 16) = 2.64.
    assert erk_densities(shapes, 0.6) == pytest.approx([24 / 128 * 2.64, 16 / 64 * 2.64, 1.0])
    assert erk_densities(shapes, 1.0) == pytest.approx([1.0, 1.0, 1.0])
    conv = [(4, 2, 3, 3), (10, 4)]       # raw 12/72 and 14/40
    dens = erk_densities(conv, 0.25)
    assert dens[0] / dens[1] == pytest.approx((12 / 72) / (14 / 40))
    assert dens[0] * 72 + dens[1] * 40 == pytest.approx(0.25 * 112)


# ---- exact top-k --------------------------------------------------------------------------------------
def test_select_top_k_ranks_globally():
    scores = {"a": torch.tensor([3.0, 1.0, 2.0]), "b": torch.tensor([[5.0, 0.0], [2.5, 4.0]])}
    masks = select_top_k(scores, 3)
    assert masks["a"].tolist() == [True, False, False]
    assert masks["b"].tolist() == [[True, False], [False, True]]
    assert masks["a"].dtype == torch.bool and masks["b"].shape == (2, 2)
    assert int(sum(m.sum() for m in select_top_k(scores, 0).values())) == 0
    assert all(m.all() for m in select_top_k(scores, 10).values())


def test_select_top_k_keeps_an_exact_count_with_ties_going_to_the_lower_index():
    scores = {"a": torch.zeros(4), "b": torch.zeros(3)}
    masks = select_top_k(scores, 5)
    assert masks["a"].tolist() == [True] * 4 and masks["b"].tolist() == [True, False, False]
    # Many ties: compare with a stable descending sort.
    gen = torch.Generator().manual_seed(0)
    flat = torch.randint(0, 5, (1000,), generator=gen).float()
    keep = select_top_k({"x": flat}, 337)["x"]
    expected = torch.zeros(1000, dtype=torch.bool)
    expected[torch.sort(flat, descending=True, stable=True).indices[:337]] = True
    assert torch.equal(keep, expected)


def test_select_top_k_ranks_nan_lowest():
    masks = select_top_k({"a": torch.tensor([float("nan"), 0.0, -1.0])}, 2)
    assert masks["a"].tolist() == [False, True, True]


def test_select_top_k_only_keeps_candidates():
    scores = {"a": torch.tensor([9.0, 8.0, 1.0]), "b": torch.tensor([7.0, 2.0])}
    candidates = {"a": torch.tensor([False, True, True]), "b": torch.tensor([False, True])}
    masks = select_top_k(scores, 2, candidates)
    assert masks["a"].tolist() == [False, True, False] and masks["b"].tolist() == [False, True]
    # Fewer candidates than k: all of them, nothing else.
    masks = select_top_k(scores, 4, candidates)
    assert masks["a"].tolist() == [False, True, True] and masks["b"].tolist() == [False, True]


def test_select_per_layer_keeps_each_layers_count_of_its_best_weights():
    scores = {"a": torch.tensor([1.0, 9.0, 3.0]), "b": torch.tensor([100.0, 50.0, 0.5, 0.1])}
    masks = select_per_layer(scores, {"a": 2, "b": 1})
    assert masks["a"].tolist() == [False, True, True]
    assert masks["b"].tolist() == [True, False, False, False]


# ---- attaching --------------------------------------------------------------------------------------------
def half_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: (torch.arange(w.numel()) % 2 == 0).view(w.shape) for name, _, w in pc.prunable_weights(model)}


def test_attach_masks_zeroes_pruned_weights_and_masks_gradients():
    model = tiny_mlp()
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = half_masks(model)
    pc.attach_masks(model, masks)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.equal(params[name].detach(), initial[name] * mask)
    assert set(pc.attached_masks(model)) == set(masks)
    # The buffer is not persistent: checkpoints keep their usual keys.
    assert not any(k.endswith("weight_mask") for k in model.state_dict())
    model(torch.randn(5, 1, 4, 4)).square().sum().backward()
    for name, mask in masks.items():
        assert torch.all(params[name].grad[~mask] == 0)
        assert torch.any(params[name].grad[mask] != 0)


def test_attach_masks_follows_dtype_moves_and_survives_optimizers():
    model = tiny_mlp()
    masks = half_masks(model)
    pc.attach_masks(model, masks)
    model.double()  # the mask buffer stays bool and the hook stays on the same parameters
    assert all(m.dtype == torch.bool for m in pc.attached_masks(model).values())
    opt = torch.optim.Adam(model.parameters(), lr=0.1, weight_decay=0.1)
    x = torch.randn(8, 1, 4, 4, dtype=torch.float64)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    for name, weight in dict(model.named_parameters()).items():
        if name in masks:
            assert torch.all(weight[~masks[name]] == 0)


def test_attach_masks_again_replaces_and_detach_forgets():
    model = tiny_mlp()
    pc.attach_masks(model, half_masks(model))
    narrower = {"fc1.weight": torch.zeros(8, 16, dtype=torch.bool)}
    pc.attach_masks(model, narrower)
    attached = pc.attached_masks(model)
    assert not attached["fc1.weight"].any() and attached["fc2.weight"].sum() == 32
    assert torch.all(model.fc1.weight == 0)
    pc.detach_masks(model)
    assert pc.attached_masks(model) == {}
    with torch.no_grad():
        model.fc2.weight.fill_(1.0)
    pc.enforce_masks(model)  # nothing attached: nothing changes
    assert torch.all(model.fc2.weight == 1.0)


def test_enforce_masks_zeroes_weights_set_by_hand():
    model = tiny_mlp()
    masks = half_masks(model)
    pc.attach_masks(model, masks)
    with torch.no_grad():
        model.out.weight.fill_(2.0)
    pc.enforce_masks(model)
    assert torch.equal(model.out.weight.detach(), 2.0 * masks["out.weight"].float())


def test_attach_masks_rejects_unknown_names_and_wrong_shapes_without_changing_the_model():
    model = tiny_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="no prunable weight for: fc9.weight"):
        pc.attach_masks(model, {"fc9.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match=r"mask for fc1.weight has shape \(16, 8\), the weight \(8, 16\)"):
        pc.attach_masks(model, {"fc1.weight": torch.ones(16, 8, dtype=torch.bool)})
    assert pc.attached_masks(model) == {}
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_attach_masks_converts_numeric_masks_to_bool():
    model = tiny_mlp()
    pc.attach_masks(model, {"out.weight": torch.ones(3, 8)})
    assert pc.attached_masks(model)["out.weight"].dtype == torch.bool


# ---- small helpers ----------------------------------------------------------------------------------------
def test_density_of_counts_kept_weights_over_all_tensors():
    masks = {"a": torch.tensor([True, False, False, False]), "b": torch.ones(2, 3, dtype=torch.bool)}
    assert density_of(masks) == pytest.approx(7 / 10)
    assert density_of({}) == 1.0
    kept = all_kept([("w", torch.zeros(2, 2))])
    assert kept["w"].dtype == torch.bool and kept["w"].all()


def test_shuffle_within_layers_keeps_counts_and_moves_weights():
    gen = torch.Generator().manual_seed(0)
    masks = {"a": torch.arange(200).view(10, 20) < 30, "b": torch.arange(50) < 5}
    original = {n: m.clone() for n, m in masks.items()}
    shuffled = shuffle_within_layers(masks, gen)
    for name in masks:
        assert shuffled[name].shape == masks[name].shape and shuffled[name].dtype == torch.bool
        assert int(shuffled[name].sum()) == int(masks[name].sum())
        assert not torch.equal(shuffled[name], masks[name])
        assert torch.equal(masks[name], original[name])  # the input is not modified
    again = shuffle_within_layers(masks, torch.Generator().manual_seed(0))
    assert all(torch.equal(again[n], shuffled[n]) for n in masks)


def test_both_selection_strategies_choose_the_same_weights():
    from pruning_core.engine.masks import select_top_k

    generator = torch.Generator().manual_seed(7)
    scores = {"a": torch.randint(0, 5, (6, 7), generator=generator).float(),
              "b": torch.randint(0, 5, (40,), generator=generator).float()}
    scores["b"][3] = float("nan")
    candidates = {n: torch.rand(s.shape, generator=generator) < 0.6 for n, s in scores.items()}
    for k in (0, 1, 9, 20, 1000):
        gathered = select_top_k(scores, k, candidates, gather_candidates=True)
        ranked = select_top_k(scores, k, candidates, gather_candidates=False)
        for name in scores:
            assert torch.equal(gathered[name], ranked[name]), (k, name)
            assert not (gathered[name] & ~candidates[name]).any()
        expected = min(k, sum(int(c.sum()) for c in candidates.values()))
        assert sum(int(m.sum()) for m in gathered.values()) == expected
