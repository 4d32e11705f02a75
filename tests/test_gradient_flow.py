"""Evci et al. 2022: the sparsity-aware initialisation and gradient flow along training."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import pruning_core as pc
from pruning_core.studies.gradient_flow import VARIANTS, split_holdout


@pytest.fixture(scope="module")
def digits():
    return pc.load_dataset("digits")


class TwoLayers(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(40, 6)


def uneven_masks(model: nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Every output unit keeps a different number of its inputs (at least one)."""
    masks = {}
    for name, _, weight in pc.prunable_weights(model):
        flat = weight.flatten(1)
        keep = torch.zeros_like(flat, dtype=torch.bool)
        for unit in range(flat.shape[0]):
            count = 1 + (unit * 7) % flat.shape[1]
            keep[unit, torch.randperm(flat.shape[1], generator=generator)[:count]] = True
        masks[name] = keep.view_as(weight)
    return masks


def test_sparse_init_gives_each_unit_the_variance_of_its_kept_fan_in():
    generator = torch.Generator().manual_seed(0)
    model = TwoLayers()
    masks = uneven_masks(model, generator)
    draws = 400
    sums = {name: torch.zeros(w.shape, dtype=torch.float64) for name, _, w in pc.prunable_weights(model)}
    for _ in range(draws):
        pc.sparse_init(model, masks, generator=generator)
        for name, _, weight in pc.prunable_weights(model):
            assert not weight[~masks[name]].any(), "pruned weights must stay exactly zero"
            sums[name] += weight.detach().double() ** 2
    for name, mask in masks.items():
        flat_mask = mask.flatten(1)
        fan_in = flat_mask.sum(1).double()
        mean_square = (sums[name].flatten(1) * flat_mask).sum(1) / (fan_in * draws)
        expected = 2.0 / fan_in
        # The mean of n squared normals has relative standard error sqrt(2 / n); allow 5 of them.
        tolerance = 5 * torch.sqrt(2.0 / (fan_in * draws))
        assert torch.all((mean_square / expected - 1).abs() < tolerance), name
    assert pc.attached_masks(model).keys() == masks.keys()


def test_sparse_init_uses_the_attached_masks_and_needs_some(digits):
    torch.manual_seed(0)
    model = pc.MODELS["mlp"](digits.input_shape, 10)
    with pytest.raises(ValueError, match="needs masks"):
        pc.sparse_init(model)
    result = pc.prune(model, "random", 0.9, input_shape=digits.input_shape)
    pc.sparse_init(model, scale=1.0)
    weight = model.fc2.weight.detach()
    mask = result.masks["fc2.weight"]
    assert not weight[~mask].any()
    fan_in = mask.sum(1).double()
    assert float(weight.double().pow(2).sum()) == pytest.approx(float((fan_in * (1.0 / fan_in)).sum()), rel=0.2)


def test_gradient_norm_measures_without_changing_the_model(digits):
    torch.manual_seed(0)
    model = pc.MODELS["conv"](digits.input_shape, 10, width=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = next(digits.batches("train", 64, shuffle=False))
    masks = {n: torch.zeros_like(w, dtype=torch.bool) for n, _, w in pc.prunable_weights(model)}
    assert pc.gradient_norm(model, x, y, masks) == 0.0        # everything masked: no gradient left
    norm = pc.gradient_norm(model, x, y)
    assert math.isfinite(norm) and norm > 0
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())   # BN statistics restored
    assert all(p.grad is None for p in model.parameters())


def test_holdout_is_kept_out_of_training(digits):
    rest, (x, y) = split_holdout(digits, 100, seed=0)
    assert len(rest.train_y) == len(digits.train_y) - 100 and len(y) == 100 and x.shape[1:] == digits.input_shape
    assert torch.equal(rest.test_y, digits.test_y)
    counts = torch.bincount(rest.train_y, minlength=10) + torch.bincount(y, minlength=10)
    assert torch.equal(counts, torch.bincount(digits.train_y, minlength=10))   # a split: nothing lost or repeated
    assert torch.equal(x, digits.normalize(digits.train_x[torch.randperm(len(digits.train_y),
                                           generator=torch.Generator().manual_seed(0))[:100]]))
    with pytest.raises(ValueError, match="holdout"):
        split_holdout(digits, len(digits.train_y))


def test_gradient_flow_records_a_finite_series_for_every_variant(digits):
    table = pc.gradient_flow("mlp", digits, 0.9, "random", epochs=1, eval_every=11, holdout=128, batch_size=64,
                             imp_options={"epochs": 1, "prune_fraction": 0.7})
    assert list(table["variant"].unique()) == list(VARIANTS)
    assert table["grad_norm"].map(math.isfinite).all() and (table["grad_norm"] > 0).all()
    steps_per_epoch = (len(digits.train_y) - 128) // 64
    for variant, rows in table.groupby("variant"):
        assert rows["step"].tolist() == [0, 11, steps_per_epoch], variant
        evals = rows.dropna(subset=["test_accuracy"])
        assert evals["epoch"].tolist() == [0.0, 1.0]
    density = table.groupby("variant")["density"].first()
    assert density["dense"] == 1.0
    assert all(density[v] == pytest.approx(0.1, abs=1e-4) for v in ("sparse", "sparse_init", "lottery"))


def test_sparsity_aware_init_restores_gradient_flow_at_initialisation(digits):
    """Without BatchNorm, a 90%-sparse MLP with the dense init passes almost no gradient (each layer's
    signal shrinks by its density); rescaling by the kept fan-in brings it back to the dense network's order."""
    table = pc.gradient_flow("mlp", digits, 0.9, "random", ("dense", "sparse", "sparse_init"), epochs=0)
    at_init = table.set_index("variant")["grad_norm"]
    assert at_init["sparse_init"] > 100 * at_init["sparse"]
    assert at_init["sparse_init"] > 0.1 * at_init["dense"]


def test_gradient_flow_checks_variants_and_stops_when_asked(digits):
    with pytest.raises(ValueError, match="unknown gradient-flow variant"):
        pc.gradient_flow("mlp", digits, variants=("dense", "lottery_ticket"))
    with pytest.raises(pc.Cancelled):
        pc.gradient_flow("mlp", digits, 0.9, variants=("dense",), epochs=1, should_stop=lambda: True)
